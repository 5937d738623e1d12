"""The ``dpdk-oci-runtime`` wrapper in front of real runc: same answers, hooks only where asked.

Each test compares the wrapper with plain runc on the same bundle and a private runc root.
The wrapper runs from a throw-away venv (``hook_install``), exactly as installed, so the hook
interpreter it injects is a venv interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hook.entry import entry_argv, hook_stage
from tests.helpers.engines_fixtures import HookInstall
from tests.helpers.runc_util import RUNC, Bundle, Workspace, require_runc

TIMEOUT_S = 60


@pytest.fixture
def ws() -> Iterator[Workspace]:
    require_runc()
    workspace = Workspace()
    try:
        yield workspace
    finally:
        workspace.close()


def _env(hook_install: HookInstall, workdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DPDK_OCI_RUNTIME", "DPDK_OCI_RUNTIME_DEBUG_LOG", "DPDK_OCI_HOOK_CONFIG"):
        env.pop(name, None)
    env.update(DPDK_OCI_RUNTIME=str(RUNC), DPDK_OCI_RUNTIME_DEBUG_LOG=str(workdir / "shim.log"), **extra)
    return env


def _call(binary: str, bundle: Bundle, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--root", str(bundle.runc_root), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False,
    )


def _same(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """Exit code and output, with runc's log timestamps blanked."""
    return result.returncode, result.stdout, re.sub(r'time="[^"]*"', 'time=""', result.stderr)


def _debug_actions(workdir: Path) -> list[str]:
    path = workdir / "shim.log"
    if not path.exists():
        return []
    return [json.loads(line)["action"] for line in path.read_text().splitlines()]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ours(entries: list[dict[str, Any]], python: str) -> list[dict[str, Any]]:
    return [e for e in entries if hook_stage(e.get("args")) is not None and python in e["args"][:2] and e.get("path") == e["args"][0]]


def test_version_and_unknown_commands_pass_through(hook_install: HookInstall, ws: Workspace) -> None:
    """``--version``, ``--help`` and a bad command give runc's own output and exit code."""
    assert RUNC is not None
    env = _env(hook_install, ws.path)
    for args in (["--version"], ["--help"], ["no-such-command"], ["state"]):
        plain = subprocess.run([RUNC, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        wrapped = subprocess.run([hook_install.shim, *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)
        assert _same(wrapped) == _same(plain), args
    assert set(_debug_actions(ws.path)) == {"pass"}


def test_state_kill_delete_pass_through(hook_install: HookInstall, ws: Workspace) -> None:
    """state, kill and delete through the wrapper act on runc's container exactly as runc does."""
    assert RUNC is not None
    env = _env(hook_install, ws.path)
    bundle = ws.bundle()
    bundle.set_command("/usr/bin/sleep", "60")
    bundle.run_detached()
    plain = _call(RUNC, bundle, "state", bundle.container_id)
    wrapped = _call(hook_install.shim, bundle, "state", bundle.container_id, env=env)
    assert wrapped.returncode == plain.returncode == 0
    assert json.loads(wrapped.stdout) == json.loads(plain.stdout)
    assert json.loads(wrapped.stdout)["status"] == "running"

    assert _call(hook_install.shim, bundle, "kill", bundle.container_id, "KILL", env=env).returncode == 0
    deadline = time.monotonic() + 10
    while (bundle.state() or {}).get("status") != "stopped":
        assert time.monotonic() < deadline, bundle.state()
        time.sleep(0.05)
    deleted = _call(hook_install.shim, bundle, "delete", bundle.container_id, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert bundle.state() is None
    plain = _call(RUNC, bundle, "state", bundle.container_id)
    wrapped = _call(hook_install.shim, bundle, "state", bundle.container_id, env=env)
    assert plain.returncode != 0
    assert _same(wrapped) == _same(plain)
    assert set(_debug_actions(ws.path)) == {"pass"}


def test_container_without_our_annotations_runs_as_with_runc(hook_install: HookInstall, ws: Workspace) -> None:
    """Same exit code, stdout and stderr as plain runc, and config.json is not touched."""
    assert RUNC is not None
    env = _env(hook_install, ws.path)
    bundle = ws.bundle()
    bundle.set_shell("echo out; echo err >&2; exit 3")
    cfg = bundle.config
    cfg["annotations"] = {"io.example/dpdk-oci-hook": "not ours", "org.example.x": "1"}
    bundle.config = cfg
    config = bundle.path / "config.json"
    before = (_digest(config), config.stat().st_mtime_ns)

    plain = _call(RUNC, bundle, "run", "--bundle", str(bundle.path), bundle.container_id)
    bundle.delete()
    wrapped = _call(hook_install.shim, bundle, "run", "--bundle", str(bundle.path), bundle.container_id, env=env)
    bundle.delete()
    assert (plain.returncode, plain.stdout, plain.stderr) == (3, "out\n", "err\n")
    assert _same(wrapped) == _same(plain)
    assert (_digest(config), config.stat().st_mtime_ns) == before
    assert _debug_actions(ws.path) == ["not-ours"]


def test_annotated_container_gets_our_hooks_once_and_runc_runs_them(hook_install: HookInstall, ws: Workspace) -> None:
    """The wrapper adds createRuntime + poststop once; runc then runs the real hook with our env.

    The hook is pointed at a config file that does not exist, so its createRuntime stage fails
    with the hook's own message, which runc hands back: proof that the hook ran, from the venv.
    """
    env = _env(hook_install, ws.path, DPDK_OCI_HOOK_CONFIG=str(ws.path / "absent.hcl"))
    bundle = ws.bundle()
    bundle.set_command("/usr/bin/true")
    cfg = bundle.config
    cfg["annotations"] = {"dpdk-oci-hook/cpus": "1", "org.example.x": "1"}
    cfg["hooks"] = {"poststop": [{"path": "/usr/bin/true", "args": ["true"]}]}
    bundle.config = cfg

    first = _call(hook_install.shim, bundle, "create", "--bundle", str(bundle.path), bundle.container_id, env=env)
    bundle.delete()
    assert first.returncode != 0
    assert f"dpdk-oci-hook: config {ws.path / 'absent.hcl'}" in first.stderr, first.stderr

    hooks = bundle.config["hooks"]
    assert len(_ours(hooks["createRuntime"], hook_install.python)) == 1
    assert hooks["poststop"][0] == {"path": "/usr/bin/true", "args": ["true"]}  # theirs first, kept
    assert len(_ours(hooks["poststop"], hook_install.python)) == 1
    entry = _ours(hooks["createRuntime"], hook_install.python)[0]
    assert entry["args"] == entry_argv(hook_install.python, "createRuntime")  # the native client in front when installed
    assert entry["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"DPDK_OCI_HOOK_CONFIG={ws.path / 'absent.hcl'}"]
    assert entry["timeout"] > 0
    assert "createContainer" not in hooks and "prestart" not in hooks

    bundle.container_id = f"dpdkhook-test-{uuid.uuid4().hex[:12]}"
    again = _call(hook_install.shim, bundle, "run", "--bundle", str(bundle.path), bundle.container_id, env=env)
    bundle.delete()
    assert again.returncode != 0 and "dpdk-oci-hook: config" in again.stderr
    assert bundle.config["hooks"] == hooks  # nothing added the second time
    assert _debug_actions(ws.path) == ["injected createRuntime,poststop", "present"]


def test_wrapper_failure_reaches_runcs_log_and_runc_is_not_run(hook_install: HookInstall, ws: Workspace) -> None:
    """An annotated config the wrapper cannot fix fails the create, in runc's --log format."""
    env = _env(hook_install, ws.path)
    bundle = ws.bundle()
    cfg = bundle.config
    cfg["annotations"] = {"dpdk-oci-hook/cpus": "1"}
    cfg["hooks"] = ["not", "an", "object"]
    bundle.config = cfg
    log = ws.path / "log.json"
    result = subprocess.run(
        [hook_install.shim, "--root", str(bundle.runc_root), "--log", str(log), "--log-format", "json",
         "create", "--bundle", str(bundle.path), bundle.container_id],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False,
    )
    assert result.returncode == 1
    assert "dpdk-oci-runtime: config.json: 'hooks' is not an object" in result.stderr
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["level"] == "error" and "'hooks' is not an object" in record["msg"]
    assert bundle.state() is None
    assert _debug_actions(ws.path) == ["error"]


def test_wrapper_imports_only_os_and_sys(hook_install: HookInstall) -> None:
    """The wrapper's import costs a few small modules of ours: no json, typing or hook core on import."""
    probe = "import sys; before = set(sys.modules); import hook.runtime.wrapper; print(' '.join(sorted(set(sys.modules) - before)))"
    out = subprocess.run([hook_install.python, "-I", "-c", probe], capture_output=True, text=True, timeout=TIMEOUT_S, check=True).stdout
    small = {"hook", "hook.constants", "hook.entry", "hook.errors", "hook.host", "hook.host.fsutil", "hook.runtime", "hook.runtime.spec",
             "hook.runtime.wrapper", "__future__"}
    assert set(out.split()) <= small, out


def test_wrapper_overhead_on_a_pass_through_call(hook_install: HookInstall, ws: Workspace) -> None:
    """Report what the wrapper adds to a runc call (interpreter start-up dominates)."""
    assert RUNC is not None
    env = _env(hook_install, ws.path)
    env.pop("DPDK_OCI_RUNTIME_DEBUG_LOG")

    def median_ms(argv: list[str]) -> float:
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S, env=env, check=True)
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    plain, wrapped = median_ms([RUNC, "--version"]), median_ms([hook_install.shim, "--version"])
    print(f"\nrunc --version: {plain:.1f} ms; through dpdk-oci-runtime: {wrapped:.1f} ms (+{wrapped - plain:.1f} ms)")
    assert wrapped - plain < 2000  # a sanity bound only: shared CPUs make tight bounds flaky
