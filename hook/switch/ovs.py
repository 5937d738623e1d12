"""Open vSwitch (userspace/DPDK datapath) backend, spoken to over OVSDB JSON-RPC and OpenFlow.

Every port a container gets is plugged in ONE OVSDB transaction (:mod:`hook.switch.commands`,
sent by :mod:`hook.switch.ovsdb` over ``db.sock``, no ``ovs-vsctl`` process): if any part of it
fails, ovsdb-server commits nothing.  Decisions worth knowing:

* Policy: a port may only use a bridge in ``switch.bridges`` (default: the configured bridge).
  Only the configured bridge is ever created, and only with ``create_bridge`` when it is
  missing.  An existing bridge is never changed: one whose ``datapath_type`` is not ``netdev``
  (a kernel bridge) is refused, since vhost-user ports cannot work there and flipping it would
  cut off everything on it.
* VLANs: every port is an access port (``vlan_mode=access``): with a vlan, of that VLAN; without,
  ``tag=0``, so 802.1Q frames with a VLAN id that the container sends are dropped.  Kernel ports
  the same.
* Anti-spoofing (``switch.anti_spoofing``): each interface gets an ``ofport_request`` picked in
  the same transaction (a guard makes sure no other interface has it), and OpenFlow rules keyed
  by that port number (:mod:`hook.switch.openflow`): the port may send only from its MAC (a
  kernel port: and its addresses).  The rules are in before the port exists: on an existing
  bridge they are sent (and a barrier answered) before the commit, while ovs-vswitchd is idle
  and answers at once; sent after the commit, the answer waits until ovs-vswitchd has applied
  the port (a PMD reload, 5-20 ms of every container start).  Picking the number, sending the
  rules and the commit are one step under a lock file in OVS's run directory
  (:meth:`OvsSwitch._ofport_lock`), shared by every hook on that OVS: two starts never pick
  the same number, which matters because OpenFlow replaces an identical rule even with
  OFPFF_CHECK_OVERLAP (the loser's cleanup would delete the winner's drop rule).  A failed
  commit deletes the rules again; a new bridge gets them after the commit (it has no
  management socket before).  If they cannot be installed the ports are removed again.
  Our stale rules on the number (left when ovs-vswitchd hung during a removal) are deleted first.
  Removal deletes the rules first (ovs-vswitchd is idle then), then the ports.  OpenFlow rules
  live in ovs-vswitchd, not in OVSDB: a restart of ovs-vswitchd drops them;
  :meth:`OvsSwitch.restore_rules` puts them back from the ports' ``external_ids``.
* Waiting for ovs-vswitchd: a transaction with a client-mode port (OVS creates the socket), a
  kernel port or a new bridge bumps ``next_cfg`` and waits until ``cur_cfg`` catches up, then
  reads each interface's ``error`` column: a setup error removes the ports again and raises.
  Server-mode ports (the app creates the socket later; OVS connects when it appears) do not
  wait.  ``dpdk_initialized`` is a guard of the transaction itself.
* Owner tags: Port and Interface ``external_ids`` carry the owner, the installation scope
  (:data:`~hook.switch.commands.SCOPE_KEY`) and the lease index; ``owned_ports``, removal and
  ``gc`` see only this scope's ports.  A retried add finds its own ports and replaces them in
  the same transaction; anyone else's port of that name is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from hook.config import SwitchConfig
from hook.constants import INDEX_KEY, OWNER_KEY
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, MODE_SERVER, KernelPortSpec, PortLease
from hook.switch.base import client_socket_path
from hook.switch.commands import (
    ADDRESSES_KEY,
    MAC_KEY,
    SCOPE_KEY,
    AddBridge,
    AddPort,
    BumpNextCfg,
    Command,
    DelPort,
    FreeOfport,
    Require,
    Snapshot,
    find_by_tags,
    select_by_name,
    transaction_ops,
)
from hook.switch.ovsdb import Connection, OvsdbError, TransactError, default_target

_TYPES = {MODE_SERVER: "dpdkvhostuserclient", MODE_CLIENT: "dpdkvhostuser"}
OWNER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
OWNER_MAX = 64
OFPORT_FIRST, OFPORT_LAST = 0xC000, 0xFEFF  # requested OpenFlow port numbers: above what OVS hands out itself
OFPORT_LOCK_FILE = "dpdk-oci-hook.ofports.lock"
REMOVE_RULES_TIMEOUT_S = 0.5  # removal of rules is hygiene (the next port on a number clears them): never stall on it


def _is_owner(owner: object) -> bool:
    return isinstance(owner, str) and 0 < len(owner) <= OWNER_MAX and set(owner) <= OWNER_CHARS


class OvsSwitch:
    """Ports as vhost-user (and system) interfaces of an OVS-DPDK bridge."""

    name = "ovs"

    def __init__(self, config: SwitchConfig) -> None:
        self.config = config
        self.target = config.ovsdb or default_target(config.ovs_rundir)

    # --- plumbing ---------------------------------------------------------------

    def _error(self, reason: str) -> SwitchError:
        return SwitchError(backend=self.name, reason=reason)

    def _connect(self, timeout_s: float | None = None) -> Connection:
        try:
            return Connection(self.target, self.config.timeout_s if timeout_s is None else timeout_s)
        except OvsdbError as exc:
            raise self._error(exc.reason) from None

    def _tags(self, owner: str) -> dict[str, str]:
        return {OWNER_KEY: owner, SCOPE_KEY: self.config.scope}

    def _check_owner(self, owner: str) -> None:
        if not _is_owner(owner):
            raise self._error(f"owner {owner[:80]!r} is not an instance key (1..{OWNER_MAX} characters of A-Z a-z 0-9 . _ : -)")

    def allowed_bridges(self) -> tuple[str, ...]:
        return self.config.bridges or (self.config.bridge,)

    def _mgmt_socket(self, bridge: str) -> str:
        return os.path.join(self.config.ovs_rundir, f"{bridge}.mgmt")

    # --- the Switch protocol ------------------------------------------------------

    def client_socket_path(self, port_name: str) -> str:
        return client_socket_path(self.config, port_name)

    def add_ports(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        if not ports and not kernel:
            return
        self._check_owner(owner)
        for port in ports:
            if port.mode not in _TYPES:
                raise self._error(f"port {port.name}: unknown mode {port.mode!r}")
        for bridge in dict.fromkeys([p.bridge for p in ports] + [k.bridge for k in kernel]):
            if bridge not in self.allowed_bridges():
                raise self._error(f"bridge {bridge} is not allowed by the host policy (allowed: {', '.join(self.allowed_bridges())})")
        committed = False
        rules_first = False  # rules sent before the commit (and so to be deleted if it fails)
        rules_in = False
        bridges = {p.name: p.bridge for p in ports} | {k.host_name: k.bridge for k in kernel}  # by port name
        try:
            with self._connect() as db:
                lock = self._ofport_lock() if self.config.anti_spoofing else None
                try:
                    for attempt in (1, 2):
                        snap = Snapshot.from_results(db.transact(Snapshot.read_ops()))
                        commands, wait, ofports = self._plan_add(owner, ports, kernel, snap)
                        # an existing bridge answers OpenFlow now, while ovs-vswitchd is idle; a new one
                        # has no management socket before ovs-vswitchd made it
                        rules_first = bool(ofports) and all(b in snap.bridges for b in bridges.values())
                        if rules_first:
                            rules_in = True
                            self._install_rules(ports, kernel, ofports, committed=False)
                        try:
                            results = db.transact(transaction_ops(commands, snap))
                            committed = True
                            break
                        except TransactError as exc:
                            if rules_first:
                                self._remove_rules(list(bridges), bridges)
                                rules_in = False
                            if attempt == 2:  # the switch changed under us twice: say what failed
                                raise self._error(f"the switch refused the port transaction: {exc.reason}") from None
                finally:
                    if lock is not None:
                        os.close(lock)
                if wait:
                    self._wait_applied(db, int(results[-1]["rows"][0]["next_cfg"]))
                    self._check_applied(db, ports, kernel, ofports)
            if self.config.anti_spoofing and not rules_first:
                self._install_rules(ports, kernel, ofports, committed=True)
        except OvsdbError as exc:
            self._undo_add(owner, ports, kernel, committed, rules_in, bridges)
            reason = exc.reason
            if exc.timed_out:
                reason += f" (timed out after {self.config.timeout_s:g}s; is ovs-vswitchd running?)"
            raise self._error(reason + ("; ports removed again" if committed else "")) from None
        except SwitchError:
            self._undo_add(owner, ports, kernel, committed, rules_in, bridges)
            raise

    def remove_ports(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        names = [p.name for p in ports] + [k.host_name for k in kernel]
        if not names:
            return
        self._check_owner(owner)
        bridges = {p.name: p.bridge for p in ports} | {k.host_name: k.bridge for k in kernel}
        self._remove(self._tags(owner), names, bridges)

    def remove_port_names(self, names: Sequence[str]) -> None:
        """Delete these ports by name whoever owns them, within this installation's scope (``gc``)."""
        if names:
            self._remove({SCOPE_KEY: self.config.scope}, list(names), None)

    def owned_ports(self) -> dict[str, list[str]]:
        """Owner -> names of this installation's ports (other scopes' are not listed)."""
        scope = {SCOPE_KEY: self.config.scope}
        try:
            with self._connect() as db:
                results = db.transact([find_by_tags("Port", scope), find_by_tags("Interface", scope)])
        except OvsdbError as exc:
            raise self._error(exc.reason) from None
        found: dict[str, set[str]] = {}
        for result in results:
            snap = Snapshot.from_results([{}, {}, result, {}])
            for name, row in snap.ports.items():
                owner = row["external_ids"].get(OWNER_KEY)
                if owner:
                    found.setdefault(owner, set()).add(name)
        return {owner: sorted(names) for owner, names in found.items()}

    # --- helpers for doctor / gc -----------------------------------------------------

    def bridge_exists(self, bridge: str) -> bool:
        try:
            with self._connect() as db:
                result = db.transact(select_by_name("Bridge", [bridge], ("name",)))
        except OvsdbError as exc:
            raise self._error(exc.reason) from None
        return bool(result[0].get("rows"))

    def dpdk_initialized(self) -> bool:
        try:
            with self._connect() as db:
                snap = Snapshot.from_results(db.transact(Snapshot.read_ops()[:1]) + [{}, {}, {}])
        except OvsdbError as exc:
            raise self._error(exc.reason) from None
        return snap.root.get("dpdk_initialized") is True

    def restore_rules(self) -> list[str]:
        """Reinstall the anti-spoofing rules of this scope's ports (after ovs-vswitchd restarted); their names."""
        try:
            with self._connect() as db:
                snap = Snapshot.from_results(db.transact(Snapshot.read_ops()))
        except OvsdbError as exc:
            raise self._error(exc.reason) from None
        from hook.switch import openflow

        per_bridge: dict[str, list[tuple[int, openflow.Rule]]] = {}
        for name, iface in snap.interfaces.items():
            tags = iface["external_ids"]
            port = snap.ports.get(name)
            if tags.get(SCOPE_KEY) != self.config.scope or MAC_KEY not in tags or port is None or not isinstance(iface.get("ofport_request"), int):
                continue
            bridge = snap.bridge_of_port(port["_uuid"])
            if bridge is None:
                continue
            addresses = tags[ADDRESSES_KEY].split(",") if ADDRESSES_KEY in tags else None
            cookie = openflow.port_cookie(self.config.scope, name)
            kept = [a for a in addresses if a] if addresses is not None else None
            per_bridge.setdefault(bridge, []).extend((cookie, r) for r in openflow.port_rules(iface["ofport_request"], tags[MAC_KEY], kept))
        for bridge, rules in per_bridge.items():
            try:
                with openflow.Bridge(self._mgmt_socket(bridge), self.config.timeout_s) as of:
                    of.apply([], rules)
            except openflow.OpenFlowError as exc:
                raise self._error(exc.reason) from None
        return sorted({n for n, i in snap.interfaces.items() if i["external_ids"].get(SCOPE_KEY) == self.config.scope and MAC_KEY in i["external_ids"]})

    # --- internals --------------------------------------------------------------

    def _plan_add(
        self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec], snap: Snapshot
    ) -> tuple[list[Command], bool, dict[str, int]]:
        """The commands of one add, decided against the snapshot; whether to wait; ofport per name."""
        commands: list[Command] = []
        new_bridge = False
        for bridge in dict.fromkeys([p.bridge for p in ports] + [k.bridge for k in kernel]):
            row = snap.bridges.get(bridge)
            if row is not None:
                if row["datapath_type"] != "netdev":
                    kind = row["datapath_type"] or "empty, i.e. system"
                    raise self._error(
                        f"bridge {bridge} exists with datapath_type {kind}, not netdev: it is a kernel bridge, "
                        "which vhost-user ports cannot use, and the hook never changes an existing bridge"
                    )
            elif bridge == self.config.bridge and self.config.create_bridge:
                new_bridge = True
            else:
                why = "switch.create_bridge is false" if bridge == self.config.bridge else f"only the configured bridge {self.config.bridge} is created"
                raise self._error(f"no bridge named {bridge} ({why})")
            commands.append(AddBridge(bridge, "netdev", may_exist=True))
        for name in [p.name for p in ports] + [k.host_name for k in kernel]:
            row = snap.ports.get(name) or snap.interfaces.get(name)
            if row is None:
                continue
            tags = row["external_ids"]
            if tags.get(OWNER_KEY) == owner and tags.get(SCOPE_KEY) == self.config.scope:
                commands.append(DelPort(name, if_exists=True))  # a retried add: replace our own
                continue
            if OWNER_KEY not in tags:
                whose = "not managed by dpdk-oci-hook"
            elif tags.get(SCOPE_KEY) != self.config.scope:
                whose = "owned by another installation of dpdk-oci-hook"
            else:
                whose = f"owned by container {tags[OWNER_KEY]}"
            raise self._error(f"port {name} already exists and is {whose}")
        if ports:
            if snap.root.get("dpdk_initialized") is not True:
                raise self._error(
                    "ovs-vswitchd has not initialized DPDK (Open_vSwitch dpdk_initialized is not true; set other_config:dpdk-init=true)"
                )
            commands.append(Require("dpdk_initialized", True))
        ofports: dict[str, int] = {}
        if self.config.anti_spoofing:
            used = snap.ofports_in_use()
            number = OFPORT_FIRST
            for name in [p.name for p in ports] + [k.host_name for k in kernel]:
                while number in used:
                    number += 1
                if number > OFPORT_LAST:
                    raise self._error("no free OpenFlow port number left for anti-spoofing rules")
                ofports[name] = number
                used.add(number)
                commands.append(FreeOfport(number))
        tags = self._tags(owner)
        for p in ports:
            iface: dict[str, Any] = {"type": _TYPES[p.mode]}
            if p.mode == MODE_SERVER:
                iface["options"] = {"vhost-server-path": p.socket_host_path}
            if p.mtu is not None:
                iface["mtu_request"] = int(p.mtu)
            if p.name in ofports:
                iface["ofport_request"] = ofports[p.name]
            iface["external_ids"] = {**tags, INDEX_KEY: str(p.index), MAC_KEY: p.mac}
            commands.append(AddPort(p.bridge, p.name, self._port_columns(tags, str(p.index), p.vlan), iface))
        for k in kernel:  # the host end of a veth: a system port, served by ovs-vswitchd's main thread
            index = f"k{k.index}"
            iface = {"type": "system", "external_ids": {**tags, INDEX_KEY: index}}
            if k.mac:
                iface["external_ids"][MAC_KEY] = k.mac
            iface["external_ids"][ADDRESSES_KEY] = ",".join(k.addresses)
            if k.host_name in ofports:
                iface["ofport_request"] = ofports[k.host_name]
            commands.append(AddPort(k.bridge, k.host_name, self._port_columns(tags, index, getattr(k, "vlan", None)), iface))
        # wait for ovs-vswitchd whenever it opens something that must exist now: client sockets,
        # kernel devices (a vanished veth is only reported then), a new bridge (its rules' socket)
        wait = bool(kernel) or new_bridge or any(p.mode == MODE_CLIENT for p in ports)
        if wait:
            commands.append(BumpNextCfg())
        return commands, wait, ofports

    @staticmethod
    def _port_columns(tags: dict[str, str], index: str, vlan: int | None) -> dict[str, Any]:
        # an access port always: without a vlan, of VLAN 0, so tagged frames are dropped
        return {"tag": int(vlan or 0), "vlan_mode": "access", "external_ids": {**tags, INDEX_KEY: index}}

    def _wait_applied(self, db: Connection, next_cfg: int) -> None:
        def applied(row: dict[str, Any]) -> bool:
            cur = row.get("cur_cfg")
            return isinstance(cur, int) and cur >= next_cfg

        try:
            db.wait_until("Open_vSwitch", ["cur_cfg"], applied)
        except OvsdbError as exc:
            if exc.timed_out:
                raise OvsdbError("ovs-vswitchd did not apply the ports in time", True) from None
            raise

    def _check_applied(self, db: Connection, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec], ofports: dict[str, int]) -> None:
        """Interface setup errors (and ofports not as requested) as SwitchError."""
        names = [p.name for p in ports] + [k.host_name for k in kernel]
        query = select_by_name("Interface", names, ("name", "error", "ofport"))
        for _attempt in range(20):  # ovs-vswitchd may write ofport in a transaction after cur_cfg: give it a moment
            results = db.transact(query)
            if all(isinstance(((r.get("rows") or [{}])[0]).get("ofport"), int) for r in results):
                break
            time.sleep(0.05)
        for name, result in zip(names, results, strict=True):
            rows = result.get("rows") or [{}]
            snap = Snapshot.from_results([{}, {}, {}, {"rows": rows}])
            row = snap.interfaces.get(name, {})
            error = row.get("error")
            if isinstance(error, str) and error:
                raise self._error(self._explain(name, error, ports) + "; ports removed again")
            ofport = row.get("ofport")
            if name in ofports and ofport != ofports[name]:
                raise self._error(f"port {name} got OpenFlow port {ofport}, not the requested {ofports[name]}; ports removed again")

    def _install_rules(self, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec], ofports: dict[str, int], committed: bool) -> None:
        from hook.switch import openflow

        per_bridge: dict[str, tuple[list[tuple[int, int, int | None]], list[tuple[int, openflow.Rule]]]] = {}
        items: list[tuple[str, str, str | None, Sequence[str] | None]] = [(p.bridge, p.name, p.mac, None) for p in ports]
        items += [(k.bridge, k.host_name, k.mac, k.addresses) for k in kernel]
        for bridge, name, mac, addresses in items:
            if not mac:
                raise self._error(f"port {name} has no MAC: anti-spoofing rules need one")
            number = ofports[name]
            cookie = openflow.port_cookie(self.config.scope, name)
            delete, add = per_bridge.setdefault(bridge, ([], []))
            # stale rules: this port's own (a retry), and any of ours left on the number
            delete += [(cookie, (1 << 64) - 1, None), (openflow.COOKIE_MARK, openflow.COOKIE_MARK_MASK, number)]
            add += [(cookie, rule) for rule in openflow.port_rules(number, mac, addresses)]
        for bridge, (delete, add) in per_bridge.items():
            try:
                with openflow.Bridge(self._mgmt_socket(bridge), self.config.timeout_s) as of:
                    of.apply(delete, add)
            except openflow.OpenFlowError as exc:
                undone = "ports removed again" if committed else "no port was added"
                raise self._error(f"anti-spoofing rules on bridge {bridge}: {exc.reason}; {undone}") from None

    def _remove(self, tags: dict[str, str], names: list[str], bridges: dict[str, str] | None) -> None:
        """Drop the rules of the ports among ``names`` that carry ``tags``, then unlink them in one transaction.

        Rules go first: ovs-vswitchd answers OpenFlow between reconfigurations, and answers it
        at once while it is idle, not after the port's removal (a PMD reload) is done.
        """
        read = [find_by_tags("Port", tags)]
        if bridges is None:
            read.append({"op": "select", "table": "Bridge", "where": [], "columns": ["_uuid", "name", "datapath_type", "ports"]})
        try:
            with self._connect() as db:
                results = db.transact(read)
                snap = Snapshot.from_results([{}, results[1] if bridges is None else {}, results[0], {}])
                mine = [n for n in names if n in snap.ports]
                if mine and self.config.anti_spoofing:
                    self._remove_rules(mine, bridges, snap)
                db.transact(transaction_ops([DelPort(n) for n in mine], snap))
        except OvsdbError as exc:
            raise self._error(exc.reason) from None

    def _remove_rules(self, names: list[str], bridges: dict[str, str] | None, snap: Snapshot | None = None) -> None:
        """Delete the rules of ``names``; their bridges from ``bridges``, else looked up in ``snap``."""
        from hook.switch import openflow

        per_bridge: dict[str, list[tuple[int, int, int | None]]] = {}
        for name in names:
            if bridges is not None:
                bridge = bridges.get(name)
            else:
                assert snap is not None
                bridge = snap.bridge_of_port(snap.ports[name]["_uuid"])
            if bridge:
                per_bridge.setdefault(bridge, []).append((openflow.port_cookie(self.config.scope, name), (1 << 64) - 1, None))
        for bridge, delete in per_bridge.items():
            try:
                with openflow.Bridge(self._mgmt_socket(bridge), min(REMOVE_RULES_TIMEOUT_S, self.config.timeout_s)) as of:
                    of.apply(delete, [])
            except openflow.OpenFlowError:
                pass  # rules of a port that is gone match nothing; a new port on the number clears them

    def _ofport_lock(self) -> int:
        """Hold the lock that makes picking OpenFlow port numbers, sending their rules and the
        commit one step among every hook on this OVS (its file sits in OVS's run directory, so
        other installations share it); the fd to close.

        Without it two starts could pick the same free number and send identical rules, and
        OpenFlow replaces an identical rule, cookie and all: the loser's cleanup would delete
        the winner's.  Held for a snapshot, one OpenFlow round trip and one commit (~2 ms).
        """
        path = os.path.join(self.config.ovs_rundir, OFPORT_LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._error(f"cannot open the port-number lock {path}: {exc.strerror or exc}") from None
        import fcntl

        # polled, not the ledger's SIGALRM-bounded wait: a switch may be driven from a thread
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._error(f"another start held the port-number lock {path} for over {self.config.timeout_s:g}s") from None
                time.sleep(0.001)

    def _undo_add(
        self,
        owner: str,
        ports: Sequence[PortLease],
        kernel: Sequence[KernelPortSpec],
        committed: bool,
        rules_in: bool,
        bridges: dict[str, str],
    ) -> None:
        """After a failed add: remove the committed ports (and their rules), or rules sent before a commit that never came."""
        if committed:
            self._rollback(owner, ports, kernel)
        elif rules_in:
            self._remove_rules(list(bridges), bridges)

    def _rollback(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec]) -> None:
        """Best effort: remove what a failed add committed."""
        try:
            self.remove_ports(owner, ports, kernel)
        except SwitchError:
            pass  # gc finds the leftovers by owner tag

    def _explain(self, name: str, error: str, ports: Sequence[PortLease]) -> str:
        reason = f"ovs-vswitchd could not set up port {name}: {error}"
        for p in ports:
            path = self.client_socket_path(p.name)
            if p.name == name and p.mode == MODE_CLIENT and os.path.lexists(path):
                reason += f" (something already exists at its socket path {path}: stale?)"
        return reason + " (see the ovs-vswitchd log)"
