"""OVS command objects, the add plan's policy decisions and the OpenFlow encoding (pure: no switch)."""

from __future__ import annotations

import struct

import pytest

from hook.config import SwitchConfig
from hook.constants import INDEX_KEY, OWNER_KEY
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, MODE_SERVER, KernelPortSpec, PortLease
from hook.switch import openflow
from hook.switch.commands import (
    MAC_KEY,
    SCOPE_KEY,
    AddBridge,
    AddPort,
    BumpNextCfg,
    DelPort,
    Require,
    Snapshot,
    render_vsctl,
    transaction_ops,
)
from hook.switch.ovs import OFPORT_FIRST, OvsSwitch
from hook.switch.ovsdb import Connection, OvsdbError, decode


def snapshot(bridges: dict[str, str] | None = None, ports: dict[str, dict[str, str]] | None = None, dpdk: bool = True) -> Snapshot:
    """A snapshot as a read would give it: bridges name -> datapath_type, ports name -> external_ids."""
    snap = Snapshot()
    snap.root = {"_uuid": "root", "dpdk_initialized": dpdk, "next_cfg": 3, "cur_cfg": 3}
    snap.bridges = {n: {"_uuid": f"u-{n}", "name": n, "datapath_type": dt, "ports": []} for n, dt in (bridges or {}).items()}
    for name, tags in (ports or {}).items():
        snap.ports[name] = {"_uuid": f"p-{name}", "name": name, "external_ids": tags}
        snap.interfaces[name] = {"_uuid": f"i-{name}", "name": name, "external_ids": tags, "ofport": 1, "ofport_request": []}
    return snap


def lease(name: str, bridge: str = "br-dpdk", mode: str = MODE_SERVER, vlan: int | None = None, index: int = 0) -> PortLease:
    return PortLease(index, name, mode, bridge, f"/run/x/{name}.sock", f"/run/dpdk/net{index}.sock", f"02:00:00:00:00:{index + 1:02x}", vlan=vlan)


def switch(**kw: object) -> OvsSwitch:
    base: dict[str, object] = {"ovsdb": "unix:/nonexistent/db.sock", "scope": "s1", "bridges": ("br-dpdk", "br-b")}
    base.update(kw)
    return OvsSwitch(SwitchConfig(**base))  # type: ignore[arg-type]


# --- command objects ------------------------------------------------------------


def test_add_bridge_may_exist_guards_but_never_sets() -> None:
    ops = AddBridge("br-dpdk").ops(snapshot({"br-dpdk": "netdev"}))
    assert ops == [
        {
            "op": "wait",
            "table": "Bridge",
            "where": [["name", "==", "br-dpdk"]],
            "columns": ["datapath_type"],
            "until": "==",
            "rows": [{"datapath_type": "netdev"}],
            "timeout": 0,
        }
    ]
    assert not any(op["op"] in ("update", "mutate", "insert") for op in ops)


def test_add_bridge_when_missing_inserts_bridge_port_interface() -> None:
    ops = AddBridge("br-dpdk").ops(snapshot())
    kinds = [(op["op"], op["table"]) for op in ops]
    assert kinds == [("wait", "Bridge"), ("insert", "Interface"), ("insert", "Port"), ("insert", "Bridge"), ("mutate", "Open_vSwitch")]
    assert ops[3]["row"]["datapath_type"] == "netdev"
    assert ops[1]["row"] == {"name": "br-dpdk", "type": "internal"}


def test_add_bridge_without_may_exist_refuses_existing() -> None:
    with pytest.raises(ValueError):
        AddBridge("br-dpdk", may_exist=False).ops(snapshot({"br-dpdk": "netdev"}))


def test_add_port_ops_and_vsctl_rendering() -> None:
    cmd = AddPort("br-dpdk", "p0", {"tag": 0, "external_ids": {OWNER_KEY: 'a "b"'}}, {"type": "dpdkvhostuserclient", "ofport_request": 49152})
    ops = cmd.ops(snapshot())
    assert [op["op"] for op in ops] == ["insert", "insert", "mutate"]
    assert ops[0]["row"] == {"name": "p0", "type": "dpdkvhostuserclient", "ofport_request": 49152}
    assert ops[1]["row"]["external_ids"] == ["map", [[OWNER_KEY, 'a "b"']]]
    assert ops[1]["row"]["interfaces"] == ["named-uuid", ops[0]["uuid-name"]]
    assert ops[2]["mutations"] == [["ports", "insert", ["set", [["named-uuid", ops[1]["uuid-name"]]]]]]
    assert cmd.vsctl() == [
        "add-port", "br-dpdk", "p0", "tag=0", f'external_ids:{OWNER_KEY}="a \\"b\\""',
        "--", "set", "Interface", "p0", 'type="dpdkvhostuserclient"', "ofport_request=49152",
    ]  # fmt: skip


def test_del_port_if_exists() -> None:
    assert DelPort("gone").ops(snapshot()) == []
    with pytest.raises(ValueError):
        DelPort("gone", if_exists=False).ops(snapshot())
    ops = DelPort("p0").ops(snapshot(ports={"p0": {}}))
    assert ops == [{"op": "mutate", "table": "Bridge", "where": [], "mutations": [["ports", "delete", ["set", [["uuid", "p-p0"]]]]]}]


def test_transaction_and_render_compose_in_order() -> None:
    cmds = [DelPort("p0"), Require("dpdk_initialized", True), BumpNextCfg()]
    ops = transaction_ops(cmds, snapshot(ports={"p0": {}}))
    assert [op["op"] for op in ops] == ["mutate", "wait", "mutate", "select"]
    assert render_vsctl(cmds, wait=False) == ["--no-wait", "--", "--if-exists", "del-port", "p0", "--", "get", "Open_vSwitch", ".", "dpdk_initialized"]


def test_snapshot_decodes_rows() -> None:
    results = [
        {"rows": [{"_uuid": ["uuid", "r"], "dpdk_initialized": True, "next_cfg": 5, "cur_cfg": 4}]},
        {"rows": [{"_uuid": ["uuid", "b"], "name": "br", "datapath_type": "", "ports": ["uuid", "p"]}]},
        {"rows": [{"_uuid": ["uuid", "p"], "name": "x", "external_ids": ["map", [["k", "v"]]]}]},
        {"rows": [{"_uuid": ["uuid", "i"], "name": "x", "external_ids": ["map", []], "ofport": 7, "ofport_request": ["set", []]}]},
    ]
    snap = Snapshot.from_results(results)
    assert snap.root["next_cfg"] == 5
    assert snap.bridge_of_port("p") == "br"
    assert snap.ports["x"]["external_ids"] == {"k": "v"}
    assert snap.ofports_in_use() == {7}
    assert decode(["set", [["uuid", "a"], ["uuid", "b"]]]) == ["a", "b"]


# --- the add plan: policy --------------------------------------------------------


def test_bridge_outside_policy_is_refused_before_any_io() -> None:
    with pytest.raises(SwitchError, match="bridge br-x is not allowed by the host policy"):
        switch().add_ports("ctr", [lease("p0", bridge="br-x")])


def test_kernel_datapath_bridge_is_refused() -> None:
    for datapath in ("", "system"):
        with pytest.raises(SwitchError, match="bridge br-b exists with datapath_type .* never changes an existing bridge"):
            switch()._plan_add("ctr", [lease("p0", bridge="br-b")], (), snapshot({"br-b": datapath}))


def test_only_the_configured_bridge_is_created() -> None:
    sw = switch()
    cmds, wait, _ = sw._plan_add("ctr", [lease("p0")], (), snapshot())
    assert isinstance(cmds[0], AddBridge) and wait  # a new bridge: wait for ovs-vswitchd
    with pytest.raises(SwitchError, match="no bridge named br-b \\(only the configured bridge br-dpdk is created\\)"):
        sw._plan_add("ctr", [lease("p0", bridge="br-b")], (), snapshot())
    with pytest.raises(SwitchError, match="no bridge named br-dpdk \\(switch.create_bridge is false\\)"):
        switch(create_bridge=False)._plan_add("ctr", [lease("p0")], (), snapshot())


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({}, "not managed by dpdk-oci-hook"),
        ({OWNER_KEY: "ctr", SCOPE_KEY: "other"}, "owned by another installation"),
        ({OWNER_KEY: "ctr-b", SCOPE_KEY: "s1"}, "owned by container ctr-b"),
    ],
)
def test_foreign_port_of_the_same_name_is_refused(tags: dict[str, str], message: str) -> None:
    with pytest.raises(SwitchError, match=message):
        switch()._plan_add("ctr", [lease("p0")], (), snapshot({"br-dpdk": "netdev"}, {"p0": tags}))


def test_own_port_is_replaced_in_the_same_transaction() -> None:
    cmds, _, _ = switch()._plan_add("ctr", [lease("p0")], (), snapshot({"br-dpdk": "netdev"}, {"p0": {OWNER_KEY: "ctr", SCOPE_KEY: "s1"}}))
    kinds = [type(c).__name__ for c in cmds]
    assert kinds.index("DelPort") < kinds.index("AddPort")


def test_ports_are_access_ports_tagged_with_scope_and_ofport() -> None:
    cmds, wait, ofports = switch()._plan_add(
        "ctr", [lease("p0"), lease("p1", mode=MODE_CLIENT, vlan=7, index=1)], (), snapshot({"br-dpdk": "netdev"})
    )
    adds = [c for c in cmds if isinstance(c, AddPort)]
    assert [a.port["tag"] for a in adds] == [0, 7]
    assert all(a.port["vlan_mode"] == "access" for a in adds)
    assert adds[0].port["external_ids"] == {OWNER_KEY: "ctr", SCOPE_KEY: "s1", INDEX_KEY: "0"}
    assert adds[0].interface["external_ids"][MAC_KEY] == "02:00:00:00:00:01"
    assert ofports == {"p0": OFPORT_FIRST, "p1": OFPORT_FIRST + 1}
    assert adds[1].interface["ofport_request"] == OFPORT_FIRST + 1
    assert wait  # a client-mode port: OVS must have made the socket


def test_server_ports_on_existing_bridge_do_not_wait() -> None:
    cmds, wait, _ = switch()._plan_add("ctr", [lease("p0")], (), snapshot({"br-dpdk": "netdev"}))
    assert not wait and not any(isinstance(c, BumpNextCfg) for c in cmds)


def test_kernel_ports_are_access_ports_and_wait() -> None:
    k = KernelPortSpec(0, "dpvk0", "eth1", "br-dpdk", mac="02:00:00:00:01:01", addresses=("10.0.0.2/24",))
    cmds, wait, _ = switch()._plan_add("ctr", (), [k], snapshot({"br-dpdk": "netdev"}))
    add = next(c for c in cmds if isinstance(c, AddPort))
    assert add.port["tag"] == 0 and add.port["vlan_mode"] == "access" and add.interface["type"] == "system"
    assert wait and not any(isinstance(c, Require) for c in cmds)  # no DPDK needed for a kernel port


def test_dpdk_not_initialized_is_refused() -> None:
    with pytest.raises(SwitchError, match="has not initialized DPDK"):
        switch()._plan_add("ctr", [lease("p0")], (), snapshot({"br-dpdk": "netdev"}, dpdk=False))


def test_ofport_numbers_skip_used_ones() -> None:
    snap = snapshot({"br-dpdk": "netdev"}, {"x": {}})
    snap.interfaces["x"]["ofport_request"] = OFPORT_FIRST
    _, _, ofports = switch()._plan_add("ctr", [lease("p0")], (), snap)
    assert ofports == {"p0": OFPORT_FIRST + 1}
    _, _, none = switch(anti_spoofing=False)._plan_add("ctr", [lease("p0")], (), snap)
    assert none == {}


@pytest.mark.parametrize("owner", ["", "a" * 65, "has space", 'q"uote', "ümlaut", "a/b"])
def test_bad_owner_is_refused(owner: str) -> None:
    with pytest.raises(SwitchError, match="is not an instance key"):
        switch().add_ports(owner, [lease("p0")])
    with pytest.raises(SwitchError, match="is not an instance key"):
        switch().remove_ports(owner, [lease("p0")])


def test_unsupported_database_target_is_a_clear_error() -> None:
    with pytest.raises(OvsdbError, match="only unix:PATH and tcp:HOST:PORT"):
        Connection("ssl:10.0.0.1:6640", 1.0)
    with pytest.raises(SwitchError, match="cannot connect to the database unix:/nonexistent/db.sock"):
        switch().owned_ports()


# --- OpenFlow encoding -------------------------------------------------------------


def _oxms(match: bytes) -> list[tuple[int, bytes]]:
    kind, length = struct.unpack("!HH", match[:4])
    assert kind == 1 and len(match) % 8 == 0
    out, pos = [], 4
    while pos < length:
        cls, field, size = struct.unpack("!HBB", match[pos : pos + 4])
        assert cls == 0x8000
        out.append((field >> 1, match[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return out


def test_port_cookie_is_marked_and_scoped() -> None:
    a, b = openflow.port_cookie("s1", "p0"), openflow.port_cookie("s2", "p0")
    assert a != b
    assert a & openflow.COOKIE_MARK_MASK == openflow.COOKIE_MARK == b & openflow.COOKIE_MARK_MASK


def test_vhost_port_rules_allow_own_mac_and_drop_the_rest() -> None:
    rules = openflow.port_rules(49152, "02:00:00:00:00:01")
    assert [(r.priority, r.allow) for r in rules] == [(openflow.PRIORITY_ALLOW_MAC, True), (openflow.PRIORITY_DROP, False)]
    assert _oxms(rules[0].match()) == [(0, struct.pack("!I", 49152)), (4, bytes.fromhex("020000000001"))]
    assert _oxms(rules[1].match()) == [(0, struct.pack("!I", 49152))]


def test_kernel_port_rules_check_addresses() -> None:
    rules = openflow.port_rules(7, "02:00:00:00:00:01", ["10.0.0.2/24", "fd00::2/64"])
    allowed = [dict(_oxms(r.match())) for r in rules if r.allow and r.priority == openflow.PRIORITY_ALLOW_ADDRESS]
    arp = next(m for m in allowed if m.get(5) == b"\x08\x06")
    assert arp[22] == bytes([10, 0, 0, 2]) and arp[24] == bytes.fromhex("020000000001")
    assert any(m.get(11) == bytes([10, 0, 0, 2]) for m in allowed)
    assert sum(1 for m in allowed if m.get(5) == b"\x86\xdd") == 3  # link-local, unspecified, fd00::2
    drops = [dict(_oxms(r.match())).get(5) for r in rules if not r.allow and r.priority == openflow.PRIORITY_DROP_L3]
    assert sorted(drops) == sorted([b"\x08\x06", b"\x08\x00", b"\x86\xdd"])  # type: ignore[type-var]
