"""Plain values that flow through the hook: request -> reservation -> plan.

Nothing here does I/O.  A :class:`Reservation` is also what the ledger stores, so it
round-trips through :meth:`Reservation.to_dict` / :meth:`Reservation.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

_T = TypeVar("_T")
MODE_SERVER = "server"  # the app creates the socket (OVS dpdkvhostuserclient)
MODE_CLIENT = "client"  # the host creates the socket (OVS dpdkvhostuser, static sockets)
MODES = (MODE_SERVER, MODE_CLIENT)

# A direct link between two containers: the first to start takes the server side, the
# second joins as client; the transport is memif (default) or a virtio_user/vhost-user pair.
LINK_MEMIF = "memif"
LINK_VIRTIO = "virtio"
LINK_MODES = (LINK_MEMIF, LINK_VIRTIO)

STATE_PENDING = "pending"
STATE_ACTIVE = "active"
STATE_RELEASING = "releasing"
STATES = (STATE_PENDING, STATE_ACTIVE, STATE_RELEASING)

CONTAINER_RUN_DIR = "/run/dpdk"
CONTAINER_HUGE_DIR = "/dev/hugepages"
COMPAT_SOCKET_PATH = "/var/run/usvhost"


@dataclass(frozen=True)
class PortRequest:
    """One vhost-user port as the user asked for it."""

    mode: str | None = None  # None: the backend's default (ovs: server, static: client)
    bridge: str | None = None
    queues: int = 1
    mac: str | None = None
    mtu: int | None = None
    vlan: int | None = None


@dataclass(frozen=True)
class KernelPortRequest:
    """One kernel port as the user asked for it (validated, normalised)."""

    name: str  # interface name inside the container
    mac: str | None = None
    mtu: int | None = None
    addresses: tuple[str, ...] = ()  # "10.0.0.2/24", "fd00::2/64" (normalised)
    routes: tuple[tuple[str, str], ...] = ()  # (destination network or "default", gateway)
    bridge: str | None = None


@dataclass(frozen=True)
class KernelPortSpec:
    """One kernel port to create: everything decided, names made by the hook."""

    index: int
    host_name: str  # host end of the veth, <= 15 characters, e.g. dpv5e1a9c2b0k0
    ifname: str  # container end, e.g. eth1
    bridge: str
    mac: str | None = None  # None: the kernel picks a random one
    mtu: int | None = None  # None: the kernel's default (1500)
    addresses: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "host_name": self.host_name,
            "ifname": self.ifname,
            "bridge": self.bridge,
            "mac": self.mac,
            "mtu": self.mtu,
            "addresses": list(self.addresses),
            "routes": [list(r) for r in self.routes],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> KernelPortSpec:
        data = dict(raw)
        data["addresses"] = tuple(data.get("addresses", ()))
        data["routes"] = tuple((str(dst), str(via)) for dst, via in data.get("routes", ()))
        return cls(**data)


@dataclass(frozen=True)
class LinkRequest:
    """One direct link as the user asked for it: a name the peer container names too."""

    name: str
    queues: int = 1
    mac: str | None = None
    mode: str = LINK_MEMIF


@dataclass(frozen=True)
class LinkLease:
    """One side of a direct link given to a container: its DPDK port and the link's rendezvous."""

    index: int  # DPDK port index in the container (after its vhost-user ports)
    name: str  # the link's name, as both containers give it
    link_id: str  # host-side id: from the installation scope, the pod (or the allowed name) and the name
    role: str  # MODE_SERVER (first to start: creates the socket) or MODE_CLIENT (joins it)
    mode: str  # LINK_MEMIF or LINK_VIRTIO
    host_dir: str  # the link's directory on the host (a small tmpfs shared by both sides)
    container_dir: str  # where both sides see it, e.g. /run/dpdk/link-<name>
    mac: str
    queues: int = 1
    peer: str = ""  # the container id of the other side when this one joined ("" if none yet)


@dataclass(frozen=True)
class Request:
    """What a container asks for, validated from its annotations."""

    ports: tuple[PortRequest, ...] = ()
    cpus: int = 0
    hugepages_mib: int = 0
    hugepage_size_kib: int | None = None
    numa_node: int | None = None
    kernel_ports: tuple[KernelPortRequest, ...] = ()
    # Kubernetes: kubelet already chose the cores (its CPU manager) and accounted the memory
    # (hugepage limits); the hook records them and never picks others.
    kubelet_cpus: tuple[int, ...] = ()
    kubelet: bool = False
    sandbox: str = ""  # the pod's sandbox id, for links between containers of one pod
    links: tuple[LinkRequest, ...] = ()


@dataclass(frozen=True)
class PortLease:
    """One port given to a container: names and paths made by the hook."""

    index: int
    name: str  # switch-side port name (OVS interface name)
    mode: str
    bridge: str
    socket_host_path: str  # where the socket lives on the host
    container_path: str  # where the app finds it
    mac: str
    queues: int = 1
    mtu: int | None = None
    vlan: int | None = None
    static: bool = False  # a pre-made socket leased from the static backend


@dataclass(frozen=True)
class Instance:
    """One container instance on this host: ids are unique only per runtime root or namespace.

    The pid and its start time name the instance's init process for good; the bundle tells
    two same-id containers apart once their processes are gone (poststop has no pid).
    """

    container_id: str
    bundle: str
    pid: int | None = None
    pid_start: int | None = None


@dataclass
class Reservation:
    """Everything one container instance holds; one ledger entry, keyed by ``key``."""

    key: str  # host-unique and random: names and paths derive from it, never from the container id
    container_id: str
    state: str
    backend: str
    numa_node: int
    cpus: list[int]
    hugepage_size_kib: int
    hugepages_mib: int
    bundle: str = ""
    ports: list[PortLease] = field(default_factory=list)
    pid: int | None = None
    pid_start: int | None = None
    grown_pages: int = 0  # pages the node's kernel pool grows by for it (recorded before growing)
    grow_from: int | None = None  # the pool's size before it grew
    grow_done: bool = False  # the growth happened (saved right after the kernel took it)
    created: float = 0.0
    kernel_ports: list[KernelPortSpec] = field(default_factory=list)
    uid: int = 0  # host uid/gid owning what the hook made for it (mapped through user namespaces)
    gid: int = 0
    sandbox: str = ""  # Kubernetes: the pod's sandbox id
    run_dir: str = ""  # the host directory bound at the container's /run/dpdk (hook.host.run_dirs)
    kubelet: bool = False  # cores and memory were kubelet's choice
    links: list[LinkLease] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # the cpuset cgroup directories its pinning writes

    @property
    def instance(self) -> Instance:
        return Instance(self.container_id, self.bundle, self.pid, self.pid_start)

    def to_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every value, and the ledger converts every
        # entry under its lock (asdict was ~0.3 ms per entry)
        raw = {name: getattr(self, name) for name in _RESERVATION_FIELDS}
        raw["cpus"] = list(self.cpus)
        raw["cgroups"] = list(self.cgroups)
        raw["ports"] = [dict(vars(port)) for port in self.ports]
        raw["kernel_ports"] = [k.to_dict() for k in self.kernel_ports]
        raw["links"] = [dict(vars(link)) for link in self.links]
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Reservation:
        data = dict(raw)
        data.pop("socket_dir", None)  # ledger format 1
        data["ports"] = [_build(PortLease, _PORT_LEASE_FIELDS, p) for p in data.get("ports", [])]
        data["kernel_ports"] = [KernelPortSpec.from_dict(k) for k in data.get("kernel_ports", [])]
        data["links"] = [_build(LinkLease, _LINK_LEASE_FIELDS, link) for link in data.get("links", [])]
        return _build(cls, _RESERVATION_FIELD_SET, data)


def _build(cls: type[_T], names: frozenset[str], raw: dict[str, Any]) -> _T:
    """``cls(**raw)``, without its ``__init__`` when ``raw`` holds exactly its fields.

    The ledger builds every entry under its lock, and a dataclass's ``__init__`` (a frozen
    one's most of all) was ~10 µs per entry; a record written whole by ``to_dict`` needs no
    defaults, and anything else (an older record, an unknown field) takes ``__init__``.
    """
    if raw.keys() != names:
        return cls(**raw)
    obj = object.__new__(cls)
    obj.__dict__.update(raw)
    return obj


_RESERVATION_FIELDS = tuple(f.name for f in fields(Reservation))
_RESERVATION_FIELD_SET = frozenset(_RESERVATION_FIELDS)
_PORT_LEASE_FIELDS = frozenset(f.name for f in fields(PortLease))
_LINK_LEASE_FIELDS = frozenset(f.name for f in fields(LinkLease))


@dataclass(frozen=True)
class Mount:
    """One mount to make inside the container, target relative to its rootfs."""

    kind: str  # "bind", "hugetlbfs" or "tree" (a clone of a host mount: source is its host path)
    target: str  # absolute path inside the container
    source: str = ""  # host path for binds
    options: str = ""  # data string for hugetlbfs
    file: bool = False  # target is a file (socket) rather than a directory


@dataclass(frozen=True)
class Plan:
    """What apply must do for one container, all derived from its reservation."""

    reservation: Reservation
    mounts: tuple[Mount, ...]  # made before the switch is touched
    socket_mounts: tuple[Mount, ...]  # host-made sockets: they exist only after the switch step
    files: dict[str, str]  # file name inside the container's /run/dpdk -> content
    eal_args: tuple[str, ...]
    cpus: tuple[int, ...]
    mems: tuple[int, ...]
