"""Host topology: online CPUs per NUMA node and hugepage pools per node and page size.

Read straight from sysfs (a handful of small files) because this runs on every container
start; ``pyudev`` is used off the hot path by ``doctor`` to cross-check the same view.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field

from hook.units import parse_cpulist

SYS_ROOT = "/sys"


@dataclass(frozen=True)
class HugepagePool:
    """One node's pool of one page size (counts in pages)."""

    total: int
    free: int
    surplus: int = 0
    reserved: int = 0  # promised to mappings or hugetlbfs min_size, not yet faulted

    @property
    def unclaimed(self) -> int:
        return max(self.free - self.reserved, 0)


@dataclass(frozen=True)
class Node:
    """One NUMA node: its online CPUs and hugepage pools by page size in KiB."""

    node_id: int
    cpus: frozenset[int]
    hugepages: dict[int, HugepagePool] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    """All NUMA nodes of the host, and the host-wide pools (which know reservations)."""

    nodes: dict[int, Node]
    hugepages: dict[int, HugepagePool] = field(default_factory=dict)

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset().union(*(n.cpus for n in self.nodes.values()))


def _read(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read().strip()


def _read_int(path: str) -> int:
    try:
        return int(_read(path))
    except FileNotFoundError:  # per-node pools have no resv_hugepages
        return 0


def _pools(directory: str, sizes: Collection[int] | None = None) -> dict[int, HugepagePool]:
    """The pools under ``directory``: of the page sizes in ``sizes`` (KiB), or all."""
    pools: dict[int, HugepagePool] = {}
    if sizes is None:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return pools
        sizes = [int(name[len("hugepages-"):-2]) for name in names if name.startswith("hugepages-") and name.endswith("kB")]
    for size_kib in sizes:
        base = os.path.join(directory, f"hugepages-{size_kib}kB")
        try:
            total = int(_read(os.path.join(base, "nr_hugepages")))
        except FileNotFoundError:  # no such pool (or no such directory)
            continue
        pools[size_kib] = HugepagePool(
            total=total,
            free=int(_read(os.path.join(base, "free_hugepages"))),
            surplus=int(_read(os.path.join(base, "surplus_hugepages"))),
            reserved=_read_int(os.path.join(base, "resv_hugepages")),
        )
    return pools


def read_topology(sys_root: str = SYS_ROOT, sizes: Collection[int] | None = None) -> Topology:
    """The host's nodes, online CPUs and hugepage pools as sysfs shows them now.

    ``sizes``: read only the pools of these page sizes (KiB), none for ``()``; every sysfs
    read costs ~50 µs on a VM, and a start reads its one size under the ledger lock.
    """
    online = parse_cpulist(_read(os.path.join(sys_root, "devices/system/cpu/online")))
    node_root = os.path.join(sys_root, "devices/system/node")
    nodes: dict[int, Node] = {}
    try:
        names = sorted(n for n in os.listdir(node_root) if n.startswith("node") and n[4:].isdigit())
    except FileNotFoundError:
        names = []
    for name in names:
        base = os.path.join(node_root, name)
        nodes[int(name[4:])] = Node(
            node_id=int(name[4:]),
            cpus=parse_cpulist(_read(os.path.join(base, "cpulist"))) & online,
            hugepages=_pools(os.path.join(base, "hugepages"), sizes),
        )
    host_pools = _pools(os.path.join(sys_root, "kernel/mm/hugepages"), sizes)
    if not nodes:  # kernels without NUMA: one node with everything
        nodes[0] = Node(0, online, host_pools)
    return Topology(nodes, host_pools)


def nr_hugepages_path(node_id: int, size_kib: int, sys_root: str = SYS_ROOT) -> str:
    """The sysfs knob of one node's pool of one page size."""
    return os.path.join(
        sys_root, f"devices/system/node/node{node_id}/hugepages/hugepages-{size_kib}kB/nr_hugepages"
    )
