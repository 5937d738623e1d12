"""Deciding what a container gets: request + config + topology + ledger -> reservation.

Pure: no I/O.  Runs under the ledger lock, so its view of the other reservations is exact.
Cores and memory come from one NUMA node; names and paths are made here, never taken from
the user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hook.config import Config
from hook.decide.names import default_mac, kernel_port_name, port_name, socket_dir
from hook.errors import AnnotationError, ResourceExhausted
from hook.host.topology import Topology
from hook.model import (
    CONTAINER_RUN_DIR,
    MODE_CLIENT,
    MODE_SERVER,
    STATE_PENDING,
    KernelPortSpec,
    PortLease,
    Request,
    Reservation,
)
from hook.switch.base import client_socket_path
from hook.units import format_cpulist, format_size_kib

SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Decision:
    """A reservation, and how many pages the kernel pool must grow by to back it."""

    reservation: Reservation
    grow_pages: int = 0


def _free_cpus(config: Config, entries: dict[str, Reservation], container_id: str) -> frozenset[int]:
    held = {cpu for cid, res in entries.items() if cid != container_id for cpu in res.cpus}
    return config.cpu_pool - config.reserved_cpus - held


def _pick_node(request: Request, config: Config, topo: Topology, free: frozenset[int]) -> int:
    if request.numa_node is not None:
        if request.numa_node not in topo.nodes:
            raise AnnotationError(
                key="dpdk-oci-hook/numa-node",
                reason=f"node {request.numa_node} does not exist (nodes: {', '.join(map(str, sorted(topo.nodes)))})",
            )
        candidates = [request.numa_node]
    else:
        # the node with the most free cores first: keeps room for big requests elsewhere
        candidates = sorted(topo.nodes, key=lambda n: (-len(free & topo.nodes[n].cpus), n))
    for node in candidates:
        if len(free & topo.nodes[node].cpus) >= request.cpus:
            return node
    where = f"NUMA node {candidates[0]}" if len(candidates) == 1 else "any one NUMA node"
    best = max(len(free & topo.nodes[n].cpus) for n in candidates)
    raise ResourceExhausted(resource=f"free cores on {where} (pool {format_cpulist(config.cpu_pool)})", wanted=request.cpus, available=best)


def _hugepage_shortfall(
    request: Request, config: Config, topo: Topology, entries: dict[str, Reservation], container_id: str
) -> int:
    """Pages the kernel pool lacks for this request (0 if it has them); enforces the budget."""
    size_kib = request.hugepage_size_kib or config.hugepage_size_kib
    want_kib = request.hugepages_mib * 1024
    if not want_kib:
        return 0
    others = [res for cid, res in entries.items() if cid != container_id]
    held_kib = sum(res.hugepages_mib * 1024 for res in others)
    if held_kib + want_kib > config.hugepage_budget_kib:
        raise ResourceExhausted(
            resource="hugepage budget",
            wanted=format_size_kib(want_kib),
            available=format_size_kib(max(config.hugepage_budget_kib - held_kib, 0)),
        )
    pool = topo.hugepages.get(size_kib)
    if pool is None:
        raise ResourceExhausted(
            resource=f"{format_size_kib(size_kib)} hugepages (the kernel has no such pool)", wanted=format_size_kib(want_kib), available="0"
        )
    # Pending reservations have not mounted their hugetlbfs yet, so the kernel does not
    # count them as reserved: subtract them here.
    pending_pages = sum(
        res.hugepages_mib * 1024 // size_kib
        for res in others
        if res.state == STATE_PENDING and res.hugepage_size_kib == size_kib
    )
    available = pool.unclaimed - pending_pages
    want_pages = want_kib // size_kib
    if available >= want_pages:
        return 0
    if not config.grow_pool:
        raise ResourceExhausted(
            resource=f"free {format_size_kib(size_kib)} hugepages (growing the pool is off)",
            wanted=want_pages,
            available=max(available, 0),
        )
    return want_pages - max(available, 0)


def _ports(request: Request, config: Config, entries: dict[str, Reservation], container_id: str, sock_dir: str) -> list[PortLease]:
    static = config.switch.backend == "static"
    leased = {p.socket_host_path for cid, res in entries.items() if cid != container_id for p in res.ports}
    free_static = [s for s in config.switch.static_sockets if s not in leased]
    if static and len(request.ports) > len(free_static):
        raise ResourceExhausted(resource="free static vhost-user sockets", wanted=len(request.ports), available=len(free_static))
    names_held = {p.name: cid for cid, res in entries.items() if cid != container_id for p in res.ports}
    leases: list[PortLease] = []
    for index, want in enumerate(request.ports):
        mode = want.mode or (MODE_CLIENT if static else MODE_SERVER)
        if static and mode != MODE_CLIENT:
            raise AnnotationError(key="dpdk-oci-hook/vhost-user", reason=f"port {index}: the static backend offers only client-mode sockets")
        name = port_name(container_id, index)
        if name in names_held:  # a hash prefix collision: astronomically rare, still refused
            raise ResourceExhausted(resource=f"port name {name} (held by {names_held[name]!r})", wanted=1, available=0)
        if static:
            host_path = free_static[index]
        elif mode == MODE_CLIENT:
            host_path = client_socket_path(config.switch, name)
        else:
            host_path = os.path.join(sock_dir, f"net{index}.sock")
        if len(host_path.encode()) > SUN_PATH_MAX:
            raise ResourceExhausted(
                resource=f"room in a socket path ({host_path} is over {SUN_PATH_MAX} bytes)", wanted=len(host_path.encode()), available=SUN_PATH_MAX
            )
        leases.append(
            PortLease(
                index=index,
                name=name,
                mode=mode,
                bridge=want.bridge or config.switch.bridge,
                socket_host_path=host_path,
                container_path=f"{CONTAINER_RUN_DIR}/net{index}.sock",
                mac=want.mac or default_mac(container_id, index),
                queues=want.queues,
                mtu=want.mtu,
                vlan=want.vlan,
                static=static,
            )
        )
    return leases


def _kernel_ports(request: Request, config: Config, entries: dict[str, Reservation], container_id: str) -> list[KernelPortSpec]:
    if request.kernel_ports and config.switch.backend != "ovs":
        raise AnnotationError(key="dpdk-oci-hook/kernel-ports", reason="kernel ports need the ovs switch backend")
    held = {k.host_name: cid for cid, res in entries.items() if cid != container_id for k in res.kernel_ports}
    specs = []
    for index, want in enumerate(request.kernel_ports):
        name = kernel_port_name(container_id, index)
        if name in held:
            raise ResourceExhausted(resource=f"port name {name} (held by {held[name]!r})", wanted=1, available=0)
        specs.append(
            KernelPortSpec(
                index=index,
                host_name=name,
                ifname=want.name,
                bridge=want.bridge or config.switch.bridge,
                mac=want.mac or default_mac(container_id, f"k{index}"),
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
    container_id: str,
    now: float,
) -> Decision:
    """Choose cores, memory, port names and paths for one container, or raise why not."""
    free = _free_cpus(config, entries, container_id)
    node = _pick_node(request, config, topo, free)
    cpus = sorted(free & topo.nodes[node].cpus)[: request.cpus]
    grow = _hugepage_shortfall(request, config, topo, entries, container_id)
    sock_dir = socket_dir(config, container_id)
    reservation = Reservation(
        container_id=container_id,
        state=STATE_PENDING,
        backend=config.switch.backend,
        numa_node=node,
        cpus=cpus,
        hugepage_size_kib=request.hugepage_size_kib or config.hugepage_size_kib,
        hugepages_mib=request.hugepages_mib,
        socket_dir=sock_dir,
        ports=_ports(request, config, entries, container_id, sock_dir),
        grown_pages=grow,
        created=now,
        kernel_ports=_kernel_ports(request, config, entries, container_id),
    )
    return Decision(reservation, grow)
