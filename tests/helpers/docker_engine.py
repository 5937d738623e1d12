"""A private Docker >= 24 engine for tests, from Debian's own packages, stopped by pid.

Debian 12's docker.io is 20.10, which drops ``--annotation``.  Debian 13 (trixie) ships 26.1,
which runs on Debian 12: its ``docker.io`` and ``docker-cli`` packages are fetched with
``apt-get download`` through a PRIVATE apt state (sources list, lists, cache, status all under
``<prefix>/apt``; the host's apt configuration and package database are not touched) and
unpacked with ``dpkg -x`` into ``/opt/dpdk-oci-hook-test/docker``.  An installed dockerd that
is already >= 24 (Debian 13 hosts) is used as is.

``dockerd`` runs with its own data root, exec root, pidfile, socket and daemon.json, no
iptables and no bridge, and starts its own containerd (the host's ``containerd`` binary)
under its exec root.  :meth:`DockerEngine.stop` stops dockerd by the pid it started, then
containerd by the pid in dockerd's containerd pidfile (after checking /proc cmdline), never
by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = Path(os.environ.get("DPDK_OCI_TEST_DOCKER_PREFIX", "/opt/dpdk-oci-hook-test/docker"))
SUITE = "trixie"
PACKAGES = ("docker.io", "docker-cli")
MIN_VERSION = (24, 0)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_TIMEOUT_S = 300


class DockerUnavailable(RuntimeError):
    """Docker >= 24 cannot be had on this host (no package archive, or it does not run)."""


def version_of(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    match = re.search(r"version (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def host_mirror() -> str:
    """The Debian archive the host's apt already uses (first ``.../debian`` URI), else deb.debian.org."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.suffix in ("", ".list", ".sources") and path.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                texts.append(path.read_text())
    for text in texts:
        for uri in re.findall(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class DockerBinaries:
    dockerd: str
    docker: str
    version: tuple[int, ...]


def _apt(apt_dir: Path, *args: str, cwd: Path | None = None) -> None:
    options = {
        "Dir::Etc::SourceList": apt_dir / "sources.list",
        "Dir::Etc::SourceParts": apt_dir / "sources.list.d",
        "Dir::Etc::Preferences": apt_dir / "preferences",
        "Dir::Etc::PreferencesParts": apt_dir / "preferences.d",
        "Dir::State::Lists": apt_dir / "lists",
        "Dir::State::Status": apt_dir / "status",
        "Dir::Cache": apt_dir / "cache",
        "Debug::NoLocking": "1",  # the private dirs are ours alone; never take the host's locks
        "APT::Sandbox::User": "root",
    }
    argv = ["apt-get", "-q"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    proc = subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise DockerUnavailable(f"apt-get {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")


def fetch(prefix: Path = PREFIX, suite: str = SUITE, mirror: str | None = None) -> DockerBinaries:
    """Docker >= 24 binaries: an installed one, a cached unpack under ``prefix``, or a fresh one."""
    installed = shutil.which("dockerd")
    client = shutil.which("docker")
    if installed and client and (version_of(installed) or (0,)) >= MIN_VERSION:
        return DockerBinaries(installed, client, version_of(installed) or (0,))
    dockerd, docker = prefix / "usr/sbin/dockerd", prefix / "usr/bin/docker"
    if dockerd.exists() and docker.exists() and (version_of(str(dockerd)) or (0,)) >= MIN_VERSION:
        return DockerBinaries(str(dockerd), str(docker), version_of(str(dockerd)) or (0,))
    if not shutil.which("apt-get") or not os.path.exists(KEYRING):
        raise DockerUnavailable("no apt-get or Debian archive keyring: cannot fetch docker.io")
    apt_dir = prefix / "apt"
    shutil.rmtree(apt_dir, ignore_errors=True)
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial", "debs"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror or host_mirror()} {suite} main\n")
    (apt_dir / "status").write_text("")
    _apt(apt_dir, "update")
    _apt(apt_dir, "download", *PACKAGES, cwd=apt_dir / "debs")
    staging = Path(tempfile.mkdtemp(prefix="unpack.", dir=prefix))
    try:
        for deb in sorted((apt_dir / "debs").glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=120)
        for sub in ("usr/sbin", "usr/bin"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        os.replace(staging / "usr/bin/docker", docker)
        os.replace(staging / "usr/sbin/dockerd", dockerd)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(apt_dir, ignore_errors=True)  # lists and debs: ~35 MB we do not need again
    version = version_of(str(dockerd))
    if version is None or version < MIN_VERSION:
        raise DockerUnavailable(f"{dockerd} does not run here or is older than 24 ({version})")
    return DockerBinaries(str(dockerd), str(docker), version)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def _stop_pid(pid: int, must_contain: str, grace_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL, the process ``pid`` if its command line still names ``must_contain``."""
    if not any(must_contain in part for part in _cmdline(pid)):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _cmdline(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class DockerEngine:
    """One private dockerd (and its containerd) with the given runtimes registered."""

    def __init__(self, binaries: DockerBinaries, runtimes: dict[str, str], env: dict[str, str] | None = None,
                 storage_driver: str = "vfs") -> None:
        self.binaries = binaries
        self.storage_driver = storage_driver  # overlay2 is much faster for image builds (vfs copies every layer)
        self.dir = Path(tempfile.mkdtemp(prefix="dkr", dir="/tmp"))  # short: unix socket paths
        self.sock = self.dir / "docker.sock"
        self.exec_root = self.dir / "x"
        self.data_root = self.dir / "data"
        self.pidfile = self.dir / "docker.pid"
        self.config = self.dir / "daemon.json"
        self.log = self.dir / "dockerd.log"
        self.config.write_text(json.dumps({"runtimes": {name: {"path": path} for name, path in runtimes.items()}}))
        self.env = {**os.environ, **(env or {}), "DOCKER_CONFIG": str(self.dir / "cli")}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> DockerEngine:
        argv = [
            self.binaries.dockerd,
            "--config-file", str(self.config),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            "-H", f"unix://{self.sock}",
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false",
            f"--storage-driver={self.storage_driver}",
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--userland-proxy=false",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.sock.exists() and self.docker("version", "--format", "{{.Server.Version}}", check=False).returncode == 0:
                return self
            time.sleep(0.3)
        self.stop()
        raise DockerUnavailable(f"dockerd did not answer within {timeout_s:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def docker(self, *args: str, check: bool = True, timeout: float = 120.0, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binaries.docker, "-H", f"unix://{self.sock}", *args],
            input=input_bytes.decode("latin-1") if input_bytes is not None else None,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def import_image(self, tarball: Path, ref: str) -> None:
        with open(tarball, "rb") as fh:
            proc = subprocess.run(
                [self.binaries.docker, "-H", f"unix://{self.sock}", "import", "-", ref],
                stdin=fh, capture_output=True, text=True, env=self.env, timeout=120, check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"docker import failed: {proc.stderr.strip()}")

    def stop(self) -> None:
        """Stop dockerd by the pid we started; then its containerd by pidfile; remove the directory."""
        containerd_pidfile = self.exec_root / "containerd" / "containerd.pid"
        containerd_pid = None
        with contextlib.suppress(OSError, ValueError):
            containerd_pid = int(containerd_pidfile.read_text().strip())
        if self.proc is not None and self.proc.poll() is None:
            _stop_pid(self.proc.pid, "dockerd")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if containerd_pid:
            _stop_pid(containerd_pid, "containerd")
        # containerd-shim processes of containers left behind (none in passing tests)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                cmd = _cmdline(int(entry.name))
                if cmd and "containerd-shim" in cmd[0] and any(str(self.exec_root) in part or str(self.dir) in part for part in cmd):
                    _stop_pid(int(entry.name), "containerd-shim", grace_s=5)
        _unmount_below(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def _unmount_below(top: Path) -> None:
    """Detach mounts dockerd left under ``top`` (netns files, shm) so the tree can be removed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    for point in sorted((p for p in points if p == str(top) or p.startswith(f"{top}/")), key=len, reverse=True):
        libc.umount2(os.fsencode(point), 2)  # MNT_DETACH
