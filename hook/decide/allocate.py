"""Deciding what a container gets: request + config + topology + ledger -> reservation.

Pure: no I/O.  Runs under the ledger lock, so its view of the other reservations is exact.
Cores and memory come from one NUMA node whose own pool can back the memory; names and
paths are made here from the instance key, never taken from the user; the host policy
decides which bridges, VLANs, MACs and addresses a container may have.
"""

from __future__ import annotations

from dataclasses import dataclass

from hook.config import BridgePolicy, Config
from hook.constants import PREFIX
from hook.decide.links import lease_links
from hook.decide.names import default_mac, kernel_port_name, port_name, run_dir_path, server_socket_host_path
from hook.errors import AnnotationError, PolicyError, ResourceExhausted
from hook.host.topology import HugepagePool, Topology
from hook.model import (
    CONTAINER_RUN_DIR,
    MODE_CLIENT,
    MODE_SERVER,
    STATE_PENDING,
    Instance,
    KernelPortSpec,
    PortLease,
    Request,
    Reservation,
)
from hook.switch.base import client_socket_path
from hook.units import format_cpulist, format_size_kib

SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL
VHOST_KEY = PREFIX + "vhost-user"
KERNEL_KEY = PREFIX + "kernel-ports"


@dataclass(frozen=True)
class Decision:
    """A reservation, and how many pages its node's kernel pool must grow by to back it."""

    reservation: Reservation
    grow_pages: int = 0


def _free_cpus(config: Config, entries: dict[str, Reservation]) -> frozenset[int]:
    held = {cpu for res in entries.values() for cpu in res.cpus}
    return config.cpu_pool - config.reserved_cpus - held


def _pending_pages(entries: dict[str, Reservation], size_kib: int, node: int | None = None) -> int:
    """Pages of reservations that have not mounted their hugetlbfs yet: the kernel cannot see them."""
    return sum(
        res.hugepages_mib * 1024 // size_kib
        for res in entries.values()
        if res.state == STATE_PENDING and res.hugepage_size_kib == size_kib and (node is None or res.numa_node == node)
    )


def _node_shortfall(request: Request, config: Config, topo: Topology, entries: dict[str, Reservation], node: int) -> int:
    """Pages missing on ``node`` (and host-wide) for the request; 0 if its pools have them."""
    size_kib = request.hugepage_size_kib or config.hugepage_size_kib
    want_pages = request.hugepages_mib * 1024 // size_kib
    if not want_pages:
        return 0
    host_pool = topo.hugepages.get(size_kib, HugepagePool(0, 0))
    available = host_pool.unclaimed - _pending_pages(entries, size_kib)
    node_pool = topo.nodes[node].hugepages.get(size_kib)
    if node_pool is not None and len(topo.nodes) > 1:
        # Per-node pools know no reservations: subtract the pending ones placed on the node.
        available = min(available, node_pool.free - _pending_pages(entries, size_kib, node))
    return max(want_pages - max(available, 0), 0)


def _check_budget(request: Request, config: Config, topo: Topology, entries: dict[str, Reservation]) -> None:
    size_kib = request.hugepage_size_kib or config.hugepage_size_kib
    want_kib = request.hugepages_mib * 1024
    if not want_kib:
        return
    held_kib = sum(res.hugepages_mib * 1024 for res in entries.values())
    if held_kib + want_kib > config.hugepage_budget_kib:
        raise ResourceExhausted(
            resource="hugepage budget",
            wanted=format_size_kib(want_kib),
            available=format_size_kib(max(config.hugepage_budget_kib - held_kib, 0)),
        )
    if size_kib not in topo.hugepages:
        raise ResourceExhausted(
            resource=f"{format_size_kib(size_kib)} hugepages (the kernel has no such pool)", wanted=format_size_kib(want_kib), available="0"
        )


def _pick_node(request: Request, config: Config, topo: Topology, entries: dict[str, Reservation], free: frozenset[int]) -> tuple[int, int]:
    """(node, pages its pool must grow by): enough free cores and pages on one node."""
    if request.numa_node is not None:
        if request.numa_node not in topo.nodes:
            raise AnnotationError(
                key=PREFIX + "numa-node",
                reason=f"node {request.numa_node} does not exist (nodes: {', '.join(map(str, sorted(topo.nodes)))})",
            )
        candidates = [request.numa_node]
    else:
        # the node with the most free cores first: keeps room for big requests elsewhere
        candidates = sorted(topo.nodes, key=lambda n: (-len(free & topo.nodes[n].cpus), n))
    with_cores = [n for n in candidates if len(free & topo.nodes[n].cpus) >= request.cpus]
    if not with_cores:
        where = f"NUMA node {candidates[0]}" if len(candidates) == 1 else "any one NUMA node"
        best = max(len(free & topo.nodes[n].cpus) for n in candidates)
        raise ResourceExhausted(resource=f"free cores on {where} (pool {format_cpulist(config.cpu_pool)})", wanted=request.cpus, available=best)
    shortfalls = {n: _node_shortfall(request, config, topo, entries, n) for n in with_cores}
    for node in with_cores:
        if shortfalls[node] == 0:
            return node, 0
    size_kib = request.hugepage_size_kib or config.hugepage_size_kib
    node = min(with_cores, key=lambda n: (shortfalls[n], with_cores.index(n)))
    if not config.grow_pool:
        want_pages = request.hugepages_mib * 1024 // size_kib
        where = f"NUMA node {node}" if len(topo.nodes) > 1 else "the host"
        raise ResourceExhausted(
            resource=f"free {format_size_kib(size_kib)} hugepages on {where} (growing the pool is off)",
            wanted=want_pages,
            available=want_pages - shortfalls[node],
        )
    return node, shortfalls[node]


def _kubelet_choice(request: Request, config: Config, topo: Topology, entries: dict[str, Reservation]) -> tuple[int, list[int], int]:
    """(node, cores, pages to grow) when kubelet chose the cores: check them, never pick others.

    kubelet's admission is the authority on the hugepage budget; the kernel pool must still
    hold the memory, and no other container of the ledger may hold one of the cores.
    """
    cpus = sorted(request.kubelet_cpus)
    reserved = [cpu for cpu in cpus if cpu in config.reserved_cpus]
    if reserved:
        raise ResourceExhausted(resource=f"exclusive cores: kubelet gave {format_cpulist(cpus)} but {format_cpulist(reserved)} is reserved "
                                         "on this host (cpus.reserved, e.g. the switch's PMD): add it to kubelet's reservedSystemCPUs",
                                wanted=len(cpus), available=len(cpus) - len(reserved))
    held = {cpu: res.container_id for res in entries.values() for cpu in res.cpus}
    clash = [cpu for cpu in cpus if cpu in held]
    if clash:
        raise ResourceExhausted(
            resource=f"exclusive cores: kubelet gave {format_cpulist(cpus)} but {format_cpulist(clash)} is held by container {held[clash[0]]!r}",
            wanted=len(cpus), available=len(cpus) - len(clash),
        )
    nodes = {n for n, node in topo.nodes.items() if node.cpus & set(cpus)} or {min(topo.nodes)}
    if len(nodes) > 1:
        raise ResourceExhausted(resource=f"cores on one NUMA node (kubelet gave {format_cpulist(cpus)}: set the topology manager to single-numa-node)",
                                wanted=len(cpus), available=0)
    node = nodes.pop()
    grow = _node_shortfall(request, config, topo, entries, node)
    if grow and not config.grow_pool:
        size_kib = request.hugepage_size_kib or config.hugepage_size_kib
        raise ResourceExhausted(resource=f"free {format_size_kib(size_kib)} hugepages on node {node} (growing the pool is off)",
                                wanted=request.hugepages_mib * 1024 // size_kib, available=request.hugepages_mib * 1024 // size_kib - grow)
    return node, cpus, grow


def _policy_of(config: Config, bridge: str, key: str, where: str) -> BridgePolicy:
    policy = config.bridge_policy(bridge)
    if policy is None:
        offered = ", ".join(p.name for p in config.policy) or config.switch.bridge
        raise PolicyError(key=key, reason=f"{where}: bridge {bridge} is not offered to containers", rule=f"bridges {offered}")
    return policy


def _check_vlan(policy: BridgePolicy, vlan: int | None, key: str, where: str) -> None:
    if vlan is None:
        if policy.vlan_required:
            raise PolicyError(key=key, reason=f"{where}: bridge {policy.name} needs a vlan", rule=f"bridge {policy.name} vlan_required")
    elif vlan not in policy.vlans:
        allowed = format_cpulist(policy.vlans) or "none"
        raise PolicyError(key=key, reason=f"{where}: vlan {vlan} is not allowed on bridge {policy.name}", rule=f"bridge {policy.name} vlans {allowed}")


def _check_mac(policy: BridgePolicy, mac: str | None, held: dict[tuple[str, str], str], key: str, where: str) -> None:
    if mac is None:
        return
    if not policy.allow_mac:
        raise PolicyError(key=key, reason=f"{where}: containers may not choose a MAC on bridge {policy.name}", rule=f"bridge {policy.name} allow_mac false")
    if (policy.name, mac) in held:
        raise PolicyError(key=key, reason=f"{where}: mac {mac} is already used on bridge {policy.name}", rule="a MAC is unique on its bridge")


def _held_macs(entries: dict[str, Reservation]) -> dict[tuple[str, str], str]:
    held = {(p.bridge, p.mac): k for k, res in entries.items() for p in res.ports if not p.static}
    held.update({(kp.bridge, kp.mac): k for k, res in entries.items() for kp in res.kernel_ports if kp.mac})
    return held


def _ports(request: Request, config: Config, entries: dict[str, Reservation], instance: Instance, key: str) -> list[PortLease]:
    static = config.switch.backend == "static"
    leased = {p.socket_host_path for res in entries.values() for p in res.ports}
    free_static = [s for s in config.switch.static_sockets if s not in leased]
    if static and len(request.ports) > len(free_static):
        raise ResourceExhausted(resource="free static vhost-user sockets", wanted=len(request.ports), available=len(free_static))
    names_held = {p.name: k for k, res in entries.items() for p in res.ports}
    macs_held = _held_macs(entries)
    leases: list[PortLease] = []
    for index, want in enumerate(request.ports):
        where = f"port {index}"
        mode = want.mode or (MODE_CLIENT if static else MODE_SERVER)
        if static and mode != MODE_CLIENT:
            raise AnnotationError(key=VHOST_KEY, reason=f"{where}: the static backend offers only client-mode sockets")
        bridge = want.bridge or config.switch.bridge
        if not static:
            policy = _policy_of(config, bridge, VHOST_KEY, where)
            _check_vlan(policy, want.vlan, VHOST_KEY, where)
            _check_mac(policy, want.mac, macs_held, VHOST_KEY, where)
        name = port_name(key, index)
        if name in names_held:  # a random-prefix collision: astronomically rare, still refused
            raise ResourceExhausted(resource=f"port name {name} (held by another container)", wanted=1, available=0)
        if static:
            host_path = free_static[index]
        elif mode == MODE_CLIENT:
            host_path = client_socket_path(config.switch, name)
        else:
            host_path = server_socket_host_path(config.state_dir, key, index)
        if len(host_path.encode()) > SUN_PATH_MAX:
            raise ResourceExhausted(
                resource=f"room in a socket path ({host_path} is over {SUN_PATH_MAX} bytes)", wanted=len(host_path.encode()), available=SUN_PATH_MAX
            )
        mac = want.mac or default_mac(key, index)
        macs_held[(bridge, mac)] = key
        leases.append(
            PortLease(
                index=index,
                name=name,
                mode=mode,
                bridge=bridge,
                socket_host_path=host_path,
                container_path=f"{CONTAINER_RUN_DIR}/net{index}.sock",
                mac=mac,
                queues=want.queues,
                mtu=want.mtu,
                vlan=want.vlan,
                static=static,
            )
        )
    return leases


def _kernel_ports(request: Request, config: Config, entries: dict[str, Reservation], key: str, macs_held: dict[tuple[str, str], str]) -> list[KernelPortSpec]:
    if request.kernel_ports and config.switch.backend != "ovs":
        raise AnnotationError(key=KERNEL_KEY, reason="kernel ports need the ovs switch backend")
    names_held = {k.host_name for res in entries.values() for k in res.kernel_ports}
    ips_held = {(k.bridge, a.split("/")[0]) for res in entries.values() for k in res.kernel_ports for a in k.addresses}
    specs = []
    for index, want in enumerate(request.kernel_ports):
        where = f"port {index}"
        bridge = want.bridge or config.switch.bridge
        policy = _policy_of(config, bridge, KERNEL_KEY, where)
        _check_mac(policy, want.mac, macs_held, KERNEL_KEY, where)
        if want.addresses and not policy.allow_addresses:
            raise PolicyError(
                key=KERNEL_KEY, reason=f"{where}: containers may not choose addresses on bridge {bridge}", rule=f"bridge {bridge} allow_addresses false"
            )
        for address in want.addresses:
            if (bridge, address.split("/")[0]) in ips_held:
                reason = f"{where}: address {address} is already used on bridge {bridge}"
                raise PolicyError(key=KERNEL_KEY, reason=reason, rule="an address is unique on its bridge")
        name = kernel_port_name(key, index)
        if name in names_held:
            raise ResourceExhausted(resource=f"port name {name} (held by another container)", wanted=1, available=0)
        mac = want.mac or default_mac(key, f"k{index}")
        macs_held[(bridge, mac)] = key
        specs.append(
            KernelPortSpec(
                index=index,
                host_name=name,
                ifname=want.name,
                bridge=bridge,
                mac=mac,
                mtu=want.mtu,
                addresses=want.addresses,
                routes=want.routes,
            )
        )
    return specs


def allocate(
    request: Request,
    config: Config,
    topo: Topology,
    entries: dict[str, Reservation],
    instance: Instance,
    key: str,
    now: float,
) -> Decision:
    """Choose cores, memory, port names and paths for one instance, or raise why not.

    ``entries`` are all other reservations (the ledger under its lock); ``key`` is the new
    instance's random key.
    """
    others = {k: res for k, res in entries.items() if k != key}
    ports = _ports(request, config, others, instance, key)
    macs_held = _held_macs(others)
    macs_held.update({(p.bridge, p.mac): key for p in ports})
    kernel_ports = _kernel_ports(request, config, others, key, macs_held)
    links = lease_links(request, config, others, key, first_index=len(ports))
    if request.kubelet:
        node, cpus, grow = _kubelet_choice(request, config, topo, others)
    else:
        _check_budget(request, config, topo, others)
        free = _free_cpus(config, others)
        node, grow = _pick_node(request, config, topo, others, free)
        cpus = sorted(free & topo.nodes[node].cpus)[: request.cpus]
    reservation = Reservation(
        key=key,
        container_id=instance.container_id,
        bundle=instance.bundle,
        state=STATE_PENDING,
        backend=config.switch.backend,
        numa_node=node,
        cpus=cpus,
        hugepage_size_kib=request.hugepage_size_kib or config.hugepage_size_kib,
        hugepages_mib=request.hugepages_mib,
        ports=ports,
        pid=instance.pid,
        pid_start=instance.pid_start,
        grown_pages=grow,
        created=now,
        kernel_ports=kernel_ports,
        sandbox=request.sandbox,
        run_dir=run_dir_path(config.state_dir, key),
        kubelet=request.kubelet,
        links=links,
    )
    return Decision(reservation, grow)
