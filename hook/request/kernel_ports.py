"""The ``kernel-ports`` annotation (untrusted) -> validated :class:`KernelPortRequest` values.

Pure.  Every rejection is an AnnotationError naming the port and the reason.
"""

from __future__ import annotations

from typing import Any

from hook.errors import AnnotationError
from hook.model import KernelPortRequest
from hook.request.fields import count_or_list, parse_mac
from hook.units import NAME_CHARS

FIELDS = ("name", "mac", "mtu", "addresses", "routes", "bridge")
ROUTE_FIELDS = ("to", "via")
MTU_MIN, MTU_MAX = 68, 9000
IPV6_MTU_MIN = 1280  # the kernel turns IPv6 off on a link with a smaller MTU
MAX_ADDRESSES = 8  # per port
MAX_ROUTES = 16  # per port
IFNAMSIZ = 16  # with the NUL


def valid_ifname(name: Any) -> bool:
    """A Linux interface name we accept: 1-15 of [A-Za-z0-9_.-], no leading '-', not lo/./.."""
    return (
        isinstance(name, str)
        and 0 < len(name) < IFNAMSIZ
        and set(name) <= NAME_CHARS
        and name[0] != "-"
        and name not in (".", "..", "lo")
    )


def _mac(key: str, where: str, value: Any) -> str:
    return parse_mac(key, value, where=f"{where}: mac")


def _ip_text(key: str, where: str, what: str, value: Any) -> str:
    if not isinstance(value, str) or not (value.isascii() and value.isprintable()) or " " in value or "%" in value or not 0 < len(value) <= 64:
        raise AnnotationError(key=key, reason=f"{where}: {what} {str(value)[:50]!r} is not an IP address text")
    return value


def _address(key: str, where: str, value: Any) -> Any:
    """An ``ipaddress`` interface with an explicit prefix, usable as a host address."""
    import ipaddress

    text = _ip_text(key, where, "address", value)
    if "/" not in text:
        raise AnnotationError(key=key, reason=f"{where}: address {text!r} needs a prefix length, e.g. {text}/24")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise AnnotationError(key=key, reason=f"{where}: address {text!r} is not like 10.0.0.2/24 or fd00::2/64") from None
    ip, net = iface.ip, iface.network
    if net.prefixlen == 0:
        raise AnnotationError(key=key, reason=f"{where}: address {text}: a /0 prefix is not allowed")
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise AnnotationError(key=key, reason=f"{where}: address {text} is not a unicast host address")
    if ip.version == 4:
        if ip in ipaddress.ip_network("240.0.0.0/4"):
            raise AnnotationError(key=key, reason=f"{where}: address {text} is in the reserved range 240.0.0.0/4")
        if net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
            what = "network" if ip == net.network_address else "broadcast"
            raise AnnotationError(key=key, reason=f"{where}: address {text} is the {what} address of {net}")
    elif ip.is_link_local:
        raise AnnotationError(key=key, reason=f"{where}: address {text}: link-local IPv6 addresses are made by the kernel")
    return iface


def _routes(key: str, where: str, raw: Any, ifaces: list[Any]) -> tuple[tuple[str, str], ...]:
    import ipaddress

    if not isinstance(raw, list):
        raise AnnotationError(key=key, reason=f"{where}: routes must be a list of {{\"to\": ..., \"via\": ...}} objects")
    if len(raw) > MAX_ROUTES:
        raise AnnotationError(key=key, reason=f"{where}: {len(raw)} routes is more than {MAX_ROUTES}")
    routes: list[tuple[str, str]] = []
    for j, item in enumerate(raw):
        here = f"{where}: route {j}"
        if not isinstance(item, dict):
            raise AnnotationError(key=key, reason=f"{here} must be an object with to and via")
        unknown = sorted(set(item) - set(ROUTE_FIELDS))
        if unknown:
            raise AnnotationError(key=key, reason=f"{here}: unknown field {unknown[0][:40]!r} (known: to, via)")
        missing = [f for f in ROUTE_FIELDS if f not in item]
        if missing:
            raise AnnotationError(key=key, reason=f"{here}: {missing[0]} is missing")
        via_text = _ip_text(key, here, "via", item["via"])
        try:
            via = ipaddress.ip_address(via_text)
        except ValueError:
            raise AnnotationError(key=key, reason=f"{here}: via {via_text!r} is not an IP address") from None
        if via.is_unspecified or via.is_multicast or via.is_loopback:
            raise AnnotationError(key=key, reason=f"{here}: via {via} is not a unicast address")
        if any(via == i.ip for i in ifaces):
            raise AnnotationError(key=key, reason=f"{here}: via {via} is this port's own address")
        same_family = [i for i in ifaces if i.version == via.version]
        on_link = any(via in i.network for i in same_family) or (via.version == 6 and via.is_link_local)
        if not on_link:
            nets = ", ".join(str(i.network) for i in same_family) or f"none: the port has no IPv{via.version} address"
            raise AnnotationError(key=key, reason=f"{here}: via {via} is not in a subnet of the port ({nets})")
        if via.version == 4:
            for i in same_family:
                net = i.network
                if net.prefixlen < 31 and via in net and via in (net.network_address, net.broadcast_address):
                    raise AnnotationError(key=key, reason=f"{here}: via {via} is the network or broadcast address of {net}")
        to = item["to"]
        if to == "default":
            dst = "default"
        else:
            to_text = _ip_text(key, here, "to", to)
            try:
                net = ipaddress.ip_network(to_text, strict=True)
            except ValueError as exc:
                raise AnnotationError(key=key, reason=f"{here}: to {to_text!r} is not \"default\" or a network like 10.1.0.0/16 ({exc})") from None
            if net.version != via.version:
                raise AnnotationError(key=key, reason=f"{here}: to {net} and via {via} are not the same IP version")
            if any(net == i.network for i in same_family):
                raise AnnotationError(key=key, reason=f"{here}: to {net} is the port's own subnet (reachable without a gateway)")
            dst = "default" if net.prefixlen == 0 else str(net)
        routes.append((dst, str(via)))
    return tuple(routes)


def _port(key: str, index: int, raw: Any) -> KernelPortRequest:
    where = f"port {index}"
    if not isinstance(raw, dict):
        raise AnnotationError(key=key, reason=f"{where} must be an object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise AnnotationError(key=key, reason=f"{where}: unknown field {unknown[0][:40]!r} (known: {', '.join(FIELDS)})")
    raw = {k: v for k, v in raw.items() if v is not None}  # null is the same as absent
    name = raw.get("name", f"eth{index + 1}")
    if not valid_ifname(name):
        raise AnnotationError(
            key=key, reason=f"{where}: name {str(name)[:40]!r} is not an interface name of 1-15 letters, digits, '-', '_', '.' (not lo)"
        )
    bridge = raw.get("bridge")
    if bridge is not None and (not valid_ifname(bridge) or bridge[0] == "." or ".." in bridge):
        raise AnnotationError(key=key, reason=f"{where}: bridge {str(bridge)[:40]!r} is not a name of 1-15 letters, digits, '-', '_', '.'")
    mtu = raw.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not MTU_MIN <= mtu <= MTU_MAX):
        raise AnnotationError(key=key, reason=f"{where}: mtu must be a whole number in {MTU_MIN}..{MTU_MAX}, got {str(mtu)[:40]!r}")
    addresses_raw = raw.get("addresses", [])
    if not isinstance(addresses_raw, list):
        raise AnnotationError(key=key, reason=f"{where}: addresses must be a list like [\"10.0.0.2/24\"]")
    if len(addresses_raw) > MAX_ADDRESSES:
        raise AnnotationError(key=key, reason=f"{where}: {len(addresses_raw)} addresses is more than {MAX_ADDRESSES}")
    ifaces = [_address(key, where, a) for a in addresses_raw]
    if len({i.ip for i in ifaces}) != len(ifaces):
        raise AnnotationError(key=key, reason=f"{where}: the same address is given twice")
    if mtu is not None and mtu < IPV6_MTU_MIN and any(i.version == 6 for i in ifaces):
        raise AnnotationError(key=key, reason=f"{where}: mtu {mtu} is below {IPV6_MTU_MIN}, the least IPv6 works with")
    return KernelPortRequest(
        name=name,
        mac=_mac(key, where, raw["mac"]) if "mac" in raw else None,
        mtu=mtu,
        addresses=tuple(str(i) for i in ifaces),
        routes=_routes(key, where, raw.get("routes", []), ifaces),
        bridge=bridge,
    )


def parse_kernel_ports(key: str, value: str, limits_max_ports: int) -> tuple[KernelPortRequest, ...]:
    """Validate the ``kernel-ports`` annotation: a count, or a JSON list of port objects.

    Pure.  Raises AnnotationError(key=key) naming the port and the reason.  Port ``i``
    without a name is ``eth<i+1>``; null fields are the same as absent ones.
    """
    raw = count_or_list(key, value, limits_max_ports)
    if isinstance(raw, int):
        return tuple(KernelPortRequest(name=f"eth{i + 1}") for i in range(raw))
    ports = tuple(_port(key, i, item) for i, item in enumerate(raw))
    seen: dict[str, int] = {}
    for i, p in enumerate(ports):
        if p.name in seen:
            raise AnnotationError(key=key, reason=f"ports {seen[p.name]} and {i} are both named {p.name}")
        seen[p.name] = i
    macs = [p.mac for p in ports if p.mac]
    if len(set(macs)) != len(macs):
        raise AnnotationError(key=key, reason="the same mac is given to two ports")
    ips = [a.split("/")[0] for p in ports for a in p.addresses]
    if len(set(ips)) != len(ips):
        raise AnnotationError(key=key, reason="the same address is given to two ports")
    dsts = [(dst, ":" in via) for p in ports for dst, via in p.routes]
    for dst, v6 in dsts:
        if dsts.count((dst, v6)) > 1:
            shown = dst if dst != "default" else ("default (IPv6)" if v6 else "default (IPv4)")
            raise AnnotationError(key=key, reason=f"the route to {shown} is given twice")
    return ports
