"""Throw-away runc containers for integration tests, built without any image registry.

A bundle's rootfs is an empty directory with the merged-/usr symlinks (``bin -> usr/bin``
...) and a read-only bind of the host's ``/usr``, so containers run host binaries.  Every
container lives under a private ``runc --root`` so tests never see or touch anyone else's.
A prestart hook, written into the bundle as a small Python script, calls
``hook.host.mounts.apply_mounts`` with the mounts listed in ``hook-mounts.json`` and records what
happened (and the container's mountinfo, as seen before pivot_root) in ``hook-result.json``.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from hook.model import Mount

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNC = shutil.which("runc")
HOST_PYTHON = "/usr/bin/python3"
RUN_TIMEOUT_S = 30

HOOK_SCRIPT = """\
from __future__ import annotations

import json, os, stat, sys
from typing import Any

sys.path.insert(0, {repo!r})
from hook.errors import MountError
from hook.model import Mount
from hook.host.mounts import apply_mounts, remove_mounts

here = os.path.dirname(os.path.abspath(__file__))
state = json.load(sys.stdin)
with open(os.path.join(state["bundle"], "config.json")) as f:
    root = json.load(f)["root"]["path"]
rootfs = root if os.path.isabs(root) else os.path.join(state["bundle"], root)
with open(os.path.join(here, "hook-mounts.json")) as f:
    spec = json.load(f)
ns = os.stat("/proc/%d/ns/mnt" % state["pid"])
result = {{"rootfs": rootfs, "pid": state["pid"], "mnt_ns": [ns.st_dev, ns.st_ino]}}
result["watch_before"] = {{w: snapshot(w) for w in spec["watch"]}}
try:
    apply_mounts(state["pid"], rootfs, [Mount(**m) for m in spec["mounts"]])
    result["ok"] = True
    if spec["remove_after"]:
        remove_mounts(state["pid"], rootfs, spec["remove_after"])
except MountError as exc:
    result.update(ok=False, error=str(exc), fields=exc.fields)
result["watch_after"] = {{w: snapshot(w) for w in spec["watch"]}}
with open("/proc/%d/mountinfo" % state["pid"]) as f:
    result["mountinfo"] = f.read()
with open(os.path.join(here, "hook-result.json"), "w") as f:
    json.dump(result, f)
sys.exit(0 if result["ok"] or not spec["fail_on_error"] else 1)
"""


def require_runc() -> None:
    """Skip the calling test unless it can run real containers."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run runc containers and mount")
    if RUNC is None:
        pytest.skip("runc is not installed")
    if not os.path.exists(HOST_PYTHON):
        pytest.skip(f"{HOST_PYTHON} (the hook interpreter) is missing")


def unescape(field: str) -> str:
    """A mountinfo path field with its octal escapes (``\\040`` ...) decoded."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_of(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, fs type) of every line of a mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and right:
            found.append((unescape(fields[4]), right.split()[0]))
    return found


def host_mounts() -> list[tuple[str, str]]:
    with open("/proc/self/mountinfo") as f:
        return mounts_of(f.read())


def under(path: str, top: str | os.PathLike[str]) -> bool:
    top = str(top).rstrip("/")
    return path == top or path.startswith(top + "/")


def processes_in_mnt_ns(ns: list[int]) -> list[int]:
    """Pids whose mount namespace is ``ns`` ([st_dev, st_ino] of its /proc/PID/ns/mnt)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/mnt")
            except OSError:
                continue
            if [st.st_dev, st.st_ino] == ns:
                found.append(int(entry))
    return found


def hugepages() -> tuple[int, int]:
    """(HugePages_Free, HugePages_Rsvd) of the default page size."""
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("HugePages_Free", "HugePages_Rsvd"):
                values[key] = int(rest.split()[0])
    return values["HugePages_Free"], values["HugePages_Rsvd"]


def _lazy_umount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(path), 2)  # MNT_DETACH


def remove_tree(top: Path) -> list[str]:
    """Delete ``top``; first detach any mount found below it (a leak) and return those."""
    leaked = [mp for mp, _ in host_mounts() if under(mp, top)]
    for mp in sorted(leaked, key=len, reverse=True):
        _lazy_umount(mp)  # never let rmtree walk into a leaked bind of a host directory
    shutil.rmtree(top, ignore_errors=True)
    return leaked


def snapshot(top: str) -> dict[str, list[Any]]:
    """Everything about a directory tree that a stray mkdir, create or mount would change.

    Also pasted into the hook script (it must only need ``os`` and ``stat``).
    """

    def entry(path: str) -> list[Any]:
        st = os.lstat(path)
        found: list[Any] = [st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink]
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                found.append(f.read().hex())
        elif stat.S_ISLNK(st.st_mode):
            found.append(os.readlink(path))
        return found

    snap = {".": entry(top)}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            snap[os.path.relpath(path, top)] = entry(path)
    return snap


def _hook_source() -> str:
    head, _, tail = HOOK_SCRIPT.format(repo=str(REPO_ROOT)).partition("here = ")
    return head + inspect.getsource(snapshot) + "\n\nhere = " + tail


class Bundle:
    """One OCI bundle and the container run from it, under a private runc root."""

    def __init__(self, workdir: Path, name: str = "bundle") -> None:
        assert RUNC is not None
        self.path = workdir / name
        self.rootfs = self.path / "rootfs"
        self.runc_root = workdir / "runc-root"
        self.container_id = f"dpdkhook-test-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        self.runc_root.mkdir(exist_ok=True)
        self.rootfs.mkdir()
        (self.rootfs / "usr").mkdir()
        for link in ("bin", "lib", "lib64", "sbin"):
            (self.rootfs / link).symlink_to(f"usr/{link}")
        subprocess.run([RUNC, "spec", "--bundle", str(self.path)], check=True, timeout=RUN_TIMEOUT_S)
        cfg = self.config
        cfg["process"]["terminal"] = False
        cfg["root"]["readonly"] = False
        cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
        self.config = cfg

    @property
    def config(self) -> dict[str, Any]:
        with open(self.path / "config.json") as f:
            cfg: dict[str, Any] = json.load(f)
        return cfg

    @config.setter
    def config(self, cfg: dict[str, Any]) -> None:
        with open(self.path / "config.json", "w") as f:
            json.dump(cfg, f, indent=1)

    def set_command(self, *args: str) -> None:
        cfg = self.config
        cfg["process"]["args"] = list(args)
        self.config = cfg

    def set_shell(self, script: str) -> None:
        self.set_command("/usr/bin/sh", "-c", script)

    def drop_mount(self, destination: str) -> None:
        cfg = self.config
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != destination]
        self.config = cfg

    def set_hook(self, mounts: list[Mount], fail_on_error: bool = True, watch: tuple[Path, ...] = (), remove_after: tuple[str, ...] = ()) -> None:
        """Make the prestart hook apply ``mounts``; a refusal fails the start if ``fail_on_error``.

        The hook snapshots each ``watch`` directory right before and after ``apply_mounts``,
        and then calls ``remove_mounts`` on ``remove_after`` (as a prestart rollback would).
        """
        script = self.path / "prestart-hook.py"
        script.write_text(_hook_source())
        spec = {"mounts": [asdict(m) for m in mounts], "fail_on_error": fail_on_error, "watch": [str(w) for w in watch], "remove_after": list(remove_after)}
        (self.path / "hook-mounts.json").write_text(json.dumps(spec))
        cfg = self.config
        cfg.setdefault("hooks", {})["prestart"] = [{"path": HOST_PYTHON, "args": ["python3", "-I", str(script)], "timeout": 20}]
        self.config = cfg

    def hook_result(self) -> dict[str, Any]:
        with open(self.path / "hook-result.json") as f:
            result: dict[str, Any] = json.load(f)
        return result

    def _runc(self, *args: str) -> list[str]:
        assert RUNC is not None
        return [RUNC, "--root", str(self.runc_root), *args]

    def run(self) -> subprocess.CompletedProcess[str]:
        """Run the container in the foreground; its output is captured."""
        return subprocess.run(
            self._runc("run", "--bundle", str(self.path), self.container_id),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )

    def run_detached(self) -> int:
        """Start the container in the background; return its init pid."""
        # The container inherits runc's stdio: files, not pipes, or reading them would wait
        # for the container to exit.
        with open(self.path / "runc-stderr", "w") as err:
            subprocess.run(
                self._runc("run", "--detach", "--bundle", str(self.path), self.container_id),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                check=False,
                timeout=RUN_TIMEOUT_S,
            )
        state = self.state()
        assert state is not None and state["status"] == "running", (self.path / "runc-stderr").read_text()
        return int(state["pid"])

    def state(self) -> dict[str, Any] | None:
        proc = subprocess.run(self._runc("state", self.container_id), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if proc.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(proc.stdout)
        return state

    def delete(self) -> None:
        """Remove the container whatever its state (no-op if runc already did)."""
        subprocess.run(self._runc("delete", "--force", self.container_id), capture_output=True, timeout=RUN_TIMEOUT_S)


class Workspace:
    """A temp directory holding bundles and host-side fixtures; removes them all on close."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dpdkhook-mounts-"))
        self.bundles: list[Bundle] = []
        self.extra_dirs: list[Path] = []

    def bundle(self, name: str = "bundle") -> Bundle:
        b = Bundle(self.path, name)
        self.bundles.append(b)
        return b

    def host_dir(self, prefix: str) -> Path:
        """A directory in /tmp outside the workspace (e.g. a victim), removed on close."""
        d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.extra_dirs.append(d)
        return d

    def close(self) -> list[str]:
        for b in self.bundles:
            b.delete()
        leaked: list[str] = []
        for d in [*self.extra_dirs, self.path]:
            leaked += remove_tree(d)
        return leaked


def add_hook_env(bundle: str | os.PathLike[str], stages: tuple[str, ...], env: dict[str, str]) -> None:
    """Add ``env`` to the environment of every hook entry of ``stages`` in a bundle's config.json.

    The fault-matrix tests switch a fault point on this way (``DPDK_OCI_HOOK_FAULT=<point>``):
    only the hook run by the runtime sees it, exactly as it would see its own environment.
    """
    path = Path(bundle, "config.json")
    spec = json.loads(path.read_text())
    for stage in stages:
        entries = spec.get("hooks", {}).get(stage)
        assert entries, f"{path} registers no {stage} hook"
        for entry in entries:
            kept = [item for item in entry.get("env", []) if item.split("=", 1)[0] not in env]
            entry["env"] = kept + [f"{name}={value}" for name, value in env.items()]
    path.write_text(json.dumps(spec, indent=1))
