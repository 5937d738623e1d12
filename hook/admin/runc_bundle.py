"""Throw-away runc containers wired by the hook: bundles, and interactive processes in them.

Used by ``dpdk-oci-hook demo`` and by the tests.  The root filesystem is an empty
directory whose ``/usr`` is the host's, bound read-only, so a container runs the host's
``dpdk-testpmd`` without any image registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

RUNC = "/usr/sbin/runc"


def hook_entry(stage: str, config_path: str, timeout_s: int = 30) -> dict[str, Any]:
    """An OCI hook entry that runs this interpreter's installed hook with ``config_path``."""
    from hook.constants import ENV_CONFIG
    from hook.entry import hook_entry as entry

    return entry(stage, sys.executable, {ENV_CONFIG: config_path}, timeout_s)


def make_rootfs(path: str) -> None:
    """An empty root whose bin/lib/sbin point into /usr (bound from the host at run time)."""
    os.makedirs(os.path.join(path, "usr"), exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        link = os.path.join(path, name)
        if not os.path.lexists(link):
            os.symlink(f"usr/{name}", link)
    for name in ("tmp", "run", "var", "etc", "proc", "sys", "dev"):
        os.makedirs(os.path.join(path, name), exist_ok=True)
    with open(os.path.join(path, "etc", "passwd"), "w", encoding="ascii") as fh:
        fh.write("root:x:0:0:root:/root:/bin/sh\n")
    if not os.path.lexists(os.path.join(path, "var", "run")):
        os.symlink("../run", os.path.join(path, "var", "run"))


def make_bundle(
    bundle: str,
    args: Sequence[str],
    annotations: dict[str, str],
    config_path: str,
    hook_stages: Sequence[str] = ("createRuntime", "poststop"),
    terminal: bool = False,
    capabilities: Sequence[str] = (),
) -> str:
    """Write a runc bundle (config.json + rootfs) that registers the hook; returns the bundle."""
    rootfs = os.path.join(bundle, "rootfs")
    make_rootfs(rootfs)
    if not os.path.exists(os.path.join(bundle, "config.json")):
        subprocess.run([RUNC, "spec", "--bundle", bundle], check=True, timeout=30)
    with open(os.path.join(bundle, "config.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    spec["process"]["terminal"] = terminal
    spec["process"]["args"] = list(args)
    spec["process"]["env"] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["hostname"] = "dpdk"
    spec["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
    for cap in capabilities:
        for kind in spec["process"]["capabilities"].values():
            if cap not in kind:
                kind.append(cap)
    spec["annotations"] = dict(annotations)
    spec["hooks"] = {stage: [hook_entry(stage, config_path)] for stage in hook_stages}
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(spec, fh, indent=1)
    return bundle


class Interactive:
    """A process with piped stdin, stdout and stderr; its stdout can be waited on.

    stderr is kept apart so log lines never split a prompt that is being waited for.
    """

    def __init__(self, argv: Sequence[str], name: str) -> None:
        self.id = name
        self.stdout = ""
        self.stderr = ""
        self._cursor = 0
        self._closed = False
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def output(self) -> list[str]:
        return self.stdout.splitlines()

    def _read(self, stream: Any, attr: str) -> None:
        while True:
            chunk = os.read(stream.fileno(), 65536)
            with self._cond:
                if not chunk:
                    if attr == "stdout":
                        self._closed = True
                    self._cond.notify_all()
                    return
                setattr(self, attr, getattr(self, attr) + chunk.decode(errors="replace"))
                self._cond.notify_all()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def _tail(self) -> str:
        return "\n".join(self.stdout.splitlines()[-40:]) + "\n--- stderr ---\n" + "\n".join(self.stderr.splitlines()[-20:])

    def wait_for(self, text: str, timeout_s: float = 30.0) -> str:
        """Block until stdout shows ``text`` after the previous match; returns that line."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = self.stdout.find(text, self._cursor)
                if found >= 0:
                    self._cursor = found + len(text)
                    line_start = self.stdout.rfind("\n", 0, found) + 1
                    line_end = self.stdout.find("\n", found)
                    return self.stdout[line_start : line_end if line_end >= 0 else len(self.stdout)]
                if self._closed:
                    raise RuntimeError(f"{self.id}: exited before printing {text!r}; output:\n{self._tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.id}: no {text!r} within {timeout_s} s; output:\n{self._tail()}")
                self._cond.wait(left)

    def kill(self) -> None:
        self.proc.kill()

    def finish(self, timeout_s: float = 30.0) -> int:
        """Close stdin and wait for the process to exit (killing it after ``timeout_s``)."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(timeout=10)
        finally:
            for reader in self._readers:
                reader.join(timeout=5)


class Container(Interactive):
    """A container run in the foreground by ``runc run`` with a private runc root."""

    def __init__(self, runc_root: str, bundle: str, container_id: str) -> None:
        self.runc_root, self.bundle = runc_root, bundle
        super().__init__([RUNC, "--root", runc_root, "run", "--bundle", bundle, container_id], container_id)

    def kill(self) -> None:
        subprocess.run([RUNC, "--root", self.runc_root, "kill", self.id, "KILL"], capture_output=True, timeout=10)

    def finish(self, timeout_s: float = 30.0) -> int:
        """Close stdin, wait for the container to exit, and delete it (running poststop)."""
        try:
            return super().finish(timeout_s)
        finally:
            delete(self.runc_root, self.id)


def delete(runc_root: str, container_id: str) -> None:
    """Force-delete a container of our private runc root (runs its poststop hooks)."""
    subprocess.run([RUNC, "--root", runc_root, "delete", "--force", container_id], capture_output=True, timeout=60)


def run_to_end(runc_root: str, bundle: str, container_id: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a container to completion; returns its output and exit code."""
    try:
        return subprocess.run(
            [RUNC, "--root", runc_root, "run", "--bundle", bundle, container_id],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    finally:
        delete(runc_root, container_id)


def forward_stats(output: Sequence[str]) -> dict[str, int]:
    """The last 'Accumulated forward statistics' RX/TX packet counts testpmd printed."""
    stats = {"rx": 0, "tx": 0}
    lines = list(output)
    for i, line in enumerate(lines):
        if "Accumulated forward statistics" in line and i + 2 < len(lines):
            rx = lines[i + 1].split()
            tx = lines[i + 2].split()
            stats = {"rx": int(rx[1]), "tx": int(tx[1])}
    return stats
