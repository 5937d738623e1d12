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

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hook.constants import OWNER_ALIAS
from hook.errors import SwitchError
from hook.model import KernelPortSpec
from hook.request.kernel_ports import valid_ifname

HOST_PREFIX = "dpv"  # host ends are dpv<9 hex of the container key>k<index>
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
