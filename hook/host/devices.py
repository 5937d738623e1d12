"""The host's devices as udev enumerates them: CPUs, NUMA nodes with their hugepages, network devices.

For ``doctor``, off the hot path: ``pyudev`` walks sysfs through libudev (no udev daemon is
needed for enumeration).  The hook itself reads the few sysfs files it needs directly
(``hook.host.topology``), because importing pyudev and loading libudev would cost every
container start; ``doctor`` cross-checks the two views.

Network devices are the PCI functions of the network class (``0x02xxxx``), whatever driver
holds them: a NIC bound to ``vfio-pci`` for DPDK has no kernel interface, so listing the
``net`` subsystem alone would miss exactly the ones DPDK uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyudev

from hook.units import parse_cpulist

NETWORK_CLASS_PREFIX = "0x02"  # PCI base class 02h: network controller
VFIO_DRIVER = "vfio-pci"
HUGEPAGES_ATTR_PREFIX = "hugepages/hugepages-"


@dataclass(frozen=True)
class Cpu:
    """One logical CPU: ``online`` (a CPU without an ``online`` file, like cpu0, cannot go offline)."""

    cpu_id: int
    online: bool
    node: int | None
    core_id: int | None = None
    package_id: int | None = None


@dataclass(frozen=True)
class HugepageCount:
    """One page size of one node's pool, in pages."""

    total: int
    free: int


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs (as the node lists them) and its hugepage pools by page size in KiB."""

    node_id: int
    cpus: frozenset[int]
    hugepages: dict[int, HugepageCount] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkDevice:
    """One PCI network function: where it is, who drives it, and its kernel interfaces if any."""

    pci_address: str
    driver: str | None
    numa_node: int | None  # None: the platform reports no NUMA affinity (-1)
    vendor: str | None
    device: str | None
    interfaces: tuple[str, ...] = ()

    @property
    def vfio(self) -> bool:
        """Bound to vfio-pci: ready for a DPDK app, invisible to the kernel's network stack."""
        return self.driver == VFIO_DRIVER


@dataclass(frozen=True)
class HostDevices:
    cpus: tuple[Cpu, ...]
    nodes: tuple[NumaNode, ...]
    network: tuple[NetworkDevice, ...]

    @property
    def online_cpus(self) -> frozenset[int]:
        return frozenset(c.cpu_id for c in self.cpus if c.online)


def _attr(device: pyudev.Device, name: str) -> str | None:
    """A sysfs attribute as stripped text, or None when the device has none by that name."""
    try:
        value = device.attributes.get(name)
    except (OSError, UnicodeDecodeError):
        return None
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.strip()


def _int_attr(device: pyudev.Device, name: str) -> int | None:
    text = _attr(device, name)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _number(sys_name: str, prefix: str) -> int | None:
    rest = sys_name[len(prefix):]
    return int(rest) if sys_name.startswith(prefix) and rest.isdigit() else None


def _cpus(context: pyudev.Context, node_of: dict[int, int]) -> tuple[Cpu, ...]:
    found = []
    for device in context.list_devices(subsystem="cpu"):
        cpu_id = _number(device.sys_name, "cpu")
        if cpu_id is None:
            continue
        online = _attr(device, "online")
        found.append(Cpu(
            cpu_id=cpu_id,
            online=online != "0",
            node=node_of.get(cpu_id),
            core_id=_int_attr(device, "topology/core_id"),
            package_id=_int_attr(device, "topology/physical_package_id"),
        ))
    return tuple(sorted(found, key=lambda c: c.cpu_id))


def _hugepages(device: pyudev.Device) -> dict[int, HugepageCount]:
    sizes = set()
    for name in device.attributes.available_attributes:
        if name.startswith(HUGEPAGES_ATTR_PREFIX) and name.endswith("/nr_hugepages"):
            size = name[len(HUGEPAGES_ATTR_PREFIX):-len("/nr_hugepages")]
            if size.endswith("kB") and size[:-2].isdigit():
                sizes.add(int(size[:-2]))
    pools = {}
    for size_kib in sorted(sizes):
        base = f"{HUGEPAGES_ATTR_PREFIX}{size_kib}kB/"
        pools[size_kib] = HugepageCount(total=_int_attr(device, base + "nr_hugepages") or 0, free=_int_attr(device, base + "free_hugepages") or 0)
    return pools


def _nodes(context: pyudev.Context) -> tuple[NumaNode, ...]:
    found = []
    for device in context.list_devices(subsystem="node"):
        node_id = _number(device.sys_name, "node")
        if node_id is None:
            continue
        found.append(NumaNode(node_id, parse_cpulist(_attr(device, "cpulist") or ""), _hugepages(device)))
    return tuple(sorted(found, key=lambda n: n.node_id))


def _network(context: pyudev.Context) -> tuple[NetworkDevice, ...]:
    interfaces: dict[str, list[str]] = {}
    for net in context.list_devices(subsystem="net"):
        parent = net.find_parent("pci")
        if parent is not None:
            interfaces.setdefault(parent.sys_name, []).append(net.sys_name)
    found = []
    for device in context.list_devices(subsystem="pci"):
        if not (_attr(device, "class") or "").startswith(NETWORK_CLASS_PREFIX):
            continue
        numa = _int_attr(device, "numa_node")
        found.append(NetworkDevice(
            pci_address=device.sys_name,
            driver=device.driver,
            numa_node=numa if numa is not None and numa >= 0 else None,
            vendor=_attr(device, "vendor"),
            device=_attr(device, "device"),
            interfaces=tuple(sorted(interfaces.get(device.sys_name, []))),
        ))
    return tuple(sorted(found, key=lambda d: d.pci_address))


def enumerate_devices(context: pyudev.Context | None = None) -> HostDevices:
    """CPUs, NUMA nodes and PCI network devices of this host, through udev."""
    context = context or pyudev.Context()
    nodes = _nodes(context)
    node_of = {cpu: node.node_id for node in nodes for cpu in node.cpus}
    return HostDevices(cpus=_cpus(context, node_of), nodes=nodes, network=_network(context))
