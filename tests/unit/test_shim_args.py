"""The runtime wrapper's pure parts: runc-style arguments, the bundle, hook injection."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hook import entry
from hook.constants import SANDBOX_MARKERS
from hook.entry import MAIN_SCRIPT
from hook.runtime import spec as spec_mod
from hook.runtime import wrapper as shim

PY = "/opt/example-prefix/venv/bin/python3"  # no native client beside it (see the test with one)


@pytest.mark.parametrize(
    ("argv", "options", "command", "rest"),
    [
        (["--version"], {}, None, []),
        ([], {}, None, []),
        (["state", "c1"], {}, "state", ["c1"]),
        (
            ["--root", "/run/r", "--log", "/b/log.json", "--log-format", "json", "create", "--bundle", "/b", "c1"],
            {"root": "/run/r", "log": "/b/log.json", "log-format": "json"},
            "create",
            ["--bundle", "/b", "c1"],
        ),
        (["--root=/run/r", "--debug", "--systemd-cgroup", "run", "-d", "c"], {"root": "/run/r"}, "run", ["-d", "c"]),
        (["-root", "/r", "-log-format=text", "delete", "--force", "c"], {"root": "/r", "log-format": "text"}, "delete", ["--force", "c"]),
        (["--cgroup-manager", "cgroupfs", "create", "c"], {"cgroup-manager": "cgroupfs"}, "create", ["c"]),
        (["--debug", "--", "kill", "c", "KILL"], {}, "kill", ["c", "KILL"]),
    ],
)
def test_parse_command(argv: list[str], options: dict[str, str], command: str | None, rest: list[str]) -> None:
    """Global options (with values) come before the command, in every form Go's flag parser takes."""
    assert shim.parse_command(argv) == (options, command, rest)


@pytest.mark.parametrize(
    ("args", "bundle"),
    [
        (["--bundle", "/b", "c1"], "/b"),
        (["-b", "/b", "c1"], "/b"),
        (["--bundle=/b/", "c1"], "/b"),
        (["-bundle", "rel", "c1"], "/cwd/rel"),
        (["--pid-file", "/p", "--console-socket", "/s", "c1"], "/cwd"),
        (["--pid-file", "--bundle", "c1"], "/cwd"),  # "--bundle" is the pid file's value here
        (["c1", "--bundle", "/late"], "/late"),
        (["--", "--bundle", "/x"], "/cwd"),
    ],
)
def test_bundle_dir(args: list[str], bundle: str) -> None:
    """``--bundle``/``-b`` in any form, relative to the working directory; else the working directory."""
    assert shim.bundle_dir(args, "/cwd") == bundle


def _spec(**extra: Any) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "annotations": {"dpdk-oci-hook/cpus": "1"}, **extra}


def test_is_ours() -> None:
    assert spec_mod.is_ours(_spec())
    assert not spec_mod.is_ours({"annotations": {"io.example/dpdk-oci-hook/cpus": "1"}})
    assert not spec_mod.is_ours({"annotations": None})
    assert not spec_mod.is_ours({})
    assert not spec_mod.is_ours([])
    for key in [k for k, _ in SANDBOX_MARKERS]:  # a pod's pause container carries the pod's annotations too
        assert not spec_mod.is_ours({"annotations": {"dpdk-oci-hook/cpus": "1", key: "sandbox"}})
        assert spec_mod.is_ours({"annotations": {"dpdk-oci-hook/cpus": "1", key: "container"}})


def test_inject_adds_create_runtime_and_poststop_once() -> None:
    """Our two hooks are appended after any others, with an explicit env and a timeout; twice is once."""
    other = {"path": "/usr/bin/other-hook"}
    spec = _spec(hooks={"createRuntime": [other]})
    env = {"DPDK_OCI_HOOK_CONFIG": "/etc/x.hcl", "HOME": "/root"}
    assert spec_mod.inject_hooks(spec, PY, env) == ["createRuntime", "poststop"]
    assert spec["hooks"]["createRuntime"][0] == other
    assert spec["hooks"]["createRuntime"][1] == {
        "path": PY,
        "args": [PY, "-I", MAIN_SCRIPT, "createRuntime"],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG=/etc/x.hcl"],
        "timeout": entry.HOOK_TIMEOUT_S,
    }
    assert spec["hooks"]["poststop"] == [entry.hook_entry("poststop", PY, env)]
    before = copy.deepcopy(spec)
    assert spec_mod.inject_hooks(spec, PY, env) == []
    assert spec == before


def test_inject_counts_a_hooks_d_prestart_or_create_runtime_as_present() -> None:
    """A setup hook of ours put in by hooks.d (or a hand-written prestart) is not doubled.

    Either registered form counts: the script path, or ``-m hook`` of earlier installs.
    """
    for stage in ("prestart", "createRuntime"):
        for args in (["python3", "-I", "/elsewhere/site-packages/hook/__main__.py", stage], ["python3", "-I", "-m", "hook", stage]):
            spec = _spec(hooks={stage: [{"path": PY, "args": args}]})
            assert spec_mod.inject_hooks(spec, PY, {}) == ["poststop"]
            assert "createRuntime" not in spec["hooks"] or stage == "createRuntime"


@pytest.mark.parametrize(
    "entry",
    [
        {"path": "/usr/bin/python3", "args": ["python3", "-I", MAIN_SCRIPT, "createRuntime"]},  # another interpreter
        {"path": PY, "args": ["python3", "-I", "-m", "other", "createRuntime"]},
        {"path": PY, "args": ["python3", "-I", "/srv/other/__main__.py", "createRuntime"]},
        {"path": PY, "args": ["python3", MAIN_SCRIPT, "createRuntime"]},  # not isolated: not the form we register
        {"path": PY, "args": ["python3", "-I", MAIN_SCRIPT, "poststop"]},  # another stage
        {"path": PY, "args": "python3 -I -m hook createRuntime"},
    ],
)
def test_inject_does_not_count_other_hooks(entry: dict[str, object]) -> None:
    spec = _spec(hooks={"createRuntime": [entry]})
    assert spec_mod.inject_hooks(spec, PY, {}) == ["createRuntime", "poststop"]


def test_inject_refuses_malformed_hooks() -> None:
    with pytest.raises(shim.WrapperError, match="not an object"):
        spec_mod.inject_hooks(_spec(hooks=[]), PY, {})
    with pytest.raises(shim.WrapperError, match="not a list"):
        spec_mod.inject_hooks(_spec(hooks={"poststop": {}}), PY, {})


def test_prepare_bundle_leaves_other_containers_untouched(tmp_path: Path) -> None:
    """A config without our prefix is not even parsed, let alone written."""
    config = tmp_path / "config.json"
    raw = json.dumps({"annotations": {"io.example/x": "1"}, "process": {"args": ["/bin/true"]}}).encode()
    config.write_bytes(raw)
    before = config.stat()
    assert shim.prepare_bundle(str(tmp_path), PY, {}) == "not-ours"
    assert config.read_bytes() == raw and config.stat().st_mtime_ns == before.st_mtime_ns
    assert shim.prepare_bundle(str(tmp_path / "missing"), PY, {}) == "no-config"


def test_prepare_bundle_rewrites_atomically_keeping_the_mode(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_spec()))
    config.chmod(0o600)
    assert shim.prepare_bundle(str(tmp_path), PY, {}) == "injected createRuntime,poststop"
    assert config.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temp file left
    assert shim.prepare_bundle(str(tmp_path), PY, {}) == "present"


def test_runtime_settings(tmp_path: Path) -> None:
    """Environment first, then the runtime file, then /usr/sbin/runc; relative paths are refused."""
    settings = tmp_path / "runtime.json"
    assert shim.runtime_settings({}, str(settings)) == ("/usr/sbin/runc", "")
    settings.write_text('{"runtime": "/usr/bin/crun", "debug_log": "/var/log/w.log"}')
    assert shim.runtime_settings({}, str(settings)) == ("/usr/bin/crun", "/var/log/w.log")
    assert shim.runtime_settings({"DPDK_OCI_RUNTIME": "/x/runc"}, str(settings)) == ("/x/runc", "/var/log/w.log")
    settings.write_text("{broken")
    with pytest.raises(shim.WrapperError, match="not valid JSON"):
        shim.runtime_settings({}, str(settings))
    with pytest.raises(shim.WrapperError, match="absolute"):
        shim.runtime_settings({"DPDK_OCI_RUNTIME": "runc"}, str(tmp_path / "none"))


def test_inject_puts_the_native_client_in_front_when_installed_and_knows_it_the_next_time(tmp_path: Path) -> None:
    python = str(tmp_path / "bin" / "python3")
    (tmp_path / "bin").mkdir()
    client = tmp_path / "bin" / entry.CLIENT_NAME
    client.write_text("")
    client.chmod(0o755)
    spec = _spec()
    assert spec_mod.inject_hooks(spec, python, {}) == ["createRuntime", "poststop"]
    assert spec["hooks"]["createRuntime"][0]["path"] == str(client)
    assert spec["hooks"]["createRuntime"][0]["args"] == [str(client), python, "-I", MAIN_SCRIPT, "createRuntime"]
    assert spec_mod.inject_hooks(spec, python, {}) == []  # ours, behind the client: present
    client.unlink()
    assert spec_mod.inject_hooks(spec, python, {}) == []  # the client's entry still runs this interpreter's hook
