"""Mounts inside a container's mount namespace, made without trusting the image.

This module owns every mount the hook makes inside a container: the private hugetlbfs
instance, the bind mounts of single host sockets, and clones of host mounts (its run
directory at /run/dpdk and a direct link's directory, taken with ``open_tree`` before
entering the container).  It runs from
a prestart/createRuntime hook, as root in the host's namespaces, after the runtime built the
container's mounts and before ``pivot_root``.

The image controls every path below the rootfs, so a target path is never mounted by its
string (the CVE-2024-0132 class of bugs).  Instead, in a forked child that entered the
container's mount namespace:

* each target is resolved with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` relative
  to an ``O_PATH`` fd of the rootfs, so symlinks (absolute, relative, ``..``) stay inside it;
  missing components are made with ``mkdirat``/``openat(O_EXCL)`` relative to the parent fd,
  as the parent's owner (a user namespace's filesystem cannot hold the host root's inodes),
  and re-opened with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``;
* the resolved fd is checked: strictly below the rootfs, not in its ``/proc`` or ``/sys``,
  not on procfs/sysfs, of the right type;
* sources are opened by fd after ``setns`` (``O_PATH | O_NOFOLLOW``), never from the rootfs,
  and checked (directory, or ``S_ISSOCK`` for a single socket, never a symlink);
* the mount goes through the fds (``/proc/self/fd/N``), and is verified by re-resolving the
  target afterwards (same inode as the source; hugetlbfs magic);
* a batch is all-or-nothing: on failure the mounts already made are detached again.

The parent never changes namespace; the child never execs.  Imports are kept to the few
stdlib modules below because this is on the container start hot path.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import stat
import struct
from typing import TYPE_CHECKING

from hook.errors import MountError

if TYPE_CHECKING:  # typing is already loaded by hook.errors; collections.abc is not needed at run time
    from collections.abc import Callable, Sequence

    from hook.model import Mount

__all__ = ["apply_mounts", "remove_mounts"]

KIND_BIND = "bind"
KIND_HUGETLBFS = "hugetlbfs"
KIND_TREE = "tree"  # a clone of a mount of the host's namespace (a link's directory), attached by fd

# Kernel ABI constants (include/uapi/linux/*.h); the stdlib does not export them.
_CLONE_FS = 0x00000200
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_BIND = 0x1000
_MNT_DETACH = 0x2
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE_IN_ROOT = 0x10
_SYS_OPENAT2 = 437  # x86_64, aarch64 and every architecture on the generic syscall table
_SYS_OPEN_TREE = 428  # the same number on every architecture
_SYS_MOVE_MOUNT = 429
_OPEN_TREE_CLONE = 0x1
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_MOVE_MOUNT_F_EMPTY_PATH = 0x04
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
_POLLIN = 0x1
_HUGETLBFS_MAGIC = 0x958458F6
_PROC_SUPER_MAGIC = 0x9FA0
_SYSFS_MAGIC = 0x62656572

_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_IN_ROOT = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS
_BENEATH = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS
_FORBIDDEN_TOP = ("proc", "sys")  # mounting over these is how a container reaches host knobs
_MAX_OPTIONS = 4095  # mount(2) copies at most one page of data
_NO_ID = 0xFFFFFFFF  # (uid_t) -1: setfsuid/setfsgid change nothing and return the current id


class _OpenHow(ctypes.Structure):
    """``struct open_how`` of openat2(2)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _PollFd(ctypes.Structure):
    """``struct pollfd`` of poll(2)."""

    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


class _Libc:
    """The few libc entry points the stdlib of Python 3.11 lacks, with explicit C types."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)
        self.syscall = lib.syscall
        self.syscall.restype = ctypes.c_long
        self.setns = lib.setns
        self.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        self.setns.restype = ctypes.c_int
        self.unshare = lib.unshare
        self.unshare.argtypes = [ctypes.c_int]
        self.unshare.restype = ctypes.c_int
        self.mount = lib.mount
        self.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        self.mount.restype = ctypes.c_int
        self.umount2 = lib.umount2
        self.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.umount2.restype = ctypes.c_int
        self.fstatfs = lib.fstatfs
        self.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.fstatfs.restype = ctypes.c_int
        self.poll = lib.poll
        self.poll.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int]
        self.poll.restype = ctypes.c_int
        self.setfsuid = lib.setfsuid
        self.setfsuid.argtypes = [ctypes.c_uint]
        self.setfsuid.restype = ctypes.c_int
        self.setfsgid = lib.setfsgid
        self.setfsgid.argtypes = [ctypes.c_uint]
        self.setfsgid.restype = ctypes.c_int


_LIBC: _Libc | None = None


def _libc() -> _Libc:
    # Loaded in the parent before fork: dlopen() in a child forked from a threaded process
    # could deadlock on the loader lock.
    global _LIBC
    if _LIBC is None:
        _LIBC = _Libc()
    return _LIBC


class _Refused(Exception):
    """Raised inside the child; becomes a MountError in the parent."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target = target
        self.reason = reason


def _ename(err: int) -> str:
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


# --------------------------------------------------------------------------- validation


def _split_target(target: str) -> list[str]:
    """Components of an absolute container path; ``..`` and the root itself are refused."""
    if not isinstance(target, str) or not target.startswith("/") or "\0" in target:
        raise _Refused(str(target), "target must be an absolute path")
    comps = [c for c in target.split("/") if c not in ("", ".")]
    if not comps:
        raise _Refused(target, "refusing to mount over the container's root")
    if ".." in comps:
        raise _Refused(target, "target must not contain '..'")
    return comps


def _validate(m: Mount) -> None:
    _split_target(m.target)
    if m.kind in (KIND_BIND, KIND_TREE):
        if not isinstance(m.source, str) or not m.source.startswith("/") or "\0" in m.source:
            raise _Refused(m.target, f"bind source {m.source!r} must be an absolute host path")
        if m.kind == KIND_TREE and m.file:
            raise _Refused(m.target, "a tree mount needs a directory target")
    elif m.kind == KIND_HUGETLBFS:
        if m.file:
            raise _Refused(m.target, f"a {m.kind} mount needs a directory target")
        if "\0" in m.options or len(m.options.encode()) > _MAX_OPTIONS:
            raise _Refused(m.target, f"{m.kind} options are malformed")
    else:
        raise _Refused(m.target, f"unknown mount kind {m.kind!r}")


# --------------------------------------------------------------------------- fd helpers (child side)
#
# In the child, the working directory is the host's /proc/self/fd, opened before setns.  So
# ``str(fd)`` is the magic link of that fd, looked up on the host's procfs: the container's
# /proc (an unprivileged mount after pivot_root, in another pid namespace) is never used.


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    for _ in range(16):  # EAGAIN: a concurrent rename/mount raced a scoped lookup; retry
        fd = _libc().syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_long(dirfd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def _fs_magic(fd: int) -> int:
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit glibc
    if _libc().fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    # f_type is the first member, a native long; the magics are 32-bit values.
    return int(struct.unpack_from("l", buf.raw, 0)[0]) & 0xFFFFFFFF


def _fd_path(fd: int) -> str:
    return os.readlink(str(fd))


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _detach(fd: int) -> int:
    """Lazily unmount the mount whose root ``fd`` is; 0 or an errno."""
    if _libc().umount2(str(fd).encode(), _MNT_DETACH) != 0:
        return ctypes.get_errno()
    return 0


def _enter(nsfd: int) -> None:
    """Enter the container's mount namespace, keeping a handle on the host's procfs."""
    procfd = os.open("/proc/self/fd", _PATH_DIR)
    if _fs_magic(procfd) != _PROC_SUPER_MAGIC:
        raise _Refused("/proc", "the host's /proc is not procfs")
    # setns into a mount namespace fails (EINVAL) while another thread shares our root and cwd,
    # and a fork child can have such threads: libraries restart theirs in fork handlers (grpc
    # does, in the Kubernetes device plugin's process).  A private copy makes the join safe.
    if _libc().unshare(_CLONE_FS) != 0:
        raise _Refused("", f"unshare(CLONE_FS) before joining the container's mount namespace failed: {_ename(ctypes.get_errno())}")
    if _libc().setns(nsfd, _CLONE_NEWNS) != 0:
        raise _Refused("", f"setns into the container's mount namespace failed: {_ename(ctypes.get_errno())}")
    os.fchdir(procfd)  # setns reset cwd and root to the namespace's root
    os.umask(0o022)  # mountpoints we create are 0755 whatever the hook's umask


def _open_rootfs(rootfs: str, root_id: tuple[int, int], allow_pivoted: bool) -> tuple[int, str]:
    """The container's rootfs as seen in its namespace: (O_PATH fd, path as readlink shows it).

    Before pivot_root it sits at its host path; after, it is the namespace's ``/``.  Either is
    accepted only if it is the same inode the host sees at ``rootfs``.
    """
    if allow_pivoted:
        top = os.open("/", _PATH_DIR)
        st = os.fstat(top)
        if (st.st_dev, st.st_ino) == root_id:
            return top, "/"
        os.close(top)
    try:
        fd = os.open(rootfs, _PATH_DIR)
    except OSError as exc:
        raise _Refused(rootfs, f"rootfs not found in the container's mount namespace: {_ename(exc.errno or 0)}") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != root_id:
        os.close(fd)
        hint = "" if allow_pivoted else " (has the container already pivoted?)"
        raise _Refused(rootfs, f"the container's mount namespace does not show its rootfs at this path{hint}")
    path = _fd_path(fd)
    if path == "/":
        os.close(fd)
        raise _Refused(rootfs, "refusing a rootfs that is the namespace's root")
    return fd, path


def _check_target(fd: int, root: str, target: str, want_file: bool | None) -> str:
    """Check a resolved target fd; return its path.  ``want_file`` None skips the type check."""
    path = _fd_path(fd)
    prefix = root if root.endswith("/") else root + "/"
    if not path.startswith(prefix) or path == root or path.endswith(" (deleted)"):
        raise _Refused(target, f"resolves to {path!r}, outside the container rootfs {root!r}")
    top = path[len(prefix) :].split("/", 1)[0]
    if top in _FORBIDDEN_TOP:
        raise _Refused(target, f"resolves to {path!r}, inside the container's /{top}")
    if _fs_magic(fd) in (_PROC_SUPER_MAGIC, _SYSFS_MAGIC):
        raise _Refused(target, f"resolves to {path!r}, on procfs or sysfs")
    if want_file is not None:
        mode = os.fstat(fd).st_mode
        if want_file and not (stat.S_ISREG(mode) or stat.S_ISSOCK(mode)):
            raise _Refused(target, f"{path!r} exists and is not a regular file")
        if not want_file and not stat.S_ISDIR(mode):
            raise _Refused(target, f"{path!r} exists and is not a directory")
    return path


def _set_fs_ids(uid: int, gid: int) -> tuple[int, int]:
    """Make the thread's filesystem uid/gid ``uid``/``gid``; return the previous ones."""
    lib = _libc()
    old_gid = lib.setfsgid(gid)  # the group first: CAP_SETGID stays effective whatever the fsuid is
    old_uid = lib.setfsuid(uid)
    # setfs*id report no error: read the ids back (an invalid id changes nothing, returns the current)
    if lib.setfsuid(_NO_ID) != uid or lib.setfsgid(_NO_ID) != gid:
        lib.setfsuid(old_uid)
        lib.setfsgid(old_gid)
        raise OSError(errno.EPERM, f"cannot take filesystem ids {uid}:{gid}")
    return old_uid, old_gid


def _create_as_owner(parentfd: int, name: str, as_file: bool) -> None:
    """Create ``name`` in ``parentfd`` with the fsuid/fsgid of the directory's owner.

    A filesystem mounted inside a user namespace (the runtime's /dev tmpfs, say) refuses to
    create an inode for an id it cannot map (EOVERFLOW), and the host's root is not mapped in
    the container's namespace; the directory's owner is.  So the new entry belongs to whoever
    owns its parent, as if they had made it (and needs their write permission there, not
    root's override); in a directory of the hook's own user nothing changes.  The child is
    single-threaded and setfs*id act on the calling thread only: the switch covers this one
    create, and the ids are back before any lookup or mount.
    """
    owner = os.fstat(parentfd)
    ids = (owner.st_uid, owner.st_gid)
    previous = _set_fs_ids(*ids) if ids != (os.geteuid(), os.getegid()) else None
    try:
        if as_file:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=parentfd))
        else:
            os.mkdir(name, 0o755, dir_fd=parentfd)
    finally:
        if previous is not None:
            _set_fs_ids(*previous)


def _make_beneath(parentfd: int, name: str, as_file: bool, target: str) -> int:
    """Create ``name`` in ``parentfd`` unless it exists; open it without following symlinks."""
    try:
        _create_as_owner(parentfd, name, as_file)
    except FileExistsError:
        pass  # made concurrently, or a dangling symlink: the no-symlink open below decides
    except OSError as exc:
        raise _Refused(target, f"cannot create mountpoint component {name!r}: {_ename(exc.errno or 0)}") from None
    try:
        return _openat2(parentfd, name, os.O_PATH | (0 if as_file else os.O_DIRECTORY), _BENEATH)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = f"component {name!r} is a symlink to a path missing from the rootfs"
        else:
            reason = f"cannot open created component {name!r}: {_ename(exc.errno or 0)}"
        raise _Refused(target, reason) from None


def _resolve_target(rootfd: int, comps: list[str], as_file: bool, target: str) -> int:
    """O_PATH fd of the target inside the rootfs, creating missing components."""
    last_flags = os.O_PATH | (0 if as_file else os.O_DIRECTORY)
    try:
        return _openat2(rootfd, "/".join(comps), last_flags, _IN_ROOT)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            kind = "a file" if as_file else "a directory"
            raise _Refused(target, f"cannot resolve inside the rootfs as {kind}: {_ename(exc.errno or 0)}") from None
    # Walk: each prefix is resolved from the rootfs (so symlinks keep their in-root meaning);
    # only a missing component is created, relative to the fd of its resolved parent.
    parent = rootfd
    try:
        for i, name in enumerate(comps):
            last = i == len(comps) - 1
            flags = last_flags if last else os.O_PATH | os.O_DIRECTORY
            try:
                fd = _openat2(rootfd, "/".join(comps[: i + 1]), flags, _IN_ROOT)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise _Refused(target, f"cannot resolve component {name!r}: {_ename(exc.errno or 0)}") from None
                fd = _make_beneath(parent, name, last and as_file, target)
            if parent != rootfd:
                os.close(parent)
            parent = fd
        return parent
    except BaseException:
        if parent != rootfd:
            _close(parent)
        raise


def _open_source(m: Mount, root: str) -> int:
    """O_PATH fd of a bind source, opened in the container's namespace and checked."""
    try:
        # No O_DIRECTORY: with O_NOFOLLOW it would turn "is a symlink" into a vague ENOTDIR;
        # the fstat below checks the type of the very inode we hold.
        fd = os.open(m.source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _Refused(m.target, f"bind source {m.source!r}: {_ename(exc.errno or 0)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            raise _Refused(m.target, f"bind source {m.source!r} is a symlink")
        if m.file and not stat.S_ISSOCK(mode):
            raise _Refused(m.target, f"bind source {m.source!r} is not a unix socket")
        if not m.file and not stat.S_ISDIR(mode):
            raise _Refused(m.target, f"bind source {m.source!r} is not a directory")
        path = _fd_path(fd)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            raise _Refused(m.target, f"bind source {m.source!r} lies inside the container rootfs")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_tree(m: Mount) -> int:
    """A detached clone of the host's mount at ``m.source`` (called before entering the container).

    Mounts made in the host's namespace after the container's was created do not show in it
    (private propagation), so the source cannot be opened after ``setns`` as a bind's is.
    """
    fd = _libc().syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_long(_AT_FDCWD), ctypes.c_char_p(os.fsencode(m.source)),
                         ctypes.c_long(_OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_SYMLINK_NOFOLLOW))
    if fd < 0:
        raise _Refused(m.target, f"cannot clone host mount {m.source!r}: {_ename(ctypes.get_errno())}")
    if not stat.S_ISDIR(os.fstat(int(fd)).st_mode):
        os.close(int(fd))
        raise _Refused(m.target, f"host mount {m.source!r} is not a directory")
    return int(fd)


def _mount_error(m: Mount, err: int) -> str:
    if m.kind == KIND_HUGETLBFS:
        if err == errno.ENOMEM:
            return f"not enough free hugepages for min_size ({m.options})"
        if err == errno.EINVAL:
            return f"hugetlbfs refused options {m.options!r} (page size not configured?)"
        if err == errno.ENODEV:
            return "the kernel has no hugetlbfs"
        return f"hugetlbfs mount failed: {_ename(err)}"
    if m.kind == KIND_TREE:
        return f"attaching a clone of {m.source!r} failed: {_ename(err)}"
    return f"bind mount of {m.source!r} failed: {_ename(err)}"


def _mount_one(rootfd: int, root: str, m: Mount, tree: int | None = None) -> int:
    """Make one mount; return an O_PATH fd of the new mount's root (for rollback).

    ``tree`` is the detached clone of a ``tree`` mount's source (owned by this call).
    """
    comps = _split_target(m.target)
    srcfd = _open_source(m, root) if m.kind == KIND_BIND else tree  # before creating anything
    dstfd: int | None = None
    newfd: int | None = None
    try:
        dstfd = _resolve_target(rootfd, comps, m.file, m.target)
        path = _check_target(dstfd, root, m.target, m.file)
        lib = _libc()
        if m.kind == KIND_TREE and srcfd is not None:
            rc = lib.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_long(srcfd), ctypes.c_char_p(b""), ctypes.c_long(dstfd),
                             ctypes.c_char_p(b""), ctypes.c_long(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH))
        elif srcfd is not None:
            rc = lib.mount(str(srcfd).encode(), str(dstfd).encode(), None, _MS_BIND, None)
        else:
            flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
            rc = lib.mount(b"nodev", str(dstfd).encode(), m.kind.encode(), flags, m.options.encode())
        if rc != 0:
            raise _Refused(m.target, _mount_error(m, ctypes.get_errno()))
        # dstfd still names the covered directory: re-resolve to hold the new mount's root,
        # and check the mount is the one we made, where we made it.
        try:
            newfd = _openat2(rootfd, "/".join(comps), os.O_PATH, _IN_ROOT)
        except OSError as exc:
            raise _Refused(m.target, f"mounted, but cannot re-open it: {_ename(exc.errno or 0)}") from None
        try:
            if _fd_path(newfd) != path:
                raise _Refused(m.target, f"mounted, but the path now resolves to {_fd_path(newfd)!r}")
            if srcfd is not None:
                src, got = os.fstat(srcfd), os.fstat(newfd)
                if (src.st_dev, src.st_ino) != (got.st_dev, got.st_ino):
                    raise _Refused(m.target, "mounted, but the target does not show the source")
            elif _fs_magic(newfd) != _HUGETLBFS_MAGIC:
                raise _Refused(m.target, f"mounted, but the target is not a {m.kind}")
        except _Refused:
            _detach(newfd)
            raise
        return newfd
    except BaseException:
        _close(newfd)
        raise
    finally:
        _close(srcfd)
        _close(dstfd)


def _child_apply(nsfd: int, rootfs: str, root_id: tuple[int, int], mounts: Sequence[Mount]) -> None:
    trees = [_open_tree(m) if m.kind == KIND_TREE else None for m in mounts]  # in the host's namespace
    _enter(nsfd)
    rootfd, root = _open_rootfs(rootfs, root_id, allow_pivoted=False)
    made: list[tuple[str, int]] = []
    try:
        for m, tree in zip(mounts, trees, strict=True):
            made.append((m.target, _mount_one(rootfd, root, m, tree)))
    except _Refused as exc:
        leftovers = []
        for target, fd in reversed(made):
            err = _detach(fd)
            if err:
                leftovers.append(f"{target} ({_ename(err)})")
        if leftovers:
            exc.reason += "; rollback could not unmount " + ", ".join(leftovers)
        raise


def _child_remove(nsfd: int, rootfs: str, root_id: tuple[int, int], targets: Sequence[str]) -> None:
    _enter(nsfd)
    rootfd, root = _open_rootfs(rootfs, root_id, allow_pivoted=True)
    failures: list[_Refused] = []
    for target in reversed(targets):
        fd: int | None = None
        try:
            comps = _split_target(target)
            try:
                fd = _openat2(rootfd, "/".join(comps), os.O_PATH, _IN_ROOT)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone with whatever was mounted there
                raise _Refused(target, f"cannot resolve inside the rootfs: {_ename(exc.errno or 0)}") from None
            _check_target(fd, root, target, None)
            err = _detach(fd)
            if err not in (0, errno.EINVAL, errno.ENOENT):  # EINVAL: not a mountpoint
                raise _Refused(target, f"umount failed: {_ename(err)}")
        except _Refused as exc:
            failures.append(exc)
        finally:
            _close(fd)
    if failures:
        first = failures[0]
        raise _Refused(first.target, first.reason + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))


# --------------------------------------------------------------------------- parent side


def _open_mnt_ns(pid: int, label: str) -> int | None:
    """fd of the container's mount namespace, None if the process is gone."""
    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    ours = os.stat("/proc/self/ns/mnt")
    theirs = os.fstat(fd)
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
        os.close(fd)
        # Mounting here would land in the host's namespace, where mounts pile up forever.
        raise MountError(target=label, reason=f"pid {pid} shares the hook's mount namespace: not a container")
    return fd


def _root_id(rootfs: str, label: str) -> tuple[int, int]:
    if not isinstance(rootfs, str) or not rootfs.startswith("/"):
        raise MountError(target=label, reason=f"rootfs {rootfs!r} must be an absolute path")
    try:
        st = os.stat(rootfs)
        top = os.stat("/")
    except OSError as exc:
        raise MountError(target=label, reason=f"rootfs {rootfs!r}: {_ename(exc.errno or 0)}") from None
    if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) == (top.st_dev, top.st_ino):
        raise MountError(target=label, reason=f"rootfs {rootfs!r} is not a container root directory")
    return st.st_dev, st.st_ino


def _wait_readable(fd: int, seconds: float) -> bool:
    pfd = _PollFd(fd, _POLLIN, 0)
    ms = max(1, min(int(seconds * 1000), 2**31 - 1))
    n = int(_libc().poll(ctypes.byref(pfd), 1, ms))
    if n < 0:
        err = ctypes.get_errno()
        if err == errno.EINTR:
            return False
        raise OSError(err, os.strerror(err))
    return n > 0


def _now() -> float:
    # A monotonic clock (times(2) counts ticks since boot) without importing time.
    return os.times().elapsed


def _run_child(nsfd: int, label: str, timeout_s: float, work: Callable[[], None]) -> None:
    """Run ``work`` in a forked child; raise MountError from its report, a crash or a timeout."""
    _libc()  # load before fork (see _libc)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        child = os.fork()
    except BaseException:
        for fd in (rfd, wfd, nsfd):
            os.close(fd)
        raise
    if child == 0:  # pragma: no cover - runs in the forked child; its effects are tested
        code = 1
        try:
            os.close(rfd)
            try:
                work()
                report: dict[str, object] = {"ok": True}
            except _Refused as exc:
                report = {"ok": False, "target": exc.target or label, "reason": exc.reason}
            except BaseException as exc:  # a bug: still report it rather than hang the parent
                report = {"ok": False, "target": label, "reason": f"internal error: {type(exc).__name__}: {exc}"}
            data = json.dumps(report).encode()
            while data:
                data = data[os.write(wfd, data) :]
            code = 0
        finally:
            os._exit(code)  # never run the parent's cleanup (atexit, finally blocks, buffers)

    os.close(wfd)
    os.close(nsfd)
    reaped = False
    chunks: list[bytes] = []
    try:
        deadline = _now() + timeout_s
        while True:
            remaining = deadline - _now()
            if remaining <= 0:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                reaped = True
                raise MountError(
                    target=label,
                    reason=f"mount helper timed out after {timeout_s:g}s and was killed; mounts it made may remain in the container's namespace",
                )
            if not _wait_readable(rfd, remaining):
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break  # EOF: the child exited (its write end is gone)
            chunks.append(chunk)
        _, status = os.waitpid(child, 0)
        reaped = True
    finally:
        os.close(rfd)
        if not reaped:
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except ChildProcessError:
                pass
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {-code}" if code < 0 else f"status {code}"
        raise MountError(target=label, reason=f"mount helper died ({how}) without a report") from None
    if not reply.get("ok"):
        raise MountError(target=str(reply.get("target") or label), reason=str(reply.get("reason")))


def apply_mounts(pid: int, rootfs: str, mounts: Sequence[Mount], timeout_s: float = 10.0) -> None:
    """Make ``mounts`` inside the container whose init is ``pid``, all or none.

    ``rootfs`` is the host path of the container's root; the container must not have pivoted
    yet (prestart / createRuntime).  Raises MountError naming the first target that failed;
    mounts made before it are detached again.
    """
    if not mounts:
        return
    label = mounts[0].target
    try:
        for m in mounts:
            _validate(m)
    except _Refused as exc:
        raise MountError(target=exc.target, reason=exc.reason) from None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise MountError(target=label, reason=f"invalid container pid {pid!r}")
    root_id = _root_id(rootfs, label)
    nsfd = _open_mnt_ns(pid, label)
    if nsfd is None:
        raise MountError(target=label, reason=f"container process {pid} is gone")
    todo = tuple(mounts)
    _run_child(nsfd, label, timeout_s, lambda: _child_apply(nsfd, rootfs, root_id, todo))


def remove_mounts(pid: int, rootfs: str, targets: Sequence[str], timeout_s: float = 10.0) -> None:
    """Detach the mounts at ``targets`` (in reverse order) inside the container, best effort.

    Targets that are not mounted or do not exist are skipped; if the container process is
    gone this returns at once, since its namespace and mounts went with it.  Works before and
    after pivot_root.  Raises MountError only for a mount that is there and would not go.
    """
    if not targets or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return
    label = targets[-1]
    try:
        nsfd = _open_mnt_ns(pid, label)
    except MountError:
        return  # the pid now belongs to a host process: the container's namespace is gone
    if nsfd is None:
        return
    try:
        root_id = _root_id(rootfs, label)
    except MountError:
        os.close(nsfd)
        raise
    todo = tuple(targets)
    _run_child(nsfd, label, timeout_s, lambda: _child_remove(nsfd, rootfs, root_id, todo))
