"""Small tmpfs mounts in the host's mount namespace, made and removed by path.

The one place the hook mounts something on the host itself: the run directories of
containers (:mod:`hook.host.run_dirs`) and the rendezvous of direct links
(:mod:`hook.host.link_dirs`).  Each mount is private (a clone of it in a container
joins no peer group, and nothing mounted on the host later propagates into it) and carries a
source tag, by which ``/proc/self/mountinfo`` tells the hook's mounts apart.
"""

from __future__ import annotations

import ctypes
import errno
import os

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_NOSYMFOLLOW = 0x100  # Linux >= 5.10: symlinks on the mount are never followed
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 0x2
_UMOUNT_NOFOLLOW = 0x8


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    lib.mount.restype = ctypes.c_int
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.umount2.restype = ctypes.c_int
    return lib


def mount(path: str, source_tag: str, options: str, nosymfollow: bool = False) -> None:
    """Mount a tmpfs (nosuid, nodev, noexec) at ``path`` and make it private; raises OSError."""
    lib = _libc()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | (_MS_NOSYMFOLLOW if nosymfollow else 0)
    if lib.mount(source_tag.encode(), path.encode(), b"tmpfs", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount a tmpfs ({os.strerror(err)})", path)
    if lib.mount(None, path.encode(), None, _MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        lib.umount2(path.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW)
        raise OSError(err, f"cannot make the tmpfs private ({os.strerror(err)})", path)


def unmount_and_remove(path: str) -> str | None:
    """Unmount (lazily) and remove the directory at ``path``; None, or why it could not."""
    if _libc().umount2(path.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted (any more)
            return f"{path}: umount: {os.strerror(err)}"
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return None


def mounted(root: str, source_tag: str) -> dict[str, str]:
    """The hook's tmpfs mounts directly below ``root`` with this tag: name -> mount point."""
    prefix = root.rstrip("/") + "/"
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 10 or " - " not in line:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        source = line.split(" - ", 1)[1].split(" ")
        if point.startswith(prefix) and "/" not in point[len(prefix):] and len(source) >= 2 and source[1] == source_tag:
            found[point[len(prefix):]] = point
    return found
