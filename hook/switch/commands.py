"""OVS operations as small command objects, composed into one OVSDB transaction.

A transaction is built in two steps, as ``ovs-vsctl`` does it: one read (:class:`Snapshot`,
every row the commands decide on) and one write whose commands are resolved against that
read (``--may-exist`` / ``--if-exists`` become "nothing to do" when the snapshot says so) and
guarded by ``wait`` operations, so a concurrent change makes the write fail instead of
acting on a stale read.  The unique name indexes of Bridge, Port and Interface make
ovsdb-server itself refuse a second row with a name.

Each command renders itself two ways: as OVSDB operations (what the hook sends) and as the
equivalent ``ovs-vsctl`` arguments (:func:`render_vsctl`, the one place argv is made; used to
show and to time the same transaction through ovs-vsctl).  Pure: no I/O here.
"""

from __future__ import annotations

import json
from typing import Any

from hook.switch.ovsdb import decode, omap, oset

SCOPE_KEY = "dpdk-oci-hook-scope"  # external_ids key: the installation the owner belongs to
MAC_KEY = "attached-mac"
ADDRESSES_KEY = "dpdk-oci-hook-addresses"  # a kernel port's CIDRs, comma separated


class Snapshot:
    """The rows a port transaction decides on, read in one request."""

    TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("Open_vSwitch", ("_uuid", "dpdk_initialized", "next_cfg", "cur_cfg")),
        ("Bridge", ("_uuid", "name", "datapath_type", "ports")),
        ("Port", ("_uuid", "name", "external_ids")),
        ("Interface", ("_uuid", "name", "external_ids", "ofport", "ofport_request")),
    )

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}
        self.bridges: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.interfaces: dict[str, dict[str, Any]] = {}

    @classmethod
    def read_ops(cls) -> list[dict[str, Any]]:
        return [{"op": "select", "table": t, "where": [], "columns": list(c)} for t, c in cls.TABLES]

    @classmethod
    def from_results(cls, results: list[dict[str, Any]]) -> Snapshot:
        snap = cls()
        tables = [[{k: decode(v) for k, v in row.items()} for row in r.get("rows", [])] for r in results]
        snap.root = tables[0][0] if tables[0] else {}
        snap.bridges = {r["name"]: r for r in tables[1]}
        snap.ports = {r["name"]: r for r in tables[2]}
        snap.interfaces = {r["name"]: r for r in tables[3]}
        return snap

    def bridge_of_port(self, port_uuid: str) -> str | None:
        for name, row in self.bridges.items():
            ports = row["ports"] if isinstance(row["ports"], list) else [row["ports"]]
            if port_uuid in ports:
                return name
        return None

    def ofports_in_use(self) -> set[int]:
        used: set[int] = set()
        for row in self.interfaces.values():
            for col in ("ofport", "ofport_request"):
                value = row.get(col)
                if isinstance(value, int):
                    used.add(value)
        return used


def _vsctl_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # an OVSDB string atom as ovs-vsctl parses it


def _vsctl_columns(columns: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for col, value in columns.items():
        if isinstance(value, dict):
            out += [f"{col}:{k}={_vsctl_value(v)}" for k, v in value.items()]
        else:
            out.append(f"{col}={_vsctl_value(value)}")
    return out


def _row(columns: dict[str, Any]) -> dict[str, Any]:
    return {col: omap(v) if isinstance(v, dict) else v for col, v in columns.items()}


def _wait_rows(table: str, where: list[Any], columns: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A guard: the selected rows are exactly ``rows`` now, or the transaction fails."""
    return {"op": "wait", "table": table, "where": where, "columns": columns, "until": "==", "rows": rows, "timeout": 0}


class Command:
    """One OVS operation: OVSDB ops resolved against a snapshot, and its ovs-vsctl form."""

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        raise NotImplementedError

    def vsctl(self) -> list[str]:
        raise NotImplementedError


class AddBridge(Command):
    """``[--may-exist] add-br NAME -- set Bridge NAME datapath_type=...``.

    With ``may_exist`` an existing bridge is left exactly as it is (a guard checks it still
    has the datapath type the snapshot showed); nothing of it is ever set.
    """

    def __init__(self, name: str, datapath_type: str = "netdev", may_exist: bool = True) -> None:
        self.name, self.datapath_type, self.may_exist = name, datapath_type, may_exist

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        where = [["name", "==", self.name]]
        existing = snap.bridges.get(self.name)
        if existing is not None:
            if not self.may_exist:
                raise ValueError(f"bridge {self.name} already exists")
            return [_wait_rows("Bridge", where, ["datapath_type"], [{"datapath_type": existing["datapath_type"]}])]
        iface, port, bridge = (f"{kind}_{self.name}".replace("-", "_").replace(".", "_") for kind in ("bi", "bp", "br"))
        return [
            _wait_rows("Bridge", where, ["name"], []),
            {"op": "insert", "table": "Interface", "row": {"name": self.name, "type": "internal"}, "uuid-name": iface},
            {"op": "insert", "table": "Port", "row": {"name": self.name, "interfaces": ["named-uuid", iface]}, "uuid-name": port},
            {
                "op": "insert",
                "table": "Bridge",
                "row": {"name": self.name, "ports": ["named-uuid", port], "datapath_type": self.datapath_type},
                "uuid-name": bridge,
            },
            {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "insert", oset([["named-uuid", bridge]])]]},
        ]

    def vsctl(self) -> list[str]:
        return [*(["--may-exist"] if self.may_exist else []), "add-br", self.name, "--", "set", "Bridge", self.name, f"datapath_type={self.datapath_type}"]


class AddPort(Command):
    """``add-port BRIDGE NAME <port columns> -- set Interface NAME <interface columns>``."""

    def __init__(self, bridge: str, name: str, port: dict[str, Any], interface: dict[str, Any], may_exist: bool = False) -> None:
        self.bridge, self.name, self.port, self.interface, self.may_exist = bridge, name, port, interface, may_exist

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        if self.may_exist and self.name in snap.ports:
            return []
        tag = "".join(c if c.isalnum() else "_" for c in self.name)
        iface_row = _row({"name": self.name, **self.interface})
        port_row = _row({"name": self.name, **self.port})
        port_row["interfaces"] = ["named-uuid", f"i_{tag}"]
        return [
            {"op": "insert", "table": "Interface", "row": iface_row, "uuid-name": f"i_{tag}"},
            {"op": "insert", "table": "Port", "row": port_row, "uuid-name": f"p_{tag}"},
            {
                "op": "mutate",
                "table": "Bridge",
                "where": [["name", "==", self.bridge]],
                "mutations": [["ports", "insert", oset([["named-uuid", f"p_{tag}"]])]],
            },
        ]

    def vsctl(self) -> list[str]:
        head = ["--may-exist"] if self.may_exist else []
        return [*head, "add-port", self.bridge, self.name, *_vsctl_columns(self.port), "--", "set", "Interface", self.name, *_vsctl_columns(self.interface)]


class DelPort(Command):
    """``[--if-exists] del-port NAME``: unlink the Port from its bridge (OVSDB then drops its rows)."""

    def __init__(self, name: str, if_exists: bool = True) -> None:
        self.name, self.if_exists = name, if_exists

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        row = snap.ports.get(self.name)
        if row is None:
            if self.if_exists:
                return []
            raise ValueError(f"no port named {self.name}")
        return [{"op": "mutate", "table": "Bridge", "where": [], "mutations": [["ports", "delete", oset([["uuid", row["_uuid"]]])]]}]

    def vsctl(self) -> list[str]:
        return [*(["--if-exists"] if self.if_exists else []), "del-port", self.name]


class Require(Command):
    """A guard on the Open_vSwitch row: ``column`` has ``value``, else nothing commits (e.g. dpdk_initialized)."""

    def __init__(self, column: str, value: Any) -> None:
        self.column, self.value = column, value

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        return [_wait_rows("Open_vSwitch", [], [self.column], [{self.column: self.value}])]

    def vsctl(self) -> list[str]:
        return ["get", "Open_vSwitch", ".", self.column]


class FreeOfport(Command):
    """A guard: no interface uses or requests OpenFlow port ``number`` (we are about to request it)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        return [_wait_rows("Interface", [[col, "==", self.number]], ["name"], []) for col in ("ofport", "ofport_request")]

    def vsctl(self) -> list[str]:
        return []  # ovs-vsctl has no such guard


class BumpNextCfg(Command):
    """Ask ovs-vswitchd to report when it applied this transaction (``next_cfg += 1``, as ovs-vsctl does)."""

    def ops(self, snap: Snapshot) -> list[dict[str, Any]]:
        return [
            {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]},
            {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]},
        ]

    def vsctl(self) -> list[str]:
        return []  # ovs-vsctl waits unless --no-wait


def find_by_tags(table: str, tags: dict[str, str], columns: tuple[str, ...] = ("_uuid", "name", "external_ids")) -> dict[str, Any]:
    """``find TABLE external_ids:{tags}`` as one select (the server filters)."""
    return {"op": "select", "table": table, "where": [["external_ids", "includes", omap(tags)]], "columns": list(columns)}


def select_by_name(table: str, names: list[str], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"op": "select", "table": table, "where": [["name", "==", n]], "columns": list(columns)} for n in names]


def transaction_ops(commands: list[Command], snap: Snapshot) -> list[dict[str, Any]]:
    """All commands' operations, in order, for one ``transact``."""
    ops: list[dict[str, Any]] = []
    for command in commands:
        ops += command.ops(snap)
    return ops


def render_vsctl(commands: list[Command], wait: bool = True) -> list[str]:
    """The same commands as one ovs-vsctl invocation's arguments (after the program and its options)."""
    args = [] if wait else ["--no-wait"]
    for command in commands:
        part = command.vsctl()
        if part:
            args += ["--", *part]
    return args
