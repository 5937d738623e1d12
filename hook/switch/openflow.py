"""Anti-spoofing rules as OpenFlow 1.3 flow mods, sent straight to a bridge's management socket.

OVSDB holds no flows, so the rules that keep a port to its own MAC (and a kernel port to its
own addresses) go over OpenFlow to ``<ovs rundir>/<bridge>.mgmt``, the socket ``ovs-ofctl``
uses, without starting ``ovs-ofctl`` (a process start, and ``subprocess`` to import).

The rules of one port all carry the port's cookie (:func:`port_cookie`: a project marker in
the top 16 bits, a hash of installation scope and port name below), so removal deletes exactly
them.  Matching packets go on to ``NORMAL``; everything else from the port is dropped; the
bridge's own flows (``priority=0 actions=NORMAL`` by default) see only other ports' traffic.

    in_port=P, dl_src=MAC, arp, arp_sha=MAC, arp_spa=A   -> NORMAL   (kernel port, each IPv4 A)
    in_port=P, dl_src=MAC, ip, nw_src=A                  -> NORMAL   (kernel port, each IPv4 A)
    in_port=P, dl_src=MAC, ipv6, ipv6_src=A | fe80::/10 | ::  -> NORMAL  (kernel port)
    in_port=P, arp | ip | ipv6                           -> drop     (kernel port: other addresses)
    in_port=P, dl_src=MAC                                -> NORMAL   (other ethertypes)
    in_port=P                                            -> drop
"""

from __future__ import annotations

import _socket
import struct
import time
from _blake2 import blake2b  # hashlib would load OpenSSL (~3 ms of imports)
from collections.abc import Sequence

OFP_VERSION = 0x04  # OpenFlow 1.3
COOKIE_MARK = 0xD0C1 << 48
COOKIE_MARK_MASK = 0xFFFF << 48
PRIORITY_ALLOW_ADDRESS = 0x7F20
PRIORITY_DROP_L3 = 0x7F10
PRIORITY_ALLOW_MAC = 0x7F08
PRIORITY_DROP = 0x7F00

_HELLO, _ERROR, _ECHO_REQUEST, _ECHO_REPLY, _FLOW_MOD, _BARRIER_REQUEST, _BARRIER_REPLY = 0, 1, 2, 3, 14, 20, 21
_ADD, _DELETE = 0, 3
_ANY = 0xFFFFFFFF
_NORMAL = 0xFFFFFFFA
_ETH_ARP, _ETH_IP, _ETH_IPV6 = 0x0806, 0x0800, 0x86DD
# OXM fields of class OPENFLOW_BASIC
_IN_PORT, _ETH_SRC, _ETH_TYPE, _IPV4_SRC, _ARP_SPA, _ARP_SHA, _IPV6_SRC = 0, 4, 5, 11, 22, 24, 26


class OpenFlowError(Exception):
    """The bridge could not be reached or refused a flow (internal)."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def port_cookie(scope: str, port_name: str) -> int:
    """The cookie of every rule of one port: exact removal, never another installation's."""
    digest = blake2b(f"{scope}\0{port_name}".encode(), digest_size=6).digest()
    return COOKIE_MARK | int.from_bytes(digest, "big")


def _oxm(field: int, value: bytes, mask: bytes | None = None) -> bytes:
    body = value + (mask or b"")
    return struct.pack("!HBB", 0x8000, field << 1 | (mask is not None), len(body)) + body


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


class Rule:
    """One flow: OXM match fields, allow (NORMAL) or drop."""

    def __init__(self, priority: int, in_port: int, allow: bool, fields: Sequence[bytes]) -> None:
        self.priority, self.in_port, self.allow, self.fields = priority, in_port, allow, tuple(fields)

    def match(self) -> bytes:
        oxms = _oxm(_IN_PORT, struct.pack("!I", self.in_port)) + b"".join(self.fields)
        length = 4 + len(oxms)
        return struct.pack("!HH", 1, length) + oxms + b"\0" * (-length % 8)


def port_rules(in_port: int, mac: str, addresses: Sequence[str] | None = None) -> list[Rule]:
    """The anti-spoofing rules of one port (``addresses`` given: a kernel port, IPs checked too)."""
    src = _oxm(_ETH_SRC, _mac(mac))
    rules = [Rule(PRIORITY_ALLOW_MAC, in_port, True, [src]), Rule(PRIORITY_DROP, in_port, False, [])]
    if addresses is None:
        return rules
    import ipaddress  # only kernel ports have addresses

    eth = {kind: _oxm(_ETH_TYPE, struct.pack("!H", kind)) for kind in (_ETH_ARP, _ETH_IP, _ETH_IPV6)}
    allowed_v6 = ["fe80::/10", "::/128"]  # link-local (neighbour discovery) and DAD's unspecified source
    for cidr in addresses:
        ip = ipaddress.ip_interface(cidr).ip
        if ip.version == 4:
            packed = ip.packed
            rules.append(Rule(PRIORITY_ALLOW_ADDRESS, in_port, True, [src, eth[_ETH_ARP], _oxm(_ARP_SPA, packed), _oxm(_ARP_SHA, _mac(mac))]))
            rules.append(Rule(PRIORITY_ALLOW_ADDRESS, in_port, True, [src, eth[_ETH_IP], _oxm(_IPV4_SRC, packed)]))
        else:
            allowed_v6.append(f"{ip}/128")
    for net_text in allowed_v6:
        net = ipaddress.ip_network(net_text)
        rules.append(Rule(PRIORITY_ALLOW_ADDRESS, in_port, True, [src, eth[_ETH_IPV6], _oxm(_IPV6_SRC, net.network_address.packed, net.netmask.packed)]))
    rules += [Rule(PRIORITY_DROP_L3, in_port, False, [eth[kind]]) for kind in (_ETH_ARP, _ETH_IP, _ETH_IPV6)]
    return rules


class Bridge:
    """An OpenFlow session with one bridge; use as a context manager."""

    def __init__(self, mgmt_socket: str, timeout_s: float) -> None:
        self.path = mgmt_socket
        self.deadline = time.monotonic() + timeout_s
        self._xid = 0
        self._buf = b""
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self._arm()
            self._sock.connect(mgmt_socket)
            self._send(_HELLO, struct.pack("!HHI", 1, 8, 1 << OFP_VERSION))  # version bitmap: 1.3 only
            kind, _, body = self._receive()
            if kind != _HELLO:
                raise OpenFlowError(f"{mgmt_socket}: no OpenFlow hello ({self._describe(kind, body)})")
        except TimeoutError:
            self.close()
            raise OpenFlowError(f"{mgmt_socket}: no answer within the timeout (is ovs-vswitchd running?)", True) from None
        except OSError as exc:
            self.close()
            raise OpenFlowError(f"cannot connect to {mgmt_socket}: {exc.strerror or exc} (is ovs-vswitchd running?)") from None
        except OpenFlowError:
            self.close()
            raise

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None  # type: ignore[assignment]

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)

    def _send(self, kind: int, body: bytes = b"") -> int:
        self._xid += 1
        self._arm()
        self._sock.sendall(struct.pack("!BBHI", OFP_VERSION, kind, 8 + len(body), self._xid) + body)
        return self._xid

    def _receive(self) -> tuple[int, int, bytes]:
        while True:
            if len(self._buf) >= 8:
                _, kind, length, xid = struct.unpack("!BBHI", self._buf[:8])
                if length < 8:
                    raise OpenFlowError(f"{self.path}: malformed OpenFlow message")
                if len(self._buf) >= length:
                    body, self._buf = self._buf[8:length], self._buf[length:]
                    if kind == _ECHO_REQUEST:
                        self._sock.sendall(struct.pack("!BBHI", OFP_VERSION, _ECHO_REPLY, 8 + len(body), xid) + body)
                        continue
                    return kind, xid, body
            self._arm()
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OpenFlowError(f"{self.path}: ovs-vswitchd closed the OpenFlow connection")
            self._buf += chunk

    @staticmethod
    def _describe(kind: int, body: bytes) -> str:
        if kind == _ERROR and len(body) >= 4:
            etype, code = struct.unpack("!HH", body[:4])
            return f"OpenFlow error type {etype} code {code}"
        return f"message type {kind}"

    def _flow_mod(self, command: int, cookie: int, cookie_mask: int, priority: int, match: bytes, allow: bool) -> None:
        instructions = b""
        if allow:  # apply-actions: output:NORMAL
            action = struct.pack("!HHIH6x", 0, 16, _NORMAL, 0)
            instructions = struct.pack("!HH4x", 4, 8 + len(action)) + action
        head = struct.pack("!QQBBHHHIIIH2x", cookie, cookie_mask, 0 if command == _ADD else 0xFF, command, 0, 0, priority, _ANY, _ANY, _ANY, 0)
        self._send(_FLOW_MOD, head + match + instructions)

    def apply(self, delete: Sequence[tuple[int, int, int | None]], add: Sequence[tuple[int, Rule]]) -> None:
        """Delete flows by (cookie, cookie mask, in_port or None), add (cookie, rule) flows, then a barrier."""
        try:
            for cookie, mask, in_port in delete:
                match = Rule(0, in_port, False, []).match() if in_port is not None else struct.pack("!HH4x", 1, 4)
                self._flow_mod(_DELETE, cookie, mask, 0, match, False)
            for cookie, rule in add:
                self._flow_mod(_ADD, cookie, 0, rule.priority, rule.match(), rule.allow)
            barrier = self._send(_BARRIER_REQUEST)
            while True:
                kind, xid, body = self._receive()
                if kind == _ERROR:
                    raise OpenFlowError(f"{self.path}: the bridge refused a flow ({self._describe(kind, body)})")
                if kind == _BARRIER_REPLY and xid == barrier:
                    return
        except TimeoutError:
            raise OpenFlowError(f"{self.path}: no answer within the timeout", True) from None
        except OSError as exc:
            raise OpenFlowError(f"{self.path}: {exc.strerror or exc}") from None
