"""Kernel network interfaces for a container: one veth pair per port, beside its DPDK ports.

The container end is created directly inside the container's network namespace (the
``veth`` peer carries ``IFLA_NET_NS_FD``) with its final name, MAC and MTU, so a name clash
fails the creation atomically and the container end never exists in the host namespace.  The
host end (``dpv<hash>k<i>``, made by the caller) is plugged into the OVS-DPDK bridge by the
switch backend as a ``system`` port, which a netdev (userspace) bridge serves over AF_PACKET.

Decisions worth knowing:

* pyroute2 costs ~150-250 ms to import, so it is imported inside :func:`create`,
  :func:`remove` and :func:`existing` only: containers without kernel ports never load it.
  Importing this module costs ~2-3 ms (two dataclasses): import it only when the
  annotation is present.
* Addresses and routes need a netlink socket that lives in the container's namespace.  A
  short-lived thread ``setns()``-es into ``/proc/<pid>/ns/net``, opens the sockets and ends
  (the namespace is per thread; the hook's own threads never move).  That costs < 1 ms,
  against ~20 ms for pyroute2's own ``netns=`` which forks a helper process.
* The container end gets transmit checksum offload turned off (``ethtool -K eth1 tx off``,
  which drops TSO with it): the userspace datapath reads frames over AF_PACKET and forwards
  them as they are, so a partial checksum or a 64 KiB TSO frame from the container would
  reach the other ports broken (with offload on, TCP between two containers does not even
  connect: the SYN arrives with a bad checksum).  The host end gets IPv6 disabled (it is a switch port, it has no
  business sending router solicitations into the bridge).
* IPv6 addresses are added with ``IFA_F_NODAD``: the addresses come from the orchestrator,
  and DAD would leave them "tentative" (unbindable) for the first ~2 s of the app's life.
* The host end carries an owner tag in its alias (``ip link`` shows ``alias
  dpdk-oci-hook-owner=<id>``).  A retried setup replaces its own leftovers and refuses to
  touch a link of the same name that someone else owns.
* Netlink requests are synchronous kernel calls: they cannot hang on a peer, only wait for
  the kernel's RTNL lock, which no user-space timeout can break (the runtime's hook timeout
  is the backstop).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hook.annotations import parse_mac, reject_duplicate_keys
from hook.errors import AnnotationError, SwitchError
from hook.model import KernelPortRequest, KernelPortSpec
from hook.units import NAME_CHARS

ANNOTATION = "dpdk-oci-hook/kernel-ports"
FIELDS = ("name", "mac", "mtu", "addresses", "routes", "bridge")
ROUTE_FIELDS = ("to", "via")
HOST_PREFIX = "dpv"  # host ends are dpv<9 hex of the container key>k<index>
OWNER_ALIAS = "dpdk-oci-hook-owner="
MTU_MIN, MTU_MAX = 68, 9000
IPV6_MTU_MIN = 1280  # the kernel turns IPv6 off on a link with a smaller MTU
MAX_ADDRESSES = 8  # per port
MAX_ROUTES = 16  # per port
IFNAMSIZ = 16  # with the NUL
IFALIASZ = 256  # with the NUL
_HEX = frozenset("0123456789abcdef")

# netlink / ioctl constants (linux/if_addr.h, linux/sched.h, linux/sockios.h, linux/ethtool.h)
_IFA_F_NODAD = 0x02
_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17
_ENODEV = 19
_EEXIST = 17


class KernelPortError(SwitchError):
    """A kernel interface of a container could not be made (exit code 7, as a switch error)."""

    msg_fmt = "kernel port {port}: {reason}"


# --- the annotation (pure) ----------------------------------------------------------------


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
    max_ports = limits_max_ports
    text = value.strip()
    if not text.startswith("["):
        if not (text.isascii() and text.isdigit()) or len(text) > 6:
            raise AnnotationError(key=key, reason=f"{text[:40]!r} is not a count or a JSON list of ports")
        count = int(text)
        if count > max_ports:
            raise AnnotationError(key=key, reason=f"{count} is outside 0..{max_ports}")
        return tuple(KernelPortRequest(name=f"eth{i + 1}") for i in range(count))
    try:
        raw = json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except ValueError as exc:
        raise AnnotationError(key=key, reason=f"not a count or a JSON list of ports: {exc}") from None
    except RecursionError:
        raise AnnotationError(key=key, reason="JSON nested too deeply") from None
    if not isinstance(raw, list):
        raise AnnotationError(key=key, reason="must be a count or a JSON list of port objects")
    if len(raw) > max_ports:
        raise AnnotationError(key=key, reason=f"{len(raw)} ports is more than the limit of {max_ports}")
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


def owner_tag(owner: str) -> str:
    """The alias that marks a host end as the given container's (fits IFALIASZ)."""
    if len((OWNER_ALIAS + owner).encode("utf-8", "surrogatepass")) < IFALIASZ and owner.isprintable():
        return OWNER_ALIAS + owner
    import hashlib

    return OWNER_ALIAS + "sha256:" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()


# --- netlink (pyroute2, imported lazily) ----------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A netlink or OS error as 'message (ENAME)'."""
    import errno

    code = getattr(exc, "code", None) if not isinstance(exc, OSError) else exc.errno
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
    elif len(exc.args) == 2 and isinstance(exc.args[1], str):
        text = exc.args[1]
    else:
        text = str(exc) or type(exc).__name__
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return f"{text} ({name})" if name else text


def _error(port: str, reason: str) -> KernelPortError:
    return KernelPortError(port=port, reason=reason, backend="kernel")


def _do(port: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs); a netlink or OS error becomes KernelPortError('what: why')."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return fn(*args, **kwargs)
    except (NetlinkError, OSError) as exc:
        raise _error(port, f"{what}: {_reason(exc)}") from None


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _sockets_in(nsfd: int) -> tuple[int, int]:
    """(rtnetlink fd, AF_INET dgram fd) that live in the netns ``nsfd``; made by a throwaway thread."""
    import socket
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            _setns(nsfd)  # this thread only; it ends right after
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            try:
                inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except BaseException:
                nl.close()
                raise
            box["fds"] = (nl.detach(), inet.detach())
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="dpdk-oci-hook-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    fds: tuple[int, int] = box["fds"]
    return fds


def _tx_checksum_off(inet_fd: int, ifname: str) -> None:
    """``ethtool -K IFNAME tx off`` through the legacy ioctl (TSO goes with it)."""
    import array
    import fcntl
    import struct

    value = array.array("I", [_ETHTOOL_STXCSUM, 0])
    ifreq = struct.pack("16sP", ifname.encode(), value.buffer_info()[0]).ljust(40, b"\0")  # sizeof(struct ifreq)
    fcntl.ioctl(inet_fd, _SIOCETHTOOL, ifreq)


def _open_netns(pid: int) -> int:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise KernelPortError(port="*", reason=f"bad container pid {pid!r}", backend="kernel")
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelPortError(port="*", reason=f"cannot open the network namespace of pid {pid}: {exc.strerror}", backend="kernel") from None
    try:
        theirs, mine = os.fstat(fd), os.stat("/proc/self/ns/net")
    except OSError as exc:
        os.close(fd)
        raise KernelPortError(port="*", reason=f"cannot inspect network namespaces: {exc.strerror}", backend="kernel") from None
    if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
        os.close(fd)
        raise KernelPortError(port="*", reason=f"the container (pid {pid}) shares the host network namespace: kernel ports need its own", backend="kernel")
    return fd


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _link(ipr: Any, name: str) -> Any | None:
    """The link message of ``name``, or None when there is no such link."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == _ENODEV:
            return None
        raise
    return found[0] if found else None


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _check_specs(specs: Sequence[KernelPortSpec]) -> None:
    for names in ([s.host_name for s in specs], [s.ifname for s in specs]):
        if len(set(names)) != len(names):
            raise KernelPortError(port="*", reason=f"names given twice: {names}", backend="kernel")
    for s in specs:
        if not valid_ifname(s.host_name) or not valid_ifname(s.ifname):
            raise KernelPortError(port=s.host_name[:20], reason=f"bad interface name {s.host_name!r} or {s.ifname!r}", backend="kernel")


def _clear_stale(ipr: Any, spec: KernelPortSpec, tag: str | None) -> None:
    """A host end of this name left by an earlier attempt of the same owner is removed; others refuse."""
    msg = _do(spec.host_name, "looking it up", _link, ipr, spec.host_name)
    if msg is None:
        return
    alias = _attr(msg, "IFLA_IFALIAS")
    if tag is None or alias != tag or _kind(msg) != "veth":
        whose = f"owned by {alias.removeprefix(OWNER_ALIAS)!r}" if alias and alias.startswith(OWNER_ALIAS) else "not made by dpdk-oci-hook"
        raise _error(spec.host_name, f"a host interface of that name already exists ({whose})")
    _do(spec.host_name, "removing the leftover of an earlier attempt", ipr.link, "del", index=msg["index"])


def _add_pair(ipr: Any, spec: KernelPortSpec, nsfd: int) -> int:
    """Create the veth with its peer straight in the netns; the host end's index."""
    from pyroute2.netlink.exceptions import NetlinkError

    peer: dict[str, Any] = {"ifname": spec.ifname, "net_ns_fd": nsfd}
    host: dict[str, Any] = {}
    if spec.mac:
        peer["address"] = spec.mac
    if spec.mtu:
        peer["mtu"] = host["mtu"] = spec.mtu
    try:
        ipr.link("add", ifname=spec.host_name, kind="veth", peer=peer, **host)
    except NetlinkError as exc:
        if exc.code == _EEXIST:  # the host name was checked just before: the clash is inside
            raise _error(spec.host_name, f"the container already has an interface named {spec.ifname}") from None
        raise _error(spec.host_name, f"creating the veth pair: {_reason(exc)}") from None
    msg = _do(spec.host_name, "looking up the new veth", _link, ipr, spec.host_name)
    if msg is None:
        raise _error(spec.host_name, "the host end vanished right after it was made")
    index: int = msg["index"]
    return index


def _host_side(ipr: Any, spec: KernelPortSpec, index: int, tag: str | None) -> int:
    """Tag, IPv6 off, up; the container end's ifindex (inside its namespace)."""
    name = spec.host_name
    if tag is not None:
        _do(name, "setting the owner alias", ipr.link, "set", index=index, ifalias=tag)
    msg = _do(name, "reading the veth", ipr.link, "get", index=index)[0]
    peer = _attr(msg, "IFLA_LINK")
    if not isinstance(peer, int) or peer <= 0 or _attr(msg, "IFLA_LINK_NETNSID") is None:
        raise _error(name, "cannot find the container end of the veth")
    _disable_ipv6(name)
    _do(name, "bringing the host end up", ipr.link, "set", index=index, state="up")
    return peer


def _disable_ipv6(name: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w", encoding="ascii") as fh:
            fh.write("1")
    except OSError:
        pass  # no IPv6 on this host: nothing to disable


def _container_side(ns: Any, inet_fd: int, spec: KernelPortSpec, peer: int) -> None:
    """Inside the container's namespace: checksum offload off, addresses, up, routes."""
    import ipaddress
    import socket

    name = spec.host_name
    found = _attr(_do(name, "reading the container end", ns.link, "get", index=peer)[0], "IFLA_IFNAME")
    if found != spec.ifname:
        raise _error(name, f"the container end is {found!r}, not {spec.ifname!r}")
    _do(name, f"turning off transmit checksum offload of {spec.ifname}", _tx_checksum_off, inet_fd, spec.ifname)
    for text in spec.addresses:
        iface = ipaddress.ip_interface(text)
        extra: dict[str, Any] = {}
        if iface.version == 6:
            extra["flags"] = _IFA_F_NODAD
        elif iface.network.prefixlen < 31:
            extra["broadcast"] = str(iface.network.broadcast_address)
        _do(name, f"adding address {text} to {spec.ifname}", ns.addr, "add", index=peer, address=str(iface.ip), prefixlen=iface.network.prefixlen, **extra)
    _do(name, f"bringing {spec.ifname} up", ns.link, "set", index=peer, state="up")
    for dst, via in spec.routes:
        gw = ipaddress.ip_address(via)
        family = socket.AF_INET6 if gw.version == 6 else socket.AF_INET
        target = ("::/0" if gw.version == 6 else "0.0.0.0/0") if dst == "default" else dst
        _do(name, f"adding route {dst} via {via} to {spec.ifname}", ns.route, "add", family=family, dst=target, gateway=str(gw), oif=peer)


def create(pid: int, specs: Sequence[KernelPortSpec], owner: str | None = None) -> None:
    """Give the container of ``pid`` these kernel ports, all or nothing.

    ``owner`` (the container id) is written into the host ends' alias; with it, leftovers of
    an earlier attempt of the same owner are replaced.  Raises KernelPortError; on any failure
    every host end made here is deleted again (which deletes its container end too).
    """
    if not specs:
        return
    _check_specs(specs)
    tag = owner_tag(owner) if owner is not None else None
    nsfd = _open_netns(pid)
    made: list[str] = []
    try:
        with _opened("*", "opening rtnetlink") as ipr:
            peers: dict[str, int] = {}
            for spec in specs:
                _clear_stale(ipr, spec, tag)
                index = _add_pair(ipr, spec, nsfd)
                made.append(spec.host_name)
                peers[spec.host_name] = _host_side(ipr, spec, index, tag)
            nl_fd, inet_fd = _do("*", "opening sockets in the container's network namespace", _sockets_in, nsfd)
            try:
                with _opened("*", "opening rtnetlink in the container's network namespace", nl_fd) as ns:
                    for spec in specs:
                        _container_side(ns, inet_fd, spec, peers[spec.host_name])
            finally:
                os.close(inet_fd)
    except BaseException:
        _rollback(made)
        raise
    finally:
        os.close(nsfd)


@contextmanager
def _opened(port: str, what: str, fileno: int | None = None) -> Iterator[Any]:
    """An IPRoute (on ``fileno`` if given, which it then owns); open errors as KernelPortError."""
    from pyroute2 import IPRoute

    try:
        ipr = IPRoute(groups=0, ext_ack=True, fileno=fileno) if fileno is not None else IPRoute(groups=0, ext_ack=True)
    except OSError as exc:
        if fileno is not None:
            os.close(fileno)
        raise _error(port, f"{what}: {_reason(exc)}") from None
    try:
        yield ipr
    finally:
        ipr.close()


def _rollback(names: Sequence[str]) -> None:
    try:
        remove(names)
    except KernelPortError:
        pass  # gc finds them by name prefix and owner alias


def remove(host_names: Sequence[str]) -> None:
    """Delete these host ends (and so their container ends); missing ones are fine.

    Only veth links are deleted: a name that is something else is left alone.
    """
    if not host_names:
        return
    from pyroute2.netlink.exceptions import NetlinkError

    failed: list[str] = []
    reason = ""
    with _opened(",".join(host_names), "opening rtnetlink") as ipr:
        for name in host_names:
            try:
                msg = _link(ipr, name)
                if msg is None or _kind(msg) != "veth":
                    continue
                ipr.link("del", index=msg["index"])
            except NetlinkError as exc:
                if exc.code == _ENODEV:
                    continue  # gone in between: its container's namespace went away
                failed.append(name)
                reason = _reason(exc)
    if failed:
        raise _error(",".join(failed), f"cannot delete: {reason}")


def existing_owners(prefix: str = HOST_PREFIX) -> dict[str, str]:
    """Host-side veth links whose name starts with ``prefix`` -> their owner ('' if untagged)."""
    found: dict[str, str] = {}
    with _opened("*", "opening rtnetlink") as ipr:
        for msg in _do("*", "listing links", ipr.link, "dump"):
            name = _attr(msg, "IFLA_IFNAME") or ""
            if not name.startswith(prefix) or _kind(msg) != "veth":
                continue
            alias = _attr(msg, "IFLA_IFALIAS") or ""
            found[name] = alias.removeprefix(OWNER_ALIAS) if alias.startswith(OWNER_ALIAS) else ""
    return dict(sorted(found.items()))


def existing(prefix: str = HOST_PREFIX) -> list[str]:
    """Names of host-side veth links that start with ``prefix`` (for gc)."""
    return list(existing_owners(prefix))
