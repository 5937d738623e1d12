"""How runtimes start the hook: the registered argv, recognising ours, and ``oci-hooks``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hook.entry import CLIENT_NAME, MAIN_SCRIPT, entry_argv, hook_entry, hook_stage, stage_argv

ROOT = Path(__file__).resolve().parents[2]


def test_stage_argv_runs_the_package_main_isolated() -> None:
    assert stage_argv("/venv/bin/python3", "poststop") == ["/venv/bin/python3", "-I", MAIN_SCRIPT, "poststop"]
    assert os.path.isfile(MAIN_SCRIPT) and Path(MAIN_SCRIPT).parent.name == "hook"


@pytest.mark.parametrize(
    ("args", "stage"),
    [
        (["/v/bin/python3", "-I", MAIN_SCRIPT, "createRuntime"], "createRuntime"),
        (["python3", "-I", "/opt/x/lib/python3.13/site-packages/hook/__main__.py", "poststop"], "poststop"),
        (["python3", "-I", "-m", "hook", "prestart"], "prestart"),  # the earlier form
        (["python3", MAIN_SCRIPT, "createRuntime"], None),  # not isolated
        (["python3", "-I", "-m", "hook.admin.engines", "createRuntime"], None),
        (["python3", "-I", "/srv/myhook/__main__.py", "createRuntime"], None),
        (["python3", "-I", "/srv/xhook/__main__.py", "createRuntime"], None),
        (["python3", "-I", MAIN_SCRIPT], None),
        (["python3", "-I", MAIN_SCRIPT, "createRuntime", "extra"], None),
        (["python3", "-I", 7, "createRuntime"], None),
        ("python3 -I -m hook createRuntime", None),
        (None, None),
        (["/v/bin/dpdk-oci-hook-client", "/v/bin/python3", "-I", MAIN_SCRIPT, "poststop"], "poststop"),  # behind the native client
        (["/v/bin/dpdk-oci-hook-client", "/v/bin/python3", "-I", "/srv/myhook/__main__.py", "poststop"], None),
        (["/v/bin/other-client", "/v/bin/python3", "-I", MAIN_SCRIPT, "poststop"], None),
    ],
)
def test_hook_stage_recognises_both_registered_forms_only(args: object, stage: str | None) -> None:
    assert hook_stage(args) == stage


def test_the_script_form_runs_a_stage_with_the_hook_off_sys_path_zero(tmp_path: Path) -> None:
    """``-I`` keeps the script's own directory (hook/, with modules like config.py) off sys.path."""
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "bundle": str(tmp_path), "annotations": {"org.example/a": "1"}})
    proc = subprocess.run([*stage_argv(sys.executable, "createRuntime")], input=state, capture_output=True, text=True, timeout=60,
                          check=False, cwd="/")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    probe = subprocess.run([sys.executable, "-I", "-c", "import sys; print(sys.flags.safe_path)"], capture_output=True, text=True,
                           timeout=60, check=True)
    assert probe.stdout.strip() == "True"


def test_oci_hooks_prints_entries_that_run_this_install(tmp_path: Path) -> None:
    config = tmp_path / "c.hcl"
    proc = subprocess.run([sys.executable, "-I", "-m", "hook", "--config", str(config), "oci-hooks"], capture_output=True, text=True,
                          timeout=60, check=True, cwd=ROOT)
    hooks = json.loads(proc.stdout)["hooks"]
    assert sorted(hooks) == ["createRuntime", "poststop"]
    for stage, entries in hooks.items():
        (entry,) = entries
        # the script is the installed package's (the subprocess runs it); the rest is this interpreter's entry
        assert entry["args"][:-2] == entry_argv(sys.executable, stage)[:-2] and entry["path"] == entry["args"][0]
        assert hook_stage(entry["args"]) == stage
        assert f"DPDK_OCI_HOOK_CONFIG={config}" in entry["env"] and entry["timeout"] > 0


def test_entries_run_the_native_client_only_when_it_is_installed_beside_the_interpreter(tmp_path: Path) -> None:
    python = str(tmp_path / "bin" / "python3")
    (tmp_path / "bin").mkdir()
    assert hook_entry("poststop", python, {})["args"] == [python, "-I", MAIN_SCRIPT, "poststop"]
    client = tmp_path / "bin" / CLIENT_NAME
    client.write_text("")
    assert entry_argv(python, "poststop") == [python, "-I", MAIN_SCRIPT, "poststop"]  # not executable: not used
    client.chmod(0o755)
    entry = hook_entry("poststop", python, {"DPDK_OCI_HOOK_CONFIG": "/etc/x.hcl"})
    assert entry["path"] == str(client) and entry["args"] == [str(client), python, "-I", MAIN_SCRIPT, "poststop"]
    assert hook_stage(entry["args"]) == "poststop"


def test_the_native_client_speaks_the_python_constants() -> None:
    """The C client hard-codes what it shares with the Python side: the key prefix, the agent's
    socket and environment, the size limits."""
    from hook.constants import PREFIX
    from hook.stage import agent_client

    source = (ROOT / "hook" / "stage" / "hook_client.c").read_text()
    assert f'#define PREFIX_KEY "\\"{PREFIX}"' in source
    assert f'#define SOCKET_ENV "{agent_client.SOCKET_ENV}"' in source
    assert f'#define DEFAULT_SOCKET "{agent_client.DEFAULT_SOCKET}"' in source
    assert "#define MAX_REPLY (1 << 20)" in source and agent_client.MAX_REPLY == 1 << 20
    assert "#define MAX_STATE ((1 << 20) + 1)" in source
    assert f"#define WAIT_S {int(agent_client.WAIT_S)}" in source
    listed = source.split("PASS_ENV[] = {", 1)[1].split("NULL", 1)[0]
    assert [name.strip().strip('"') for name in listed.split(",") if name.strip()] == list(agent_client.PASS_ENV)
