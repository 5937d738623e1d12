"""A container's /run/dpdk on the host: one small tmpfs per instance, whose symlinks nothing follows.

``state_dir/run/<key>`` is a tmpfs (16 MiB, 1024 inodes; nosuid, nodev, noexec and
nosymfollow) mounted in the host's mount namespace and bind-mounted into the container at
``/run/dpdk``.  It holds what the hook writes for the app (``eal.args``, ``config.json``),
the app's server-mode sockets and EAL's runtime files.  The switch connects to a socket at
its host path: every component above the socket is a directory of the host that no container
can write, and the socket's own directory is a ``nosymfollow`` mount, so a container that
swaps its socket for a symlink (to another tenant's socket, or anything of the host's) makes
the switch's connect fail with ELOOP instead of following it.  The cap keeps a container from
filling anything of the host's through it.
"""

from __future__ import annotations

import os

from hook.decide.names import run_dir_path
from hook.errors import HostIOError
from hook.host import host_tmpfs

SOURCE_TAG = "dpdk-oci-hook-run"  # how /proc/self/mountinfo tells these mounts apart
SIZE = "16m"  # EAL keeps its runtime dir (/var/run/dpdk/<prefix>: memseg fbarrays) here too
INODES = 1024


def options(uid: int, gid: int) -> str:
    return f"size={SIZE},nr_inodes={INODES},mode=0750,uid={uid},gid={gid}"


def create(state_dir: str, key: str, uid: int, gid: int, files: dict[str, str]) -> str:
    """Mount the instance's run directory and write ``files`` into it, read-only for the app; its path."""
    path = run_dir_path(state_dir, key)
    try:
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        os.mkdir(path, 0o700)
        host_tmpfs.mount(path, SOURCE_TAG, options(uid, gid), nosymfollow=True)
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for name, content in sorted(files.items()):
                out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
                try:
                    data = memoryview(content.encode())
                    while data:
                        data = data[os.write(out, data):]
                    os.fchmod(out, 0o644)
                finally:
                    os.close(out)
        finally:
            os.close(fd)
    except OSError as exc:
        remove(state_dir, key)
        raise HostIOError.from_os(exc, doing="making the container's run directory") from exc
    return path


def remove(state_dir: str, key: str) -> None:
    """Unmount and remove the instance's run directory; one that is gone already is fine."""
    failure = host_tmpfs.unmount_and_remove(run_dir_path(state_dir, key))
    if failure:
        raise HostIOError(path=run_dir_path(state_dir, key), reason=failure)


def keys(state_dir: str) -> list[str]:
    """Keys of the run directories on the host, mounted or left empty by an interrupted start."""
    root = os.path.dirname(run_dir_path(state_dir, "x"))
    found = set(host_tmpfs.mounted(root, SOURCE_TAG))
    try:
        found.update(name for name in os.listdir(root) if not name.startswith("."))
    except FileNotFoundError:
        pass
    return sorted(found)
