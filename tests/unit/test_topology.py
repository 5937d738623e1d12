"""read_topology on a sysfs tree laid out like the kernel's: nodes, online CPUs, pools by size."""

from __future__ import annotations

from pathlib import Path

from hook.host.topology import HugepagePool, Node, Topology, read_topology


def _pool(base: Path, size_kib: int, nr: int, free: int, resv: int | None) -> None:
    pool = base / f"hugepages-{size_kib}kB"
    pool.mkdir(parents=True)
    for name, value in (("nr_hugepages", nr), ("free_hugepages", free), ("surplus_hugepages", 0), ("resv_hugepages", resv)):
        if value is not None:
            (pool / name).write_text(f"{value}\n")


def _sysfs(root: Path) -> Path:
    (root / "devices/system/cpu").mkdir(parents=True)
    (root / "devices/system/cpu/online").write_text("0-3\n")
    for node, cpus in ((0, "0-1"), (1, "2-3")):
        base = root / f"devices/system/node/node{node}"
        base.mkdir(parents=True)
        (base / "cpulist").write_text(cpus + "\n")
        _pool(base / "hugepages", 2048, 100, 90, None)  # per-node pools have no resv_hugepages
        _pool(base / "hugepages", 1048576, 1, 1, None)
    _pool(root / "kernel/mm/hugepages", 2048, 200, 180, 8)
    _pool(root / "kernel/mm/hugepages", 1048576, 2, 2, 0)
    return root


def test_all_pools_by_default(tmp_path: Path) -> None:
    topo = read_topology(str(_sysfs(tmp_path)))
    assert topo.cpus == frozenset(range(4)) and topo.nodes[1].cpus == frozenset({2, 3})
    assert topo.hugepages == {2048: HugepagePool(200, 180, 0, 8), 1048576: HugepagePool(2, 2, 0, 0)}
    assert topo.nodes[0].hugepages[2048] == HugepagePool(100, 90, 0, 0)


def test_only_the_sizes_asked_for(tmp_path: Path) -> None:
    """A start reads its one page size under the ledger lock, or no pool when it asks for no memory."""
    root = str(_sysfs(tmp_path))
    node_pool = HugepagePool(100, 90, 0, 0)
    assert read_topology(root, sizes=(2048,)) == Topology(
        {0: Node(0, frozenset({0, 1}), {2048: node_pool}), 1: Node(1, frozenset({2, 3}), {2048: node_pool})},
        {2048: HugepagePool(200, 180, 0, 8)},
    )
    none = read_topology(root, sizes=())
    assert none.hugepages == {} and all(node.hugepages == {} for node in none.nodes.values()) and none.cpus == frozenset(range(4))
    assert read_topology(root, sizes=(64,)).hugepages == {}  # a size the kernel has no pool of
