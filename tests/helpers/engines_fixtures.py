"""Fixtures for the engine tests: an installed-like hook, a busybox image, private engines.

Load them from conftest.py with ``pytest_plugins = ["tests.helpers.engines_fixtures"]``.

- ``hook_install``: a throw-away virtual environment that sees this checkout (a ``.pth``
  file) and holds a ``dpdk-oci-runtime`` launcher written the way pip writes console
  scripts, so the wrapper's ``sys.executable`` -- the hook interpreter it injects -- is a
  venv interpreter, exactly as after install.sh.
- ``busybox_rootfs``: a rootfs directory and tarball of the static busybox (no registry).
- ``docker_engine``: Docker >= 24 (see tests/docker_engine.py) with runtime ``dpdk``.
- ``containerd_engine``: a private containerd (own root, state, socket; CRI disabled).
- ``podman_cmd``: podman argv prefix with private storage, runroot, tmpdir and no events.

Everything lives in temp directories and is removed; daemons are stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/ -> the checkout
BUSYBOX_APPLETS = ("sh", "true", "false", "echo", "cat", "env", "sleep", "ls", "id")
PODMAN_ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")  # no CAP_SYS_RESOURCE here


@dataclass(frozen=True)
class HookInstall:
    """A venv whose interpreter runs the hook of this checkout, and its wrapper."""

    venv: Path
    python: str
    shim: str
    templates: Path


def make_hook_install(top: Path) -> HookInstall:
    venv = top / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python3"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    Path(site, "dpdk_oci_hook_checkout.pth").write_text(f"{REPO_ROOT}\n")
    shim = venv / "bin" / "dpdk-oci-runtime"
    shim.write_text(f"#!{python}\nimport sys\nfrom hook.runtime.wrapper import main\nsys.exit(main())\n")
    shim.chmod(0o755)
    return HookInstall(venv, str(python), str(shim), REPO_ROOT / "templates" / "hooks.d")


@pytest.fixture(scope="session")
def hook_install() -> Iterator[HookInstall]:
    top = Path(tempfile.mkdtemp(prefix="dpdkhook-venv-"))
    try:
        yield make_hook_install(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def busybox_path() -> str | None:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            out = subprocess.run(["file", "-L", path], capture_output=True, text=True, check=False).stdout if shutil.which("file") else "static"
            if "static" in out:
                return path
    return None


@dataclass(frozen=True)
class Rootfs:
    dir: Path
    tarball: Path


@pytest.fixture(scope="session")
def busybox_rootfs() -> Iterator[Rootfs]:
    busybox = busybox_path()
    if busybox is None:
        pytest.skip("no static busybox (apt-get install busybox-static)")
    top = Path(tempfile.mkdtemp(prefix="dpdkhook-rootfs-"))
    root = top / "rootfs"
    for sub in ("bin", "dev", "proc", "sys", "etc", "tmp", "run"):
        (root / sub).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    tarball = top / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    try:
        yield Rootfs(root, tarball)
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- podman ------------------------------------------------------------------------------


@dataclass
class Podman:
    top: Path
    base: list[str]

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """podman with private storage and its own hooks dir (``<top>/hooks.d``), runc, cgroupfs."""
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("runc"):
        pytest.skip("needs root, podman and runc")
    top = Path(tempfile.mkdtemp(prefix="pdm", dir="/tmp"))
    (top / "hooks.d").mkdir()
    base = [
        "podman",
        "--root", str(top / "storage"),
        "--runroot", str(top / "run"),
        "--tmpdir", str(top / "libpod"),
        "--storage-driver", "vfs",
        "--runtime", "runc",  # crun fails on this host's hybrid cgroups
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "none",
        "--hooks-dir", str(top / "hooks.d"),
    ]
    instance = Podman(top, base)
    try:
        yield instance
    finally:
        instance.run("rm", "--all", "--force", timeout=60)
        instance.run("rmi", "--all", "--force", timeout=60)
        subprocess.run(["umount", "-R", "-l", str(top / "storage")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", "-l", str(top / "run")], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


# --- docker ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_binaries() -> object:
    from tests.helpers.docker_engine import DockerUnavailable, fetch

    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    for binary in ("containerd", "containerd-shim-runc-v2", "runc"):
        if not shutil.which(binary):
            pytest.skip(f"{binary} is not installed (dockerd needs it)")
    try:
        return fetch()
    except DockerUnavailable as exc:
        pytest.skip(f"Docker >= 24 is not available: {exc}")


@pytest.fixture(scope="session")
def docker_engine(docker_binaries: object, ovs: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A private Docker >= 24 engine (overlay2) for image builds, with runtime ``dpdk`` wired to a
    hook config (``.hook_env``) on the session's private OVS-DPDK; stopped at session end."""
    from tests.helpers.docker_engine import DockerEngine, DockerUnavailable
    from tests.helpers.hook_env import make_env

    hook_env = make_env(tmp_path_factory.mktemp("imghook"), ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-img")
    shim = os.path.join(os.path.dirname(sys.executable), "dpdk-oci-runtime")
    engine = DockerEngine(docker_binaries, {"dpdk": shim}, env={"DPDK_OCI_HOOK_CONFIG": hook_env.config_path},  # type: ignore[arg-type]
                          storage_driver="overlay2")
    try:
        engine.start()
    except DockerUnavailable as exc:
        pytest.skip(f"Docker >= 24 could not start: {exc}")
    engine.socket = engine.sock  # type: ignore[attr-defined]
    engine.hook_env = hook_env  # type: ignore[attr-defined]
    try:
        yield engine
    finally:
        engine.stop()


# --- containerd --------------------------------------------------------------------------


@dataclass
class Containerd:
    dir: Path
    address: str
    proc: subprocess.Popen[bytes]
    namespace: str = "dpdkhooktest"

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", self.address, "--namespace", self.namespace, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def private_containerd(env: dict[str, str] | None = None) -> Iterator[Containerd]:
    """A containerd with its own root, state and socket; stopped by its pid."""
    top = Path(tempfile.mkdtemp(prefix="ctd", dir="/tmp"))
    address = str(top / "c.sock")
    config = top / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{top / "root"}"\n'
        f'state = "{top / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
        f'[debug]\n  address = "{address}.debug"\n'
    )
    log = open(top / "containerd.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})}, start_new_session=True,
    )
    instance = Containerd(top, address, proc)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("containerd did not start:\n" + (top / "containerd.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield instance
    finally:
        for line in instance.ctr("tasks", "ls", "-q").stdout.split():
            instance.ctr("tasks", "delete", "--force", line)
        for line in instance.ctr("containers", "ls", "-q").stdout.split():
            instance.ctr("containers", "rm", line)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        subprocess.run(["umount", "-R", "-l", str(top / "root")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", "-l", str(top / "state")], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


def require_ctr() -> None:
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    for binary in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        if not shutil.which(binary):
            pytest.skip(f"{binary} is not installed")
