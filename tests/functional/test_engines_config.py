"""Engine registration on real files under a temp root, checked by the engines' own parsers.

Nothing here touches the host's /etc/docker, /etc/containerd, /etc/crio or hooks.d: every
path is under ``tmp_path`` (``--root``).  containerd's own ``config dump`` checks that the
merged config.toml is what containerd will run with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hook.admin import engines
from hook.entry import entry_argv
from tests.helpers.engines_fixtures import HookInstall

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "templates" / "hooks.d"
VENV_PY = "/opt/dpdk-oci-hook/venv/bin/python3"
SHIM = "/opt/dpdk-oci-hook/venv/bin/dpdk-oci-runtime"
ALL = "podman,crio,docker,containerd"
DAEMON_JSON = '{\n    "log-level": "warn",\n    "runtimes": {\n        "other": {"path": "/usr/local/bin/other"}\n    },\n    "storage-driver": "overlay2"\n}\n'
CONTAINERD_TOML = """version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "example.invalid/pause:9"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.other]
      runtime_type = "io.containerd.runc.v2"
"""
CRIO_CONF = '[crio.runtime]\nhooks_dir = ["/etc/containers/oci/hooks.d"]\n'


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_engines(root: Path, *args: str, engines_list: str = ALL) -> subprocess.CompletedProcess[str]:
    """``python3 -m hook.admin.engines`` as install.sh runs it (from the checkout)."""
    return subprocess.run(
        [sys.executable, "-m", "hook.admin.engines", *args, "--root", str(root), "--engines", engines_list,
         "--python", VENV_PY, "--shim", SHIM, "--templates", str(TEMPLATES)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def populate(root: Path) -> None:
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text(DAEMON_JSON)
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_TOML)
    (root / "etc/crio/crio.conf.d").mkdir(parents=True)
    (root / "etc/crio/crio.conf").write_text(CRIO_CONF)
    (root / "etc/crio/crio.conf.d/10-site.conf").write_text("[crio.api]\nlisten = \"/run/crio/crio.sock\"\n")
    (root / "usr/share/containers/oci/hooks.d").mkdir(parents=True)
    (root / "usr/share/containers/oci/hooks.d/other-hook.json").write_text('{"version": "1.0.0"}\n')


def test_register_twice_then_unregister_gives_back_the_original_bytes(tmp_path: Path) -> None:
    """Install keeps every setting, install twice is a no-op, uninstall restores every byte."""
    populate(tmp_path)
    original = tree(tmp_path)

    first = run_engines(tmp_path, "register")
    assert first.returncode == 0, first.stdout + first.stderr
    installed = tree(tmp_path)
    daemon = json.loads((tmp_path / "etc/docker/daemon.json").read_text())
    assert daemon == {"log-level": "warn", "runtimes": {"other": {"path": "/usr/local/bin/other"}, "dpdk": {"path": SHIM}},
                      "storage-driver": "overlay2"}
    assert (tmp_path / "etc/docker/daemon.json.dpdk-oci-hook.bak").read_text() == DAEMON_JSON
    assert (tmp_path / "etc/containerd/config.toml").read_text().startswith(CONTAINERD_TOML)
    crio = (tmp_path / "etc/crio/crio.conf.d/99-dpdk-oci-hook.conf").read_text()
    assert '["/etc/containers/oci/hooks.d", "/usr/share/containers/oci/hooks.d"]' in crio
    for stage, name in engines.HOOK_FILES.items():
        hook = json.loads((tmp_path / "usr/share/containers/oci/hooks.d" / name).read_text())
        assert hook["hook"]["path"] == entry_argv(VENV_PY, stage)[0] and hook["stages"] == [stage]
    assert "Docker: wrote" in first.stdout and "original kept as" in first.stdout

    second = run_engines(tmp_path, "register")
    assert second.returncode == 0, second.stdout + second.stderr
    assert tree(tmp_path) == installed
    assert "wrote" not in second.stdout

    undo = run_engines(tmp_path, "unregister")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert tree(tmp_path) == original
    assert "restored" in undo.stdout


def test_register_on_a_bare_host_creates_files_and_unregister_removes_them(tmp_path: Path) -> None:
    """Files that did not exist are created, then removed again: nothing of ours is left."""
    result = run_engines(tmp_path, "register")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "etc/docker/daemon.json").read_text()) == {"runtimes": {"dpdk": {"path": SHIM}}}
    assert not (tmp_path / "etc/crio/crio.conf.d/99-dpdk-oci-hook.conf").exists()  # CRI-O's default dir is ours
    assert "CRI-O: reads /usr/share/containers/oci/hooks.d already" in result.stdout
    assert run_engines(tmp_path, "unregister").returncode == 0
    assert tree(tmp_path) == {}


def test_register_upgrades_hook_files_of_the_earlier_form(tmp_path: Path) -> None:
    """A hooks.d file of an earlier install (``-I -m hook STAGE``) is ours: rewritten, not refused."""
    hooks_d = tmp_path / "usr/share/containers/oci/hooks.d"
    hooks_d.mkdir(parents=True)
    for stage, name in engines.HOOK_FILES.items():
        old = {"version": "1.0.0", "hook": {"path": VENV_PY, "args": [VENV_PY, "-I", "-m", "hook", stage]},
               "when": {"annotations": {"^dpdk-oci-hook/.*$": ".*"}}, "stages": [stage]}
        (hooks_d / name).write_text(json.dumps(old))
    result = run_engines(tmp_path, "register", engines_list="podman")
    assert result.returncode == 0, result.stdout + result.stderr
    for stage, name in engines.HOOK_FILES.items():
        args = json.loads((hooks_d / name).read_text())["hook"]["args"]
        assert args[-3] == "-I" and args[-2].endswith("/hook/__main__.py") and args[-1] == stage, args


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    populate(tmp_path)
    original = tree(tmp_path)
    result = run_engines(tmp_path, "register", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would write" in result.stdout and '|     "dpdk": {' in result.stdout
    assert tree(tmp_path) == original


def test_invalid_daemon_json_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A daemon.json that does not parse is never written; the error says why."""
    (tmp_path / "etc/docker").mkdir(parents=True)
    broken = '{"log-level": "warn",}\n'
    (tmp_path / "etc/docker/daemon.json").write_text(broken)
    result = run_engines(tmp_path, "register", engines_list="docker")
    assert result.returncode == 1
    assert "daemon.json is not valid JSON" in result.stdout and "nothing was changed" in result.stdout
    assert (tmp_path / "etc/docker/daemon.json").read_text() == broken
    assert tree(tmp_path) == {"etc/docker/daemon.json": hashlib.sha256(broken.encode()).hexdigest()}


def test_invalid_containerd_and_crio_configs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text("version = 2\n[plugins\n")
    (tmp_path / "etc/crio").mkdir(parents=True)
    (tmp_path / "etc/crio/crio.conf").write_text("[crio.runtime\n")
    original = tree(tmp_path)
    result = run_engines(tmp_path, "register", engines_list="containerd,crio")
    assert result.returncode == 1
    assert result.stdout.count("not valid TOML") == 2
    assert tree(tmp_path) == original


def test_unregister_after_a_later_edit_removes_only_our_entry(tmp_path: Path) -> None:
    """When someone changed the file after install, uninstall takes out our key and keeps theirs."""
    populate(tmp_path)
    assert run_engines(tmp_path, "register", engines_list="docker,containerd").returncode == 0
    daemon_path = tmp_path / "etc/docker/daemon.json"
    daemon = json.loads(daemon_path.read_text())
    daemon["debug"] = True
    daemon_path.write_text(json.dumps(daemon))
    toml_path = tmp_path / "etc/containerd/config.toml"
    toml_path.write_text(toml_path.read_text() + '\n[debug]\n  level = "debug"\n')

    result = run_engines(tmp_path, "unregister", engines_list="docker,containerd")
    assert result.returncode == 0, result.stdout
    assert "changed since install" in result.stdout
    assert json.loads(daemon_path.read_text()) == {**json.loads(DAEMON_JSON), "debug": True}
    assert toml_path.read_text() == CONTAINERD_TOML + '\n[debug]\n  level = "debug"\n'


def test_someone_elses_dpdk_runtime_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "etc/docker").mkdir(parents=True)
    text = '{"runtimes": {"dpdk": {"path": "/usr/bin/vendor-dpdk"}}}'
    (tmp_path / "etc/docker/daemon.json").write_text(text)
    result = run_engines(tmp_path, "register", engines_list="docker")
    assert result.returncode == 1 and "not dpdk-oci-runtime" in result.stdout
    assert (tmp_path / "etc/docker/daemon.json").read_text() == text


def test_containerd_runs_with_the_merged_config(tmp_path: Path) -> None:
    """containerd's own parser sees runtime dpdk -> our wrapper, and the old settings kept.

    (An ``imports`` drop-in would not do: containerd 1.6 replaces the whole CRI section with
    the imported one, losing sandbox_image, the CNI dirs and the other runtimes.)
    """
    if not shutil.which("containerd"):
        pytest.skip("containerd is not installed")
    populate(tmp_path)
    config = tmp_path / "etc/containerd/config.toml"

    def effective() -> dict[str, Any]:
        dump = subprocess.run(["containerd", "--config", str(config), "config", "dump"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        cri: dict[str, Any] = tomllib.loads(dump)["plugins"]["io.containerd.grpc.v1.cri"]
        return cri

    before = effective()
    assert run_engines(tmp_path, "register", engines_list="containerd").returncode == 0
    after = effective()
    runtimes = after["containerd"].pop("runtimes")
    assert runtimes.pop("dpdk") == {
        **before["containerd"]["runtimes"]["other"],
        "runtime_type": "io.containerd.runc.v2",
        "pod_annotations": ["dpdk-oci-hook/*"],
        "container_annotations": ["dpdk-oci-hook/*"],
        "options": {"BinaryName": SHIM},
    }
    assert runtimes == before["containerd"].pop("runtimes")
    assert after == before  # every other CRI setting, e.g. sandbox_image and the CNI dirs, as it was
    assert after["sandbox_image"] == "example.invalid/pause:9"


def test_engines_sh_honours_dry_and_registers(tmp_path: Path, hook_install: HookInstall) -> None:
    """install.sh's functions: DRY=1 prints and changes nothing; DRY=0 registers; undo restores."""
    populate(tmp_path)
    original = tree(tmp_path)

    def source(function: str, dry: int) -> subprocess.CompletedProcess[str]:
        script = (
            'step() { printf "\\n==> %s\\n" "$*"; }; note() { printf "    %s\\n" "$*"; }; '
            f'. "{REPO_ROOT}/engines.sh"; {function}'
        )
        env = {**os.environ, "VENV": str(hook_install.venv), "DRY": str(dry), "SRC_DIR": str(REPO_ROOT),
               "CONF": "/etc/dpdk-oci-hook/config.hcl", "ENGINES_ROOT": str(tmp_path), "ENGINES": ALL}
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)

    dry = source("register_engines", 1)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "==> container engines" in dry.stdout and "would write" in dry.stdout
    assert tree(tmp_path) == original
    done = source("register_engines", 0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Docker: wrote" in done.stdout
    daemon = json.loads((tmp_path / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["dpdk"] == {"path": str(hook_install.venv / "bin" / "dpdk-oci-runtime")}
    undo = source("unregister_engines", 0)
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert tree(tmp_path) == original
