"""``dpdk-oci-hook doctor``: is this host ready for DPDK containers?  One line per finding.

Reads only: the hugepage pool, mounts, the switch (one ovs-vsctl read each), the host's
CPUs, NUMA nodes and network devices as udev enumerates them (``hook.host.devices``), the
engine registrations and versions (each ``hook.admin.engines`` Engine checks its own) and the
ledger.  Every finding that is not ok or info says how to fix it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hook.admin import engines
from hook.admin.engines.base import ERROR, INFO, OK, WARN, binary_version, format_version, parse_version, run_read_only
from hook.units import format_cpulist, format_size_kib

if TYPE_CHECKING:
    from hook.host.devices import HostDevices

__all__ = ["ERROR", "INFO", "OK", "WARN", "Finding", "parse_version", "run_doctor", "main", "cmd_doctor"]

CHILD_TIMEOUT_S = 5
MIN_RUNC = (1, 0)  # createRuntime hooks
HUGETLBFS_MAGIC_TYPE = "hugetlbfs"


@dataclass(frozen=True)
class Finding:
    """One check's result: ``level`` is ok, info, warn or error; ``fix`` says what to do about it."""

    level: str
    what: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.level:5}] {self.what}"
        return f"{text} -- fix: {self.fix}" if self.fix else text


def _findings(checks: list[engines.Check]) -> list[Finding]:
    return [Finding(c.level, c.what, c.fix) for c in checks]


# --- checks ------------------------------------------------------------------------------


def check_hugepages(config: Any, sys_root: str = "/sys", mountinfo: str = "/proc/self/mountinfo") -> list[Finding]:
    size = config.hugepage_size_kib
    pool = os.path.join(sys_root, "kernel", "mm", "hugepages", f"hugepages-{size}kB")
    found: list[Finding] = []
    try:
        with open(os.path.join(pool, "nr_hugepages"), encoding="ascii") as fh:
            total = int(fh.read())
        with open(os.path.join(pool, "free_hugepages"), encoding="ascii") as fh:
            free = int(fh.read())
    except (OSError, ValueError):
        return [Finding(ERROR, f"no {size} KiB hugepage pool on this kernel ({pool})", "use hugepages.page_size = \"2Mi\" or boot with hugepagesz=")]
    budget_pages = config.hugepage_budget_kib // size
    what = f"hugepages: {total} pages of {size // 1024} MiB, {free} free (budget {budget_pages} pages)"
    if total == 0 and not config.grow_pool:
        found.append(Finding(ERROR, what, f"echo {budget_pages} > {os.path.join(pool, 'nr_hugepages')} (or hugepages.grow_pool = true)"))
    elif free < budget_pages and not config.grow_pool:
        found.append(Finding(WARN, what, f"grow the pool to at least {budget_pages} free pages, or lower hugepages.budget"))
    else:
        found.append(Finding(OK, what))
    mounted = False
    try:
        with open(mountinfo, encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == "/dev/hugepages" and right.split()[:1] == [HUGETLBFS_MAGIC_TYPE]:
                    mounted = True
    except OSError:
        pass
    if mounted:
        found.append(Finding(OK, "/dev/hugepages is a hugetlbfs mount (for the switch's own DPDK)"))
    else:
        found.append(Finding(WARN, "/dev/hugepages is not a hugetlbfs mount: OVS-DPDK needs one",
                             "mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages"))
    return found


def _vsctl(config: Any, *args: str) -> tuple[int, str]:
    argv = [config.switch.ovs_vsctl, f"--timeout={max(1, int(config.switch.timeout_s))}"]
    if config.switch.ovsdb:
        argv.append(f"--db={config.switch.ovsdb}")
    return run_read_only([*argv, *args], CHILD_TIMEOUT_S)


def check_switch(config: Any) -> list[Finding]:
    sw = config.switch
    if sw.backend == "static":
        missing = [s for s in sw.static_sockets if not os.path.exists(s)]
        if missing:
            return [Finding(WARN, f"static switch: {len(missing)} of {len(sw.static_sockets)} sockets missing ({missing[0]} ...)",
                            "start the switch that serves switch.static_sockets")]
        return [Finding(OK, f"static switch: {len(sw.static_sockets)} sockets present")]
    where = sw.ovsdb or "the default database socket"
    code, out = _vsctl(config, "get", "Open_vSwitch", ".", "dpdk_initialized")
    if code != 0:
        return [Finding(ERROR, f"OVS not reachable at {where}: {out.splitlines()[0] if out else f'exit {code}'}",
                        "start OVS-DPDK (install.sh does), or set switch.ovsdb in the config")]
    found = [Finding(OK, f"OVS reachable at {where}")]
    if out.strip() != "true":
        found.append(Finding(ERROR, f"OVS dpdk_initialized = {out.strip() or 'empty'}",
                             "ovs-vsctl set Open_vSwitch . other_config:dpdk-init=true, restart ovs-vswitchd, see its log"))
        return found
    found.append(Finding(OK, "OVS dpdk_initialized = true"))
    code, out = _vsctl(config, "--if-exists", "get", "Bridge", sw.bridge, "datapath_type")
    if code != 0 or not out.strip():
        if sw.create_bridge:
            found.append(Finding(WARN, f"bridge {sw.bridge} does not exist yet (the hook creates it on first use)"))
        else:
            found.append(Finding(ERROR, f"bridge {sw.bridge} does not exist",
                                 f"ovs-vsctl add-br {sw.bridge} -- set bridge {sw.bridge} datapath_type=netdev"))
    elif out.strip().strip('"') != "netdev":
        found.append(Finding(ERROR, f"bridge {sw.bridge} has datapath_type={out.strip() or 'system'}: vhost-user ports need netdev",
                             f"ovs-vsctl set bridge {sw.bridge} datapath_type=netdev"))
    else:
        found.append(Finding(OK, f"bridge {sw.bridge} exists with datapath_type=netdev"))
    return found


def check_versions() -> list[Finding]:
    """runc, then each engine's version: Docker older than 24 drops annotations, and an absent Docker is said."""
    found: list[Finding] = []
    path, version = binary_version("runc", "--version")
    if path is None:
        found.append(Finding(ERROR, "runc is not installed", "apt-get install runc"))
    elif version is not None and version < MIN_RUNC:
        found.append(Finding(ERROR, f"runc {format_version(version)} runs no createRuntime hooks", "install runc >= 1.0"))
    else:
        found.append(Finding(OK, f"runc {format_version(version)} ({path})"))
    for engine in engines.ALL_ENGINES:
        found += _findings(engine.version_checks(*engine.version()))
    return found


def check_registration(layout: engines.Layout, settings: engines.Settings) -> list[Finding]:
    """Each engine this host has: is the hook registered, and does what it names exist?"""
    found: list[Finding] = []
    for engine in engines.ALL_ENGINES:
        if engine.detect(layout):
            found += _findings(engine.check(layout, settings))
    return found


def device_findings(devices: HostDevices, topology_cpus: dict[int, frozenset[int]] | None = None,
                    cpu_pool: frozenset[int] = frozenset()) -> list[Finding]:
    """The udev view of CPUs, NUMA nodes, hugepages and network devices, one line each.

    ``topology_cpus`` (online CPUs per node as the hook reads them from sysfs) is cross-checked
    against udev's view; ``cpu_pool`` (the config's) against the online CPUs.
    """
    found: list[Finding] = []
    online = devices.online_cpus
    offline = sorted(c.cpu_id for c in devices.cpus if not c.online)
    what = f"CPUs (udev): {len(devices.cpus)} present, online {format_cpulist(online) or 'none'}"
    found.append(Finding(INFO, what + (f", offline {format_cpulist(offline)}" if offline else "")))
    missing = cpu_pool - online
    if missing:
        found.append(Finding(WARN, f"cpus.pool names CPUs {format_cpulist(missing)} that are not online here: the hook never gives them out",
                             f"set cpus.pool to online CPUs ({format_cpulist(online)}) in the config"))
    if not devices.nodes:
        found.append(Finding(INFO, "NUMA (udev): the kernel shows no nodes; the hook treats the host as node 0"))
    for node in devices.nodes:
        pools = "; ".join(f"{format_size_kib(size)} pages: {pool.total} total, {pool.free} free" for size, pool in node.hugepages.items())
        found.append(Finding(INFO, f"NUMA node {node.node_id} (udev): CPUs {format_cpulist(node.cpus) or 'none'}; "
                                   f"hugepages {pools or 'none'}"))
    if topology_cpus is not None and devices.nodes:
        udev_view = {node.node_id: frozenset(node.cpus & online) for node in devices.nodes}
        if udev_view != topology_cpus:
            found.append(Finding(WARN, f"udev and sysfs disagree on online CPUs per node: {_per_node(udev_view)} vs {_per_node(topology_cpus)}",
                                 "CPUs went on- or offline during the check: run doctor again"))
    if not devices.network:
        found.append(Finding(INFO, "network devices (udev): no PCI network device (vhost-user ports need none)"))
    for nic in devices.network:
        interfaces = ", ".join(nic.interfaces) or "no kernel interface"
        numa = "no NUMA affinity" if nic.numa_node is None else f"NUMA node {nic.numa_node}"
        bound = "bound to vfio-pci (usable by a DPDK app)" if nic.vfio else "not bound to vfio-pci"
        found.append(Finding(INFO, f"network device {nic.pci_address} ({interfaces}): driver {nic.driver or 'none'}, {numa}, {bound}"))
    return found


def _per_node(cpus: dict[int, frozenset[int]]) -> str:
    return ", ".join(f"node {n}: {format_cpulist(c) or 'none'}" for n, c in sorted(cpus.items()))


def check_devices(config: Any = None) -> list[Finding]:
    """Enumerate the host's devices through udev (pyudev), report them, cross-check the hook's sysfs view."""
    from hook.host.devices import enumerate_devices
    from hook.host.topology import read_topology

    try:
        devices = enumerate_devices()
    except Exception as exc:  # libudev missing or sysfs unreadable: doctor reports, it does not fail
        return [Finding(WARN, f"devices: udev enumeration failed ({type(exc).__name__}: {exc})", "apt-get install libudev1")]
    try:
        topology_cpus: dict[int, frozenset[int]] | None = {n.node_id: n.cpus for n in read_topology().nodes.values()}
    except (OSError, ValueError):
        topology_cpus = None
    return device_findings(devices, topology_cpus, config.cpu_pool if config is not None else frozenset())


def check_ledger(config: Any) -> list[Finding]:
    from hook.errors import HookError
    from hook.host.ledger import Ledger

    path = config.ledger_path
    if not os.path.exists(path):
        return [Finding(OK, f"ledger {path}: none yet (no container has asked)")]
    try:
        entries = Ledger(path).snapshot()
    except HookError as exc:
        return [Finding(ERROR, f"ledger: {exc}", "dpdk-oci-hook gc --rebuild")]
    except OSError as exc:
        return [Finding(ERROR, f"ledger {path}: {exc.strerror or exc}", "run as root")]
    return [Finding(OK, f"ledger {path}: readable, {len(entries)} reservation(s)")]


def check_policy(config: Any) -> list[Finding]:
    """What containers may ask for on this host (config.hcl ``policy``): one line per bridge."""
    if config.switch.backend != "ovs":
        return [Finding(INFO, f"policy: backend {config.switch.backend} leases pre-made sockets; bridges, VLANs and MACs do not apply")]
    found = []
    for item in config.policy or ():
        vlans = format_cpulist(item.vlans) or "none"
        found.append(Finding(INFO, f"policy: bridge {item.name}: vlans {vlans}{' (required)' if item.vlan_required else ''}, "
                                   f"MACs {'chosen by the container allowed' if item.allow_mac else 'made by the hook only'}, "
                                   f"addresses {'allowed' if item.allow_addresses else 'refused'}; untagged ports are access ports"))
    spoof = config.switch.anti_spoofing
    found.append(Finding(OK if spoof else WARN, f"policy: anti-spoofing rules {'on' if spoof else 'off'}: a port "
                         f"{'sends only from its own MAC and addresses' if spoof else 'may send from any MAC'}",
                         "" if spoof else "set policy { anti_spoofing = true }"))
    if config.switch.create_bridge:
        found.append(Finding(INFO, f"policy: the hook creates bridge {config.switch.bridge} when missing, never another, and never changes an existing one"))
    return found


def run_doctor(
    config_path: str | None = None,
    layout: engines.Layout | None = None,
    settings: engines.Settings | None = None,
    sys_root: str = "/sys",
) -> list[Finding]:
    """Every check, in the order a person would fix things."""
    from hook import config as config_mod
    from hook.errors import HookError

    layout = layout or engines.Layout()
    settings = settings or engines.Settings()
    found: list[Finding] = []
    config: Any = None
    try:
        config = config_mod.load(config_path)
        found.append(Finding(OK, f"config {config.path}"))
    except HookError as exc:
        found.append(Finding(ERROR, str(exc), "write /etc/dpdk-oci-hook/config.hcl (install.sh does), then: dpdk-oci-hook config check"))
    if config is not None:
        found += check_hugepages(config, sys_root)
        found += check_switch(config)
        found += check_policy(config)
    found += check_devices(config)
    found += check_versions()
    found += check_registration(layout, settings)
    if config is not None:
        found += check_ledger(config)
    from hook.kubernetes.node import node_findings  # nothing on a host that is not a Kubernetes node

    node_root = "/sys/devices/system/node"
    numa_nodes = sum(n.startswith("node") and n[4:].isdigit() for n in os.listdir(node_root)) if os.path.isdir(node_root) else 1
    found += [Finding(*item) for item in node_findings(numa_nodes=max(1, numa_nodes))]
    return found


def main(config_path: str | None = None, as_json: bool = False) -> int:
    """Print the findings; exit 1 if any is an error."""
    findings = run_doctor(config_path)
    if as_json:
        sys.stdout.write(json.dumps([f.__dict__ for f in findings], indent=2) + "\n")
    else:
        for finding in findings:
            sys.stdout.write(finding.line() + "\n")
        errors = sum(f.level == ERROR for f in findings)
        warnings = sum(f.level == WARN for f in findings)
        sys.stdout.write(f"{errors} error(s), {warnings} warning(s)\n")
    return 1 if any(f.level == ERROR for f in findings) else 0


def cmd_doctor(args: Any) -> int:
    """The ``dpdk-oci-hook doctor`` subcommand (argparse namespace with ``config`` and ``json``)."""
    return main(getattr(args, "config", None), bool(getattr(args, "json", False)))
