"""install.sh: idempotent, links its two commands onto PATH, and --uninstall restores every engine config it touched byte for byte."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="install.sh needs root")]

CONTAINERD = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
"""
DAEMON_JSON = '{\n  "log-level": "warn",\n  "runtimes": {"other": {"path": "/usr/bin/other"}}\n}\n'


def tree(root: Path) -> dict[str, str]:
    """Path -> sha256 (or link target) of every file under root."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_install(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DPDK_OCI_HOOK_PREFIX": str(tmp_path / "prefix"),
        "DPDK_OCI_HOOK_BIN_LINK": str(tmp_path / "bin" / "dpdk-oci-hook"),
        "ENGINES_ROOT": str(tmp_path / "root"),
        "ENGINES": "podman,docker,containerd",
    }
    return subprocess.run([str(REPO / "install.sh"), "--no-switch", *args], capture_output=True, text=True, env=env, timeout=900)


def test_install_twice_is_the_same_and_uninstall_restores(tmp_path: Path) -> None:
    """Two installs leave identical engine files; --uninstall gives back the originals exactly."""
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD)
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text(DAEMON_JSON)
    (root / "usr/share/containers/oci/hooks.d").mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    original = tree(root)

    first = run_install(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    after_first = tree(root)
    assert after_first != original
    hooks = sorted(p.name for p in (root / "usr/share/containers/oci/hooks.d").iterdir())
    assert hooks == ["dpdk-oci-hook-createruntime.json", "dpdk-oci-hook-poststop.json"]
    assert '"dpdk"' in (root / "etc/docker/daemon.json").read_text() and '"log-level": "warn"' in (root / "etc/docker/daemon.json").read_text()
    assert (tmp_path / "bin" / "dpdk-oci-hook").is_symlink()
    runtime_link = tmp_path / "bin" / "dpdk-oci-runtime"  # beside dpdk-oci-hook, as DPDK_OCI_HOOK_BIN_LINK puts it
    assert os.readlink(runtime_link) == str(tmp_path / "prefix/venv/bin/dpdk-oci-runtime")
    assert os.access(runtime_link, os.X_OK)
    assert "==> " in first.stdout  # progress a person can follow
    links = {p.name: os.readlink(p) for p in (tmp_path / "bin").iterdir()}

    second = run_install(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert tree(root) == after_first
    assert {p.name: os.readlink(p) for p in (tmp_path / "bin").iterdir()} == links

    gone = run_install(tmp_path, "--uninstall")
    assert gone.returncode == 0, gone.stderr[-3000:]
    assert tree(root) == original
    assert not (tmp_path / "prefix").exists() and not (tmp_path / "bin" / "dpdk-oci-hook").exists()
    assert not runtime_link.exists() and not runtime_link.is_symlink()


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run prints what it would do and writes nothing."""
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD)
    (tmp_path / "bin").mkdir()
    before = tree(tmp_path)
    proc = run_install(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "would" in proc.stdout
    assert f"would run: ln -sfn {tmp_path}/prefix/venv/bin/dpdk-oci-runtime {tmp_path}/bin/dpdk-oci-runtime" in proc.stdout
    assert tree(tmp_path) == before
