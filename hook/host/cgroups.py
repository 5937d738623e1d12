"""Pinning a container to its cores: cpuset cgroup (v1 and v2) and CPU affinity.

The container's cgroup belongs to the runtime and dies with the container, so nothing here
needs undoing.  Affinity is set on every thread of the container's init, which all later
processes inherit; the cgroup write makes it stick for processes that reset their affinity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from hook.errors import CgroupError
from hook.units import format_cpulist

if TYPE_CHECKING:
    from hook.model import Reservation


def _mount_points() -> tuple[str | None, str | None]:
    """(cgroup v1 cpuset mount, cgroup2 mount) from this process's mountinfo."""
    v1 = v2 = None
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fstype, _, rest = right.partition(" ")
            mount_point = left.split()[4]
            if fstype == "cgroup" and "cpuset" in rest.split()[-1].split(","):
                v1 = mount_point
            elif fstype == "cgroup2":
                v2 = mount_point
    return v1, v2


def cgroup_dirs(pid: int) -> list[str]:
    """The cpuset-capable cgroup directories that hold ``pid``."""
    v1_root, v2_root = _mount_points()
    dirs: list[str] = []
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise CgroupError(path=f"/proc/{pid}/cgroup", reason=exc.strerror or str(exc)) from exc
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if path == "/":  # the host's root cgroup is not the container's to change
            continue
        if v1_root and "cpuset" in controllers.split(","):
            dirs.append(os.path.join(v1_root, path.lstrip("/")))
        elif controllers == "" and v2_root:
            v2_dir = os.path.join(v2_root, path.lstrip("/"))
            if os.path.exists(os.path.join(v2_dir, "cpuset.cpus")):  # controller enabled there
                dirs.append(v2_dir)
    return dirs


def check_own_cgroups(res: Reservation, entries: Iterable[Reservation], alive: Callable[[Reservation], bool]) -> None:
    """Refuse ``res`` if one of its cgroups holds another live instance and either has cores to pin.

    runc names a container's cgroup after its id when config.json has no cgroupsPath, so the
    same id under two runtime roots lands in one cgroup: pinning the second would re-pin the
    first onto the second's cores.  Called under the ledger lock, before anything is made.
    """
    mine = set(res.cgroups)
    for other in entries:
        shared = mine.intersection(other.cgroups)
        if other.key == res.key or not shared or not (res.cpus or other.cpus) or not alive(other):
            continue
        raise CgroupError(
            path=min(shared),
            reason=f"container {res.container_id} shares this cgroup with the running container {other.container_id} "
            f"(bundle {other.bundle}, pid {other.pid}): pinning one would re-pin the other; give each container its own cgroupsPath",
        )


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as fh:
            fh.write(value)
    except OSError as exc:
        raise CgroupError(path=path, reason=f"writing {value!r}: {exc.strerror or exc}") from exc


def pin(pid: int, cpus: Sequence[int], mems: Sequence[int]) -> list[str]:
    """Restrict the container to ``cpus`` and memory nodes ``mems``; returns the dirs written."""
    if not cpus:
        return []
    dirs = cgroup_dirs(pid)
    cpu_text, mem_text = format_cpulist(cpus), format_cpulist(mems)
    for directory in dirs:
        # mems before cpus: a v1 cpuset with no mems refuses tasks
        _write(os.path.join(directory, "cpuset.mems"), mem_text)
        _write(os.path.join(directory, "cpuset.cpus"), cpu_text)
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError as exc:
        raise CgroupError(path=f"/proc/{pid}/task", reason=exc.strerror or str(exc)) from exc
    for tid in threads:
        try:
            os.sched_setaffinity(tid, set(cpus))
        except ProcessLookupError:
            continue
        except OSError as exc:
            raise CgroupError(path=f"/proc/{pid}/task/{tid}", reason=f"affinity: {exc.strerror}") from exc
    return dirs
