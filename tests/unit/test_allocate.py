"""Allocation decides cores, memory and names from plain values."""

from __future__ import annotations

import pytest

from hook.config import BridgePolicy, Config, SwitchConfig
from hook.decide.allocate import allocate
from hook.decide.names import port_name
from hook.errors import AnnotationError, PolicyError, ResourceExhausted
from hook.host.topology import HugepagePool, Node, Topology
from hook.model import Instance, KernelPortRequest, PortRequest, Request

TWO_NODES = Topology(
    nodes={
        0: Node(0, frozenset({0, 1, 2, 3})),
        1: Node(1, frozenset({4, 5, 6, 7})),
    },
    hugepages={2048: HugepagePool(total=512, free=512), 1048576: HugepagePool(total=0, free=0)},
)
CFG = Config(cpu_pool=frozenset(range(1, 8)), reserved_cpus=frozenset({4}), hugepage_budget_kib=1 << 20, state_dir="/run/h")


def take(request: Request, entries: dict | None = None, cfg: Config = CFG, topo: Topology = TWO_NODES, cid: str = "c1", pid: int = 4242):
    """Allocate for container ``cid``; its instance key is ``cid`` itself, so entries read {"a": first}."""
    return allocate(request, cfg, topo, entries if entries is not None else {}, Instance(cid, f"/b/{cid}", pid, 7), cid, 1.0)


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
    """Port names fit 15 chars; server sockets are in the instance's run dir on the host, client ones in OVS's rundir."""
    two = Config(**{**CFG.__dict__, "policy": (BridgePolicy("br-dpdk"), BridgePolicy("br9"))})
    r = take(Request(ports=(PortRequest(), PortRequest(mode="client", bridge="br9", mac="02:00:00:00:00:09")), hugepages_mib=64), cfg=two).reservation
    a, b = r.ports
    assert a.name == port_name("c1", 0) and len(a.name) <= 15 and a.name != b.name
    assert a.mode == "server" and a.socket_host_path == "/run/h/run/c1/net0.sock" == f"{r.run_dir}/net0.sock" and a.bridge == "br-dpdk"
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
    """An OVS rundir so long that a client socket path would overflow sun_path is refused."""
    cfg = Config(cpu_pool=frozenset({1}), switch=SwitchConfig(ovs_rundir="/" + "x" * 100))
    with pytest.raises(ResourceExhausted, match="socket path"):
        take(Request(ports=(PortRequest(mode="client"),), hugepages_mib=64), cfg=cfg)


def test_kernel_ports_get_host_names_and_macs() -> None:
    """Kernel ports get a 15-char host end name, the default bridge and a MAC distinct from the vhost ports'."""
    r = take(Request(ports=(PortRequest(),), hugepages_mib=64, kernel_ports=(KernelPortRequest(name="eth1", addresses=("10.0.0.2/24",)),))).reservation
    (k,) = r.kernel_ports
    assert k.host_name.startswith("dpv") and len(k.host_name) <= 15 and k.ifname == "eth1" and k.bridge == "br-dpdk"
    assert k.mac and k.mac != r.ports[0].mac and k.addresses == ("10.0.0.2/24",)
    static = Config(cpu_pool=frozenset({1}), switch=SwitchConfig(backend="static", static_sockets=("/s/a.sock",)))
    with pytest.raises(AnnotationError, match="need the ovs switch backend"):
        take(Request(kernel_ports=(KernelPortRequest(name="eth1"),)), cfg=static)


def test_names_derive_from_the_instance_key_not_the_container_id() -> None:
    """Two same-id containers (two runtime roots) get different names; nothing is derivable from the id."""
    one = allocate(Request(ports=(PortRequest(),), hugepages_mib=64, cpus=1), CFG, TWO_NODES, {}, Instance("dup", "/b/1", 10, 1), "k1k1k1k1k1k1k1k1", 1.0)
    res = one.reservation
    two = allocate(Request(ports=(PortRequest(),), hugepages_mib=64, cpus=1), CFG, TWO_NODES, {res.key: res}, Instance("dup", "/b/2", 11, 1),
                   "k2k2k2k2k2k2k2k2", 1.0).reservation
    assert res.ports[0].name != two.ports[0].name and not set(res.cpus) & set(two.cpus)
    assert "dup" not in res.ports[0].name and res.ports[0].name.startswith("dpkk1k1")


POLICY = Config(**{**CFG.__dict__, "policy": (BridgePolicy("br-dpdk", vlans=frozenset(range(100, 200))), BridgePolicy("br-t", vlan_required=True,
                                                                                                               vlans=frozenset({5}), allow_mac=False,
                                                                                                               allow_addresses=False))})


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (Request(ports=(PortRequest(bridge="br-x"),), hugepages_mib=2), "bridge br-x is not offered.*host policy: bridges br-dpdk, br-t"),
        (Request(ports=(PortRequest(vlan=7),), hugepages_mib=2), "vlan 7 is not allowed on bridge br-dpdk.*vlans 100-199"),
        (Request(ports=(PortRequest(bridge="br-t"),), hugepages_mib=2), "bridge br-t needs a vlan.*vlan_required"),
        (Request(ports=(PortRequest(bridge="br-t", vlan=5, mac="02:00:00:00:00:05"),), hugepages_mib=2), "may not choose a MAC.*allow_mac false"),
        (Request(kernel_ports=(KernelPortRequest(name="e", bridge="br-t", addresses=("10.0.0.2/24",)),)), "may not choose addresses.*allow_addresses"),
        (Request(kernel_ports=(KernelPortRequest(name="e", bridge="br-y"),)), "bridge br-y is not offered"),
    ],
)
def test_the_host_policy_refuses_with_the_rule(request_: Request, match: str) -> None:
    """Each refusal names the policy rule; nothing else is decided."""
    with pytest.raises(PolicyError, match=match) as err:
        take(request_, cfg=POLICY)
    assert err.value.exit_code == 2


def test_policy_allows_what_it_offers_and_macs_and_addresses_stay_unique() -> None:
    first = take(Request(ports=(PortRequest(vlan=150, mac="02:00:00:00:00:aa"),), hugepages_mib=2,
                         kernel_ports=(KernelPortRequest(name="e", addresses=("10.0.0.2/24",)),)), cfg=POLICY, cid="a").reservation
    assert first.ports[0].vlan == 150
    with pytest.raises(PolicyError, match="mac 02:00:00:00:00:aa is already used on bridge br-dpdk"):
        take(Request(ports=(PortRequest(mac="02:00:00:00:00:aa"),), hugepages_mib=2), {"a": first}, cfg=POLICY, cid="b")
    with pytest.raises(PolicyError, match="address 10.0.0.2/16 is already used"):
        take(Request(kernel_ports=(KernelPortRequest(name="e", addresses=("10.0.0.2/16",)),)), {"a": first}, cfg=POLICY, cid="b")


def test_memory_comes_from_a_node_whose_own_pool_has_it() -> None:
    """On a two-socket host the node with free cores but no pages is not picked."""
    topo = Topology(
        nodes={0: Node(0, frozenset({0, 1, 2, 3}), {2048: HugepagePool(total=0, free=0)}),
               1: Node(1, frozenset({4, 5, 6, 7}), {2048: HugepagePool(total=256, free=256)})},
        hugepages={2048: HugepagePool(total=256, free=256)},
    )
    d = take(Request(cpus=1, hugepages_mib=64, hugepage_size_kib=2048), topo=topo)
    assert d.reservation.numa_node == 1 and d.reservation.cpus == [5] and d.grow_pages == 0
    with pytest.raises(ResourceExhausted, match="on NUMA node 0"):
        take(Request(cpus=1, hugepages_mib=64, hugepage_size_kib=2048, numa_node=0), topo=topo)
    grow = Config(**{**CFG.__dict__, "grow_pool": True})
    d = take(Request(cpus=1, hugepages_mib=64, hugepage_size_kib=2048, numa_node=0), topo=topo, cfg=grow)
    assert d.reservation.numa_node == 0 and d.grow_pages == 32


def test_kubelet_cores_are_recorded_never_picked() -> None:
    """Under Kubernetes the cores are kubelet's (even outside the hook's pool); a core another container holds is refused."""
    kube = Request(cpus=2, kubelet=True, kubelet_cpus=(6, 7), hugepages_mib=2048, hugepage_size_kib=2048, sandbox="sb1")
    big = Topology(TWO_NODES.nodes, {2048: HugepagePool(total=4096, free=4096)})
    r = take(kube, topo=big, cid="k").reservation
    assert r.cpus == [6, 7] and r.numa_node == 1 and r.kubelet and r.sandbox == "sb1"  # 2 GiB: over the hook's 1 GiB budget, kubelet's call
    with pytest.raises(ResourceExhausted, match="kubelet gave 7 but 7 is held by container .k."):
        take(Request(kubelet=True, kubelet_cpus=(7,)), {"k": r}, topo=big, cid="x")
    with pytest.raises(ResourceExhausted, match="single-numa-node"):
        take(Request(kubelet=True, kubelet_cpus=(3, 5)), topo=big, cid="y")
    with pytest.raises(ResourceExhausted, match="4 is reserved on this host"):
        take(Request(kubelet=True, kubelet_cpus=(4, 5)), topo=big, cid="z")
