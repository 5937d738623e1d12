"""Open vSwitch (userspace/DPDK datapath) backend, driven through ``ovs-vsctl``.

Every port a container gets is plugged in ONE ``ovs-vsctl`` invocation, which is one OVSDB
transaction: if any command of it fails, ovsdb-server commits nothing.

Ports carry owner tags in ``external_ids`` on both the Port and the Interface row
(:data:`~hook.switch.OWNER_KEY` = container id, :data:`~hook.switch.INDEX_KEY` = lease index,
``attached-mac`` = the MAC the container will use) so ``gc`` can find them from the switch side.

Decisions worth knowing:

* ``vlan=None`` leaves the Port without ``tag``, i.e. an OVS trunk port (OVS's default);
  any given vlan, 0 included, makes an access port with ``tag=<vlan>`` (``tag=0`` = only
  untagged traffic, the container cannot inject 802.1Q frames).
* ``queues`` is not written: vhost-user ports take their queue count from the virtio side.
* Waiting for ovs-vswitchd: a transaction that contains a client-mode port
  (``dpdkvhostuser``, OVS creates the socket) waits until ovs-vswitchd applied it, so the
  socket exists when :meth:`OvsSwitch.add_ports` returns and setup errors (e.g. a stale file
  at the socket path) are seen and rolled back.  A transaction of server-mode ports only
  (``dpdkvhostuserclient``, the app creates the socket) uses ``--no-wait``: ~2x faster, and a
  port added while ovs-vswitchd is down comes up when it returns.  Both kinds check
  ``dpdk_initialized`` in the same invocation.
* ovs-vsctl reports interface setup errors on stderr with exit status 0; we treat them as
  failures: the ports of the call are removed again (``--no-wait``) and SwitchError raised.
  The same rollback runs after a timeout (the commit may have happened before the wait).
* With ``create_bridge`` a bridge is ``--may-exist add-br`` + ``datapath_type=netdev``: an
  existing bridge of that name is switched to the userspace datapath.  Use
  ``create_bridge = false`` for a bridge someone else manages.
* Removal lists the rows first and deletes only ports whose owner tag is this container
  (two ovs-vsctl calls; ``--no-wait`` so poststop works while ovs-vswitchd is down).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

from hook.config import SwitchConfig
from hook.constants import INDEX_KEY, OWNER_KEY
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, MODE_SERVER, KernelPortSpec, PortLease
from hook.switch.base import client_socket_path

MAC_KEY = "attached-mac"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
_SETUP_ERROR = "Error detected while setting up"
_TYPES = {MODE_SERVER: "dpdkvhostuserclient", MODE_CLIENT: "dpdkvhostuser"}


def quote(value: str) -> str:
    """An OVSDB string atom as ovs-vsctl parses it: a JSON string literal."""
    return json.dumps(value)


def _map(cell: Any) -> dict[str, str]:
    """An OVSDB JSON ``["map", [[k, v], ...]]`` cell as a dict."""
    if isinstance(cell, list) and len(cell) == 2 and cell[0] == "map":
        return {str(k): str(v) for k, v in cell[1]}
    return {}


def _rows(text: str) -> list[list[dict[str, Any]]]:
    """Each ``--format=json`` table of ovs-vsctl's stdout as a list of row dicts."""
    tables = []
    for line in text.splitlines():
        if line.strip():
            doc = json.loads(line)
            tables.append([dict(zip(doc["headings"], row, strict=True)) for row in doc["data"]])
    return tables


class _Failed(Exception):
    """ovs-vsctl exited non-zero (internal; turned into SwitchError)."""

    def __init__(self, reason: str, stderr: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr = stderr
        self.timed_out = timed_out


class OvsSwitch:
    """Ports as vhost-user interfaces of an OVS-DPDK bridge."""

    name = "ovs"

    def __init__(self, config: SwitchConfig) -> None:
        self.config = config
        self._timeout = max(1, int(-(-config.timeout_s // 1)))  # ceil: ovs-vsctl takes seconds
        self._base = [config.ovs_vsctl, f"--timeout={self._timeout}"]
        if config.ovsdb:
            self._base.append(f"--db={config.ovsdb}")

    # --- plumbing ---------------------------------------------------------------

    def _run(self, args: Sequence[str], wait: bool = True) -> tuple[str, str]:
        """Run ovs-vsctl; (stdout, stderr) on exit 0, else raise _Failed."""
        argv = list(self._base)
        if not wait:
            argv.append("--no-wait")
        argv.extend(args)
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                env=_ENV,
                cwd="/",
                close_fds=True,
                timeout=self.config.timeout_s + 2,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _Failed(f"ovs-vsctl did not finish within {self.config.timeout_s + 2:g}s (killed)", "", True) from exc
        except OSError as exc:
            raise _Failed(f"cannot run {self.config.ovs_vsctl}: {exc.strerror or exc}", "") from exc
        if proc.returncode == 0:
            return proc.stdout, proc.stderr
        if proc.returncode in (-14, 142) or "signal 14" in proc.stderr:
            raise _Failed(
                f"ovs-vsctl timed out after {self._timeout}s (ovsdb-server or ovs-vswitchd not responding)",
                proc.stderr,
                True,
            )
        raise _Failed(_first_error(proc.stderr) or f"ovs-vsctl exited with {proc.returncode}", proc.stderr)

    def _error(self, reason: str) -> SwitchError:
        return SwitchError(backend=self.name, reason=reason)

    # --- the Switch protocol ------------------------------------------------------

    def client_socket_path(self, port_name: str) -> str:
        return client_socket_path(self.config, port_name)

    def add_ports(self, container_id: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        if not ports and not kernel:
            return
        for port in ports:
            if port.mode not in _TYPES:
                raise self._error(f"port {port.name}: unknown mode {port.mode!r}")
        # wait for ovs-vswitchd whenever it opens something that must exist now: client
        # sockets, and kernel devices (a vanished veth is only reported by a waiting call)
        wait = bool(kernel) or any(p.mode == MODE_CLIENT for p in ports)
        try:
            out, err = self._run(self._add_args(container_id, ports, kernel, replace=()), wait=wait)
        except _Failed as exc:
            if exc.timed_out:
                self._rollback(container_id, ports, kernel)
                raise self._error(exc.reason) from None
            if "already exists" not in exc.reason:
                raise self._error(exc.reason) from None
            # A retried prestart finds its own ports: replace them, refuse anyone else's.
            replace = self._own_conflicts(container_id, [p.name for p in ports] + [k.host_name for k in kernel], exc.reason)
            try:
                out, err = self._run(self._add_args(container_id, ports, kernel, replace), wait=wait)
            except _Failed as exc2:
                if exc2.timed_out:
                    self._rollback(container_id, ports, kernel)
                raise self._error(exc2.reason) from None
        setup = [line for line in err.splitlines() if _SETUP_ERROR in line]
        initialized = out.strip().splitlines()[-1:] == ["true"]
        if setup or not initialized:
            self._rollback(container_id, ports, kernel)
            if setup:
                raise self._error(self._explain(setup[0], ports) + "; ports removed again")
            raise self._error(
                "ovs-vswitchd has not initialized DPDK (Open_vSwitch dpdk_initialized is not true; set other_config:dpdk-init=true); ports removed again"
            )

    def remove_ports(self, container_id: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        names = [p.name for p in ports] + [k.host_name for k in kernel]
        if not names:
            return
        try:
            owned = self._owned_among(container_id, names)
        except _Failed as exc:
            raise self._error(exc.reason) from None
        self.remove_port_names(owned)

    def remove_port_names(self, names: Sequence[str]) -> None:
        """Delete these ports by name, whoever owns them, in one ``--no-wait`` transaction.

        For ``gc`` with names taken from :meth:`owned_ports`; missing ports are fine.
        """
        if not names:
            return
        args: list[str] = []
        for name in names:
            args += ["--", "--if-exists", "del-port", name]
        try:
            self._run(args, wait=False)
        except _Failed as exc:
            raise self._error(exc.reason) from None

    def owned_ports(self) -> dict[str, list[str]]:
        cond = f'external_ids:{OWNER_KEY}!=""'
        cols = "--columns=name,external_ids"
        try:
            out, _ = self._run(
                ["--format=json", "--", cols, "find", "Interface", cond, "--", cols, "find", "Port", cond],
                wait=False,
            )
            tables = _rows(out)
        except _Failed as exc:
            raise self._error(exc.reason) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(f"cannot parse ovs-vsctl output: {exc}") from None
        found: dict[str, set[str]] = {}
        for table in tables:
            for row in table:
                owner = _map(row.get("external_ids")).get(OWNER_KEY)
                if owner:
                    found.setdefault(owner, set()).add(str(row["name"]))
        return {owner: sorted(names) for owner, names in found.items()}

    # --- helpers for doctor / gc -----------------------------------------------------

    def bridge_exists(self, bridge: str) -> bool:
        try:
            self._run(["br-exists", bridge], wait=False)
        except _Failed as exc:
            if not exc.stderr.strip() and not exc.timed_out:
                return False  # br-exists exits 2, silently, for a missing bridge
            raise self._error(exc.reason) from None
        return True

    def dpdk_initialized(self) -> bool:
        try:
            out, _ = self._run(["get", "Open_vSwitch", ".", "dpdk_initialized"], wait=False)
        except _Failed as exc:
            raise self._error(exc.reason) from None
        return out.strip() == "true"

    # --- internals --------------------------------------------------------------

    def _add_args(self, container_id: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec], replace: Sequence[str]) -> list[str]:
        owner = f"external_ids:{OWNER_KEY}={quote(container_id)}"
        args: list[str] = []
        if self.config.create_bridge:
            for bridge in dict.fromkeys([p.bridge for p in ports] + [k.bridge for k in kernel]):
                args += ["--", "--may-exist", "add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev"]
        for name in replace:
            args += ["--", "--if-exists", "del-port", name]
        for p in ports:
            index = f"external_ids:{INDEX_KEY}={quote(str(p.index))}"
            port_cols = [owner, index]
            if p.vlan is not None:
                port_cols.append(f"tag={int(p.vlan)}")
            iface_cols = [f"type={_TYPES[p.mode]}"]
            if p.mode == MODE_SERVER:
                iface_cols.append(f"options:vhost-server-path={quote(p.socket_host_path)}")
            if p.mtu is not None:
                iface_cols.append(f"mtu_request={int(p.mtu)}")
            iface_cols += [owner, index]
            if p.mac:
                iface_cols.append(f"external_ids:{MAC_KEY}={quote(p.mac)}")
            args += ["--", "add-port", p.bridge, p.name, *port_cols]
            args += ["--", "set", "Interface", p.name, *iface_cols]
        for k in kernel:  # the host end of a veth: a system port, served by ovs-vswitchd's main thread
            index = f"external_ids:{INDEX_KEY}={quote('k' + str(k.index))}"
            args += ["--", "add-port", k.bridge, k.host_name, owner, index]
            args += ["--", "set", "Interface", k.host_name, "type=system", owner, index]
        args += ["--", "get", "Open_vSwitch", ".", "dpdk_initialized"]
        return args

    def _list(self, names: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Port and Interface rows (name, external_ids) with these names, in one call."""
        cols = "--columns=name,external_ids"
        out, _ = self._run(
            ["--format=json", "--", "--if-exists", cols, "list", "Port", *names, "--", "--if-exists", cols, "list", "Interface", *names],
            wait=False,
        )
        try:
            return _rows(out)
        except (ValueError, KeyError, TypeError) as exc:
            raise _Failed(f"cannot parse ovs-vsctl output: {exc}", "") from None

    def _owned_among(self, container_id: str, names: Sequence[str]) -> list[str]:
        """Which of ``names`` exist as ports whose owner tag is this container."""
        owned: set[str] = set()
        for table in self._list(names):
            for row in table:
                if _map(row.get("external_ids")).get(OWNER_KEY) == container_id:
                    owned.add(str(row["name"]))
        return [n for n in names if n in owned]

    def _own_conflicts(self, container_id: str, names: Sequence[str], reason: str) -> list[str]:
        """Names of existing rows that block the add; SwitchError unless all are ours."""
        try:
            tables = self._list(names)
        except _Failed as exc:
            raise self._error(exc.reason) from None
        existing: list[str] = []
        for table in tables:
            for row in table:
                name = str(row["name"])
                owner = _map(row.get("external_ids")).get(OWNER_KEY)
                if owner != container_id:
                    whose = f"owned by container {owner}" if owner else "not managed by dpdk-oci-hook"
                    raise self._error(f"port {name} already exists and is {whose}")
                if name not in existing:
                    existing.append(name)
        if not existing:  # e.g. a bridge of that name: nothing of ours to replace
            raise self._error(reason)
        return existing

    def _rollback(self, container_id: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        """Best effort: remove what a failed add may have committed, without waiting."""
        try:
            self.remove_ports(container_id, ports, kernel)
        except SwitchError:
            pass  # gc finds the leftovers by owner tag

    def _explain(self, line: str, ports: Sequence[PortLease]) -> str:
        """ovs-vsctl's "Error detected while setting up 'NAME': WHY.  See ..." made readable."""
        text = line.removeprefix("ovs-vsctl: ").strip()
        name, _, why = text.removeprefix(_SETUP_ERROR).strip().partition(": ")
        name = name.strip("'")
        why = why.split("  See ovs-vswitchd log", 1)[0].rstrip(". ")
        reason = f"ovs-vswitchd could not set up port {name}: {why or text}"
        for p in ports:
            path = self.client_socket_path(p.name)
            if p.name == name and p.mode == MODE_CLIENT and os.path.lexists(path):
                reason += f" (something already exists at its socket path {path}: stale?)"
        return reason + " (see the ovs-vswitchd log)"


def _first_error(stderr: str) -> str:
    """The first meaningful stderr line of ovs-vsctl, without its program prefix."""
    for line in stderr.splitlines():
        line = line.strip()
        if not line or "The default log directory is" in line:
            continue
        if "|" in line and line[:4].isdigit():  # a vlog line: keep the message part
            line = line.rsplit("|", 1)[-1]
        return line.removeprefix("ovs-vsctl: ").strip()
    return ""
