"""Processes of the host by identity: a pid and its start time name one process for good."""

from __future__ import annotations


def pid_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if it is gone).

    Together with the pid it names one process for good: pids are reused, start times are not.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped: as good as gone
        return None
    return int(fields[19])


def process_alive(pid: int | None, start: int | None) -> bool:
    """Whether the process recorded as (pid, start time) still runs."""
    if not pid:
        return False
    now = pid_start_time(pid)
    return now is not None and (start is None or now == start)


def id_maps(pid: int) -> tuple[str, str]:
    """The uid_map and gid_map of a process ("0 0 4294967295" outside user namespaces)."""
    with open(f"/proc/{pid}/uid_map", encoding="ascii") as fh:
        uid_map = fh.read()
    with open(f"/proc/{pid}/gid_map", encoding="ascii") as fh:
        gid_map = fh.read()
    return uid_map, gid_map
