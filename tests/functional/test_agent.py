"""The resident agent runs a stage exactly as the hook does in-process, and is never required.

Real processes: the hook's entry (the Python hook, or the native client in front of it), an
agent on a private socket.  No switch is
needed: the stages here end in the annotation check or the fast path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook.entry import MAIN_SCRIPT

CONFIG = 'cpus { pool = "0" }\nstate_dir = "{state}"\nlog_file = ""\n'


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.hcl"
    config.write_text(CONFIG.replace("{state}", str(tmp_path / "state")))
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG": str(config), "DPDK_OCI_HOOK_CACHE_DIR": str(tmp_path / "cache"),
            "DPDK_OCI_HOOK_AGENT_SOCKET": str(tmp_path / "agent.sock")}


@pytest.fixture()
def agent(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-I", "-m", "hook", "agent"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bundle(tmp_path: Path, annotations: dict[str, str]) -> Path:
    path = tmp_path / "bundle"
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "annotations": annotations}))
    return path


@pytest.fixture(params=["python", "native"])
def entry(request: pytest.FixtureRequest) -> list[str]:
    """The hook's entry argv without the stage: the Python hook, or the native client in front of it."""
    python = [sys.executable, "-I", MAIN_SCRIPT]
    return python if request.param == "python" else [request.getfixturevalue("hook_client"), *python]


def stage(entry: list[str], env: dict[str, str], state: dict[str, object], name: str = "createRuntime") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*entry, name], input=json.dumps(state), env=env, capture_output=True, text=True, timeout=60, cwd="/")


def test_a_refusal_reads_the_same_through_the_agent(tmp_path: Path, env: dict[str, str], agent: subprocess.Popen[str], entry: list[str]) -> None:
    """Exit status and the one-line message are the agent child's, identical to in-process."""
    path = bundle(tmp_path, {"dpdk-oci-hook/cpus": "many"})
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": os.getpid(), "bundle": str(path)}
    through_agent = stage(entry, env, state)
    in_process = stage(entry, {k: v for k, v in env.items() if k != "DPDK_OCI_HOOK_AGENT_SOCKET"}, state)
    assert through_agent.returncode == in_process.returncode == 2
    assert agent.stdout is not None and agent.stdout.readline().startswith("stage createRuntime: exit 2 (child ")  # the agent ran it
    assert through_agent.stderr == in_process.stderr == "dpdk-oci-hook: annotation dpdk-oci-hook/cpus: 'many' is not a whole number\n"


def test_no_agent_means_in_process(tmp_path: Path, env: dict[str, str], entry: list[str]) -> None:
    """A socket path with nothing behind it (a stale file, or no file) is no reason to fail."""
    Path(env["DPDK_OCI_HOOK_AGENT_SOCKET"]).write_text("")
    path = bundle(tmp_path, {"dpdk-oci-hook/cpus": "many"})
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": os.getpid(), "bundle": str(path)}
    result = stage(entry, env, state)
    assert result.returncode == 2 and "is not a whole number" in result.stderr


def test_the_agent_takes_the_callers_environment_per_stage(tmp_path: Path, env: dict[str, str], agent: subprocess.Popen[str], entry: list[str]) -> None:
    """Each stage runs with its own caller's config: a broken config path is reported as such."""
    path = bundle(tmp_path, {"dpdk-oci-hook/cpus": "1"})
    state = {"ociVersion": "1.0.2", "id": "c2", "status": "creating", "pid": os.getpid(), "bundle": str(path)}
    result = stage(entry, {**env, "DPDK_OCI_HOOK_CONFIG": str(tmp_path / "missing.hcl")}, state)
    assert result.returncode == 3 and "missing.hcl" in result.stderr


def test_the_client_side_imports_no_lifecycle() -> None:
    """Not a timing target (the bench has those): a stage handed to the agent loads none of the hook's work."""
    probe = "import sys, hook.stage.run, hook.stage.agent_client; print(sorted(m for m in sys.modules if m.startswith('hook')))"
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "['hook', 'hook.constants', 'hook.stage', 'hook.stage.agent_client', 'hook.stage.run']"
