"""Allocation decides cores, memory and names from plain values."""

from __future__ import annotations

import pytest

from hook.config import Config, SwitchConfig
from hook.decide.allocate import allocate
from hook.decide.names import port_name
from hook.errors import AnnotationError, ResourceExhausted
from hook.host.topology import HugepagePool, Node, Topology
from hook.model import PortRequest, Request

TWO_NODES = Topology(
    nodes={
        0: Node(0, frozenset({0, 1, 2, 3})),
        1: Node(1, frozenset({4, 5, 6, 7})),
    },
    hugepages={2048: HugepagePool(total=512, free=512), 1048576: HugepagePool(total=0, free=0)},
)
CFG = Config(cpu_pool=frozenset(range(1, 8)), reserved_cpus=frozenset({4}), hugepage_budget_kib=1 << 20, state_dir="/run/h")


def take(request: Request, entries: dict | None = None, cfg: Config = CFG, topo: Topology = TWO_NODES, cid: str = "c1"):
    return allocate(request, cfg, topo, entries if entries is not None else {}, cid, 1.0)


def test_cores_come_from_one_node_and_skip_reserved() -> None:
    """Cores are the lowest free ones of one node; reserved and out-of-pool CPUs are never given."""
    d = take(Request(cpus=3))
    assert d.reservation.cpus == [1, 2, 3] and d.reservation.numa_node == 0
    d = take(Request(cpus=2, numa_node=1))
    assert d.reservation.cpus == [5, 6]
    first = take(Request(cpus=1), cid="a").reservation
    assert take(Request(cpus=3), {"a": first}).reservation.cpus == [5, 6, 7]  # node 0 has only 2 left


def test_held_cores_are_not_given_twice() -> None:
    """A second container gets other cores, and a third that does not fit is refused."""
    first = take(Request(cpus=3), cid="a").reservation
    second = take(Request(cpus=3), {"a": first}, cid="b").reservation
    assert not set(first.cpus) & set(second.cpus)
    with pytest.raises(ResourceExhausted, match="free cores"):
        take(Request(cpus=2), {"a": first, "b": second}, cid="c")


def test_budget_and_pool() -> None:
    """The hugepage budget caps the sum; a short kernel pool is refused unless growing is allowed."""
    first = take(Request(hugepages_mib=768, hugepage_size_kib=2048), cid="a").reservation
    with pytest.raises(ResourceExhausted, match="hugepage budget"):
        take(Request(hugepages_mib=512, hugepage_size_kib=2048), {"a": first}, cid="b")
    small = Topology(TWO_NODES.nodes, {2048: HugepagePool(total=64, free=64, reserved=32)})
    with pytest.raises(ResourceExhausted, match="growing the pool is off"):
        take(Request(hugepages_mib=128, hugepage_size_kib=2048), topo=small)
    grow = Config(**{**CFG.__dict__, "grow_pool": True})
    d = take(Request(hugepages_mib=128, hugepage_size_kib=2048), topo=small, cfg=grow)
    assert d.grow_pages == 64 - 32 and d.reservation.grown_pages == 32


def test_pending_reservations_count_against_the_pool() -> None:
    """Pages promised to a pending container (not yet mounted) are not promised again."""
    pool = Topology(TWO_NODES.nodes, {2048: HugepagePool(total=64, free=64)})
    first = take(Request(hugepages_mib=100, hugepage_size_kib=2048), topo=pool, cid="a").reservation
    assert first.state == "pending"
    with pytest.raises(ResourceExhausted, match="free 2Mi hugepages"):
        take(Request(hugepages_mib=100, hugepage_size_kib=2048), {"a": first}, topo=pool, cid="b")


def test_ports_get_hook_made_names_and_paths() -> None:
    """Port names fit 15 chars, server sockets live in the container's dir, client ones in OVS's rundir."""
    r = take(Request(ports=(PortRequest(), PortRequest(mode="client", bridge="br9", mac="02:00:00:00:00:09")), hugepages_mib=64)).reservation
    a, b = r.ports
    assert a.name == port_name("c1", 0) and len(a.name) <= 15 and a.name != b.name
    assert a.mode == "server" and a.socket_host_path == f"{r.socket_dir}/net0.sock" and a.bridge == "br-dpdk"
    assert r.socket_dir.startswith("/run/h/sockets/")
    assert b.mode == "client" and b.socket_host_path == f"/var/run/openvswitch/{b.name}" and b.bridge == "br9"
    assert b.mac == "02:00:00:00:00:09" and a.mac.startswith("02:")
    assert a.container_path == "/run/dpdk/net0.sock" and b.container_path == "/run/dpdk/net1.sock"


def test_static_backend_leases_free_sockets() -> None:
    """The static backend hands out configured sockets, one per port, never twice."""
    cfg = Config(cpu_pool=frozenset({1}), switch=SwitchConfig(backend="static", static_sockets=("/s/a.sock", "/s/b.sock")))
    one = take(Request(ports=(PortRequest(),), hugepages_mib=64), cfg=cfg, cid="a").reservation
    assert one.ports[0].mode == "client" and one.ports[0].socket_host_path == "/s/a.sock" and one.ports[0].static
    two = take(Request(ports=(PortRequest(),), hugepages_mib=64), {"a": one}, cfg=cfg, cid="b").reservation
    assert two.ports[0].socket_host_path == "/s/b.sock"
    with pytest.raises(ResourceExhausted, match="static vhost-user sockets"):
        take(Request(ports=(PortRequest(),), hugepages_mib=64), {"a": one, "b": two}, cfg=cfg, cid="c")
    with pytest.raises(AnnotationError, match="only client-mode"):
        take(Request(ports=(PortRequest(mode="server"),), hugepages_mib=64), cfg=cfg, cid="d")


def test_unknown_numa_node() -> None:
    """Asking for a node the host lacks is refused with the nodes it has."""
    with pytest.raises(AnnotationError, match="node 5 does not exist"):
        take(Request(cpus=1, numa_node=5))


def test_socket_path_length_is_checked() -> None:
    """A state dir so long that a socket path would overflow sun_path is refused."""
    cfg = Config(cpu_pool=frozenset({1}), state_dir="/" + "x" * 90)
    with pytest.raises(ResourceExhausted, match="socket path"):
        take(Request(ports=(PortRequest(),), hugepages_mib=64), cfg=cfg)


def test_kernel_ports_get_host_names_and_macs() -> None:
    """Kernel ports get a 15-char host end name, the default bridge and a MAC distinct from the vhost ports'."""
    from hook.model import KernelPortRequest

    r = take(Request(ports=(PortRequest(),), hugepages_mib=64, kernel_ports=(KernelPortRequest(name="eth1", addresses=("10.0.0.2/24",)),))).reservation
    (k,) = r.kernel_ports
    assert k.host_name.startswith("dpv") and len(k.host_name) <= 15 and k.ifname == "eth1" and k.bridge == "br-dpdk"
    assert k.mac and k.mac != r.ports[0].mac and k.addresses == ("10.0.0.2/24",)
    static = Config(cpu_pool=frozenset({1}), switch=SwitchConfig(backend="static", static_sockets=("/s/a.sock",)))
    with pytest.raises(AnnotationError, match="need the ovs switch backend"):
        take(Request(kernel_ports=(KernelPortRequest(name="eth1"),)), cfg=static)
