"""How runtimes start the hook: the registered argv, recognising ours, and ``oci-hooks``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hook.entry import MAIN_SCRIPT, hook_stage, stage_argv

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
        assert entry["path"] == sys.executable and hook_stage(entry["args"]) == stage
        assert f"DPDK_OCI_HOOK_CONFIG={config}" in entry["env"] and entry["timeout"] > 0
