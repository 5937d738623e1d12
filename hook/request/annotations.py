"""Container annotations (untrusted input) -> a validated :class:`Request`.

Every rejection names the key and the reason.  Counts and small labels come from the user;
names and paths are always made by the hook.
"""

from __future__ import annotations

from typing import Any

from hook.config import Limits
from hook.constants import ANNOTATION_KEYS, PREFIX
from hook.errors import AnnotationError
from hook.model import MODES, KernelPortRequest, LinkRequest, PortRequest, Request
from hook.request.fields import count_or_list, int_field, name_field, parse_mac, reject_duplicate_keys  # noqa: F401 (re-exported)
from hook.units import format_size_kib, parse_size_kib

KEYS = ANNOTATION_KEYS
MAX_VALUE_BYTES = 4096
MAX_NUMA_NODE = 1023
PORT_FIELDS = ("bridge", "queues", "mac", "mtu", "vlan", "mode")


def ours(annotations: dict[str, Any]) -> dict[str, Any]:
    """The annotations under our prefix (empty: the container is not ours)."""
    return {k: v for k, v in annotations.items() if isinstance(k, str) and k.startswith(PREFIX)}


def _count(key: str, text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise AnnotationError(key=key, reason=f"{text[:40]!r} is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise AnnotationError(key=key, reason=f"{value} is outside {low}..{high}")
    return value




def _port(key: str, index: int, raw: Any, limits: Limits) -> PortRequest:
    where = f"port {index}"
    if not isinstance(raw, dict):
        raise AnnotationError(key=key, reason=f"{where} must be an object")
    unknown = sorted(set(raw) - set(PORT_FIELDS))
    if unknown:
        raise AnnotationError(key=key, reason=f"{where}: unknown field {unknown[0][:40]!r} (known: {', '.join(PORT_FIELDS)})")
    mode = raw.get("mode")
    if mode is not None and mode not in MODES:
        raise AnnotationError(key=key, reason=f"{where}: mode must be server or client, got {str(mode)[:40]!r}")
    return PortRequest(
        mode=mode,
        bridge=name_field(key, f"{where}: bridge", raw["bridge"]) if "bridge" in raw else None,
        queues=int_field(key, f"{where}: queues", raw.get("queues", 1), 1, limits.max_queues),
        mac=parse_mac(key, raw["mac"]) if "mac" in raw else None,
        mtu=int_field(key, f"{where}: mtu", raw["mtu"], 68, 9702) if "mtu" in raw else None,
        vlan=int_field(key, f"{where}: vlan", raw["vlan"], 0, 4095) if "vlan" in raw else None,
    )


def _ports(key: str, text: str, limits: Limits) -> tuple[PortRequest, ...]:
    raw = count_or_list(key, text, limits.max_ports)
    if isinstance(raw, int):
        return tuple(PortRequest() for _ in range(raw))
    ports = tuple(_port(key, i, item, limits) for i, item in enumerate(raw))
    macs = [p.mac for p in ports if p.mac]
    if len(set(macs)) != len(macs):
        raise AnnotationError(key=key, reason="the same mac is given to two ports")
    return ports


def parse(annotations: dict[str, Any], limits: Limits, default_page_kib: int) -> Request:
    """Validate our annotations into a Request; AnnotationError on the first problem."""
    mine = ours(annotations)
    for key, value in mine.items():
        leaf = key[len(PREFIX):]
        if leaf not in KEYS:
            raise AnnotationError(key=key[:80], reason=f"unknown key (known: {', '.join(KEYS)})")
        if not isinstance(value, str):
            raise AnnotationError(key=key, reason="value must be a string")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise AnnotationError(key=key, reason=f"value is longer than {MAX_VALUE_BYTES} bytes")

    def get(leaf: str) -> str | None:
        value = mine.get(PREFIX + leaf)
        return value.strip() if value is not None else None

    ports = _ports(PREFIX + "vhost-user", get("vhost-user") or "0", limits)
    cpus_text = get("cpus")
    cpus = _count(PREFIX + "cpus", cpus_text, 0, limits.max_cpus) if cpus_text is not None else 0

    page_kib = default_page_kib
    size_text = get("hugepage-size")
    if size_text is not None:
        if size_text not in ("2Mi", "1Gi"):
            raise AnnotationError(key=PREFIX + "hugepage-size", reason=f"{size_text[:40]!r} is not 2Mi or 1Gi")
        page_kib = parse_size_kib(size_text)

    huge_kib = 0
    huge_text = get("hugepages")
    if huge_text is not None:
        key = PREFIX + "hugepages"
        try:
            huge_kib = parse_size_kib(huge_text)
        except ValueError as exc:
            raise AnnotationError(key=key, reason=str(exc)) from exc
        if huge_kib % page_kib:
            raise AnnotationError(key=key, reason=f"{huge_text} is not a multiple of the {format_size_kib(page_kib)} page size")
        if huge_kib > limits.max_hugepages_kib:
            raise AnnotationError(key=key, reason=f"{huge_text} is more than the limit of {format_size_kib(limits.max_hugepages_kib)}")
    if ports and not huge_kib:
        raise AnnotationError(key=PREFIX + "hugepages", reason="vhost-user ports need hugepage memory: add e.g. hugepages=256Mi")

    link_text = get("link")
    links: tuple[LinkRequest, ...] = ()
    if link_text is not None:
        from hook.request.links import parse_links  # only containers that ask pay for it

        links = parse_links(PREFIX + "link", link_text, limits.max_ports - len(ports), limits.max_queues)
        if not huge_kib:
            raise AnnotationError(key=PREFIX + "hugepages", reason="links need hugepage memory: add e.g. hugepages=256Mi")

    node_text = get("numa-node")
    node = _count(PREFIX + "numa-node", node_text, 0, MAX_NUMA_NODE) if node_text is not None else None

    kernel_text = get("kernel-ports")
    kernel_ports: tuple[KernelPortRequest, ...] = ()
    if kernel_text is not None:
        from hook.request.kernel_ports import parse_kernel_ports  # only containers that ask pay for it

        kernel_ports = parse_kernel_ports(PREFIX + "kernel-ports", kernel_text, limits.max_ports)
        if len(kernel_ports) + len(ports) + len(links) > limits.max_ports:
            reason = (f"{len(ports)} vhost-user, {len(links)} link and {len(kernel_ports)} kernel ports are more than "
                      f"the limit of {limits.max_ports}")
            raise AnnotationError(key=PREFIX + "kernel-ports", reason=reason)

    if not (ports or kernel_ports or links or cpus or huge_kib):
        raise AnnotationError(key=PREFIX + "*", reason="asks for nothing: give vhost-user, kernel-ports, link, cpus or hugepages")
    return Request(
        ports=ports,
        cpus=cpus,
        hugepages_mib=huge_kib // 1024,
        hugepage_size_kib=page_kib,
        numa_node=node,
        kernel_ports=kernel_ports,
        links=links,
    )
