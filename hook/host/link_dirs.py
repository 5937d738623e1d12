"""Link directories: the rendezvous of a direct link, one tiny tmpfs per link on the host.

``state_dir/links/<link id>`` is a tmpfs (64 KiB, 16 inodes, nosuid/nodev/noexec, mode
0700, owned by the host user both sides run as) mounted in the host's mount namespace while
a ledger entry holds a side of the link.  Each side sees a clone of that mount at
``/run/dpdk/link-<name>`` (:mod:`hook.host.mounts`, kind ``tree``): the server side's app
creates the socket there and the client side's app connects to it.  No container can reach
the directory of another link, and none can fill anything of the host's through it.

Every function here runs under the ledger lock, so a link's directory is mounted by the
first side's start, kept while either side is held, and unmounted by the release of the
last side, never twice and never under a side that is starting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from hook.decide.links import SOCKET_NAME, links_root
from hook.errors import HostIOError
from hook.host import host_tmpfs
from hook.model import MODE_SERVER, LinkLease, Reservation

SOURCE_TAG = "dpdk-oci-hook-link"  # the mount's source: how /proc/self/mountinfo tells ours apart
DIR_SIZE = "64k"
DIR_INODES = 16

def options(uid: int, gid: int) -> str:
    return f"size={DIR_SIZE},nr_inodes={DIR_INODES},mode=0700,uid={uid},gid={gid}"


def mounted(state_dir: str) -> dict[str, str]:
    """Link directories mounted now: link id -> mount point."""
    return host_tmpfs.mounted(links_root(state_dir), SOURCE_TAG)


def _mount(path: str, uid: int, gid: int) -> None:
    host_tmpfs.mount(path, SOURCE_TAG, options(uid, gid))


def prepare(state_dir: str, links: Sequence[LinkLease], uid: int, gid: int) -> None:
    """Mount the directories of ``links`` that are not mounted; clear a server's stale socket.

    A server side that comes back (its container restarted while the client side ran on)
    finds the socket its earlier app left: removed here, before the new app binds the path.
    """
    try:
        _prepare(state_dir, links, uid, gid)
    except OSError as exc:
        raise HostIOError.from_os(exc, doing="preparing a link directory") from exc


def _prepare(state_dir: str, links: Sequence[LinkLease], uid: int, gid: int) -> None:
    root = links_root(state_dir)
    os.makedirs(root, mode=0o700, exist_ok=True)
    have = mounted(state_dir)
    for link in links:
        if link.link_id not in have:
            try:
                os.mkdir(link.host_dir, 0o700)
            except FileExistsError:
                pass
            _mount(link.host_dir, uid, gid)
        elif link.role == MODE_SERVER:
            fd = os.open(link.host_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.unlink(SOCKET_NAME, dir_fd=fd)  # unlinkat never follows a symlink
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)


def _remove(path: str) -> str | None:
    """Unmount and remove one link directory; None, or why it could not."""
    return host_tmpfs.unmount_and_remove(path)


def held_ids(entries: Iterable[Reservation]) -> set[str]:
    return {link.link_id for res in entries for link in res.links}


def release(links: Sequence[LinkLease], entries: Iterable[Reservation]) -> list[str]:
    """Remove the directories of ``links`` that no reservation in ``entries`` holds; the failures."""
    held = held_ids(entries)
    failures = []
    for link in links:
        if link.link_id not in held:
            why = _remove(link.host_dir)
            if why:
                failures.append(why)
    return failures


def remove_unheld(state_dir: str, held: set[str]) -> tuple[list[str], list[str]]:
    """gc: remove link directories (mounted or left empty) no reservation holds; (removed, failures)."""
    removed: list[str] = []
    failures: list[str] = []
    root = links_root(state_dir)
    candidates = dict(mounted(state_dir))
    try:
        for name in os.listdir(root):
            candidates.setdefault(name, os.path.join(root, name))
    except FileNotFoundError:
        pass
    for lid, path in sorted(candidates.items()):
        if lid in held:
            continue
        why = _remove(path)
        if why:
            failures.append(why)
        else:
            removed.append(lid)
    return removed, failures
