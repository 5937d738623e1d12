"""What the host holds for dpdk-oci-hook, as one snapshot that compares with another.

A fault test takes a :class:`HostState` before the fault (the baseline, taken while exactly
the containers that must survive are running), injects the fault, cleans up the way an
operator would (``runc delete -f``, one ``dpdk-oci-hook gc``), and then
:func:`assert_holds_only` checks that the host holds exactly that again:

- the ledger's entries (by container id; an unreadable ledger is recorded as such);
- OVS Port and Interface rows that carry our owner tag (``external_ids:dpdk-oci-hook-owner``);
- host links named ``dpv*`` (the host ends of kernel ports) and their owner alias;
- hugetlbfs mounts in the host namespace other than ``/dev/hugepages``;
- everything under the state directory except the ledger, its lock, its journal and the
  copies ``gc --rebuild`` sets aside: owner records and socket directories (the hook's own
  top-level directories count only by what they hold);
- free and reserved 2 MiB pages, where the pages ovs-vswitchd maps for its own DPDK heap
  count as free (OVS grows that heap as ports come and keeps it: not ours to give back);
- the kernel pool's size (``nr_hugepages``), which ``grow_pool`` changes.

Pages come back a moment after a container's last process exits (its mount namespace, and
with it the private hugetlbfs, goes last), so the comparison waits a little for them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hook.constants import OWNER_ALIAS, OWNER_KEY
from tests.helpers.hook_env import hugepages_free, hugepages_mapped_by, hugetlbfs_mounts
from tests.helpers.ovs_instance import OvsInstance

POOL_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
SYS_NET = Path("/sys/class/net")
HOST_LINK_PREFIX = "dpv"
SETTLE_S = 10.0
# Files of the state directory that are the ledger's own, not a container's.
LEDGER_FILES = ("ledger.json", "ledger.json.lock", "ledger.lock")


def _is_ledger_file(name: str) -> bool:
    return name in LEDGER_FILES or name.startswith("ledger.json.") or "journal" in name


def _decode(cell: Any) -> Any:
    """An OVSDB JSON cell as plain Python (maps -> dict, sets -> list)."""
    if isinstance(cell, list) and len(cell) == 2:
        kind, value = cell
        if kind == "map":
            return {_decode(k): _decode(v) for k, v in value}
        if kind == "set":
            return [_decode(v) for v in value]
        if kind == "uuid":
            return value
    return cell


def ledger_ids(state_dir: Path) -> tuple[str, ...]:
    """Container ids with a ledger entry; ``('<unreadable ledger>',)`` when it does not parse."""
    from hook.errors import LedgerCorrupt
    from hook.host.ledger import Ledger

    try:
        entries = Ledger(str(state_dir / "ledger.json")).peek()
    except LedgerCorrupt:
        return ("<unreadable ledger>",)
    return tuple(sorted(res.container_id for res in entries.values()))


def owned_rows(ovs: OvsInstance | None) -> tuple[tuple[str, str, str], ...]:
    """(table, name, owner) of every Port and Interface row with our owner tag."""
    if ovs is None:
        return ()
    rows = []
    for table in ("Port", "Interface"):
        doc = json.loads(ovs.vsctl("--format=json", "--columns=name,external_ids", "list", table, wait=False))
        for name, ids in doc["data"]:
            owner = _decode(ids).get(OWNER_KEY)
            if owner is not None:
                rows.append((table, str(name), str(owner)))
    return tuple(sorted(rows))


def host_links() -> tuple[tuple[str, str], ...]:
    """(name, owner alias) of host links named like the host ends of kernel ports."""
    found = []
    for link in SYS_NET.glob(HOST_LINK_PREFIX + "*"):
        try:
            alias = (link / "ifalias").read_text().strip()
        except OSError:
            alias = "?"
        found.append((link.name, alias.removeprefix(OWNER_ALIAS)))
    return tuple(sorted(found))


def state_files(state_dir: Path) -> tuple[str, ...]:
    """What containers left under the state directory: its files, and what its directories hold.

    Top-level directories (``owners/``, ``sockets/``...) are the hook's own layout: only their
    entries (an owner record, a socket directory) belong to a container.
    """
    found: list[str] = []
    try:
        top = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return ()
    for name in top:
        if _is_ledger_file(name):
            continue
        path = state_dir / name
        if path.is_dir() and not path.is_symlink():
            found += [f"{name}/{entry}" for entry in sorted(os.listdir(path))]
        else:
            found.append(name)
    return tuple(found)


@dataclass(frozen=True)
class HostState:
    """Everything on the host that the hook makes for containers, at one moment."""

    ledger: tuple[str, ...]
    ovs_rows: tuple[tuple[str, str, str], ...]
    host_links: tuple[tuple[str, str], ...]
    hugetlbfs_mounts: tuple[str, ...]
    state_files: tuple[str, ...]
    hugepages_free: int
    hugepages_reserved: int
    nr_hugepages: int

    def differences(self, now: HostState) -> list[str]:
        """One line per field where ``now`` differs from this state."""
        lines = []
        for f in fields(self):
            was, is_ = getattr(self, f.name), getattr(now, f.name)
            if was == is_:
                continue
            if isinstance(was, tuple):
                gone = [x for x in was if x not in is_]
                extra = [x for x in is_ if x not in was]
                lines.append(f"{f.name}: extra {extra}, missing {gone}")
            else:
                lines.append(f"{f.name}: {was} -> {is_}")
        return lines

    @property
    def owners(self) -> set[str]:
        """Owner tags found on the switch and on host links."""
        return {owner for _, _, owner in self.ovs_rows} | {alias for _, alias in self.host_links}


def capture(state_dir: Path, ovs: OvsInstance | None) -> HostState:
    """What the host holds right now (pages mapped by ovs-vswitchd counted as free)."""
    free, reserved = hugepages_free()
    ovs_pages = hugepages_mapped_by(ovs.pid("ovs-vswitchd")) if ovs is not None else 0
    return HostState(
        ledger=ledger_ids(state_dir),
        ovs_rows=owned_rows(ovs),
        host_links=host_links(),
        hugetlbfs_mounts=tuple(sorted(hugetlbfs_mounts())),
        state_files=state_files(state_dir),
        hugepages_free=free + ovs_pages,
        hugepages_reserved=reserved,
        nr_hugepages=int((POOL_2M / "nr_hugepages").read_text()),
    )


def differences_after_settling(expected: HostState, state_dir: Path, ovs: OvsInstance | None, settle_s: float = SETTLE_S) -> list[str]:
    """How the host differs from ``expected``, after waiting up to ``settle_s`` for it to match."""
    deadline = time.monotonic() + settle_s
    while True:
        diff = expected.differences(capture(state_dir, ovs))
        if not diff or time.monotonic() > deadline:
            return diff
        time.sleep(0.2)


def assert_holds_only(expected: HostState, state_dir: Path, ovs: OvsInstance | None, context: str = "") -> None:
    """The host holds exactly ``expected`` (what the live containers held), or fail with the difference."""
    diff = differences_after_settling(expected, state_dir, ovs)
    assert not diff, (f"{context}: " if context else "") + "the host does not hold exactly what live containers hold:\n  " + "\n  ".join(diff)
