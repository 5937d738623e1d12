"""OvsSwitch against a real private OVS-DPDK: end state is asserted in OVSDB, not on calls.

The switch under test may use every bridge the ``bridge`` fixture names (its policy) and
creates only the configured one; policy, VLAN and anti-spoofing behaviour on real frames is
in test_switch_policy.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from hook.config import SwitchConfig
from hook.constants import INDEX_KEY, OWNER_KEY
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, MODE_SERVER, PortLease
from hook.switch.commands import SCOPE_KEY
from hook.switch.factory import make_switch
from hook.switch.ovs import OvsSwitch
from tests.helpers.ovs_instance import OvsInstance

SCOPE = "test-scope"


def config(ovs: OvsInstance, bridge: str = "br-dpdk", *more_bridges: str, **overrides: object) -> SwitchConfig:
    """A switch whose configured bridge is ``bridge`` and whose policy allows it and ``more_bridges``."""
    base: dict[str, object] = {
        "backend": "ovs",
        "ovs_vsctl": ovs.vsctl_path,
        "ovsdb": ovs.db,
        "ovs_rundir": ovs.rundir,
        "timeout_s": 5.0,
        "bridge": bridge,
        "bridges": (bridge, *more_bridges),
        "scope": SCOPE,
    }
    base.update(overrides)
    return SwitchConfig(**base)  # type: ignore[arg-type]


def lease(ovs: OvsInstance, bridge: str, index: int, mode: str = MODE_SERVER, **kw: object) -> PortLease:
    name = str(kw.pop("name", None) or ovs.unique("tp"))
    path = os.path.join(ovs.rundir, name) if mode == MODE_CLIENT else f"/tmp/dpdk-oci-test/{name}.sock"
    fields: dict[str, object] = {
        "index": index,
        "name": name,
        "mode": mode,
        "bridge": bridge,
        "socket_host_path": path,
        "container_path": f"/run/dpdk/net{index}.sock",
        "mac": f"02:00:00:00:00:{index + 1:02x}",
    }
    fields.update(kw)
    return PortLease(**fields)  # type: ignore[arg-type]


def wait_for(predicate: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def port_names(ovs: OvsInstance, bridge: str) -> list[str]:
    return ovs.vsctl("list-ports", bridge, wait=False).split()


@pytest.fixture
def bridge(ovs: OvsInstance) -> Iterator[str]:
    """A bridge name not created yet; deleted (with its ports) after the test."""
    name = ovs.unique("tbr")
    yield name
    ovs.vsctl("--if-exists", "del-br", name)


@pytest.fixture
def sw(ovs: OvsInstance, bridge: str) -> OvsSwitch:
    return OvsSwitch(config(ovs, bridge))


def test_factory_picks_ovs(ovs: OvsInstance) -> None:
    switch = make_switch(config(ovs))
    assert isinstance(switch, OvsSwitch) and switch.name == "ovs"


def test_add_two_ports_both_modes_on_new_bridge(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    server = lease(ovs, bridge, 0, MODE_SERVER, mtu=9000, vlan=100)
    client = lease(ovs, bridge, 1, MODE_CLIENT, vlan=0)
    assert ovs.row("Bridge", bridge) is None

    sw.add_ports("ctr-a", [server, client])

    br = ovs.row("Bridge", bridge)
    assert br is not None and br["datapath_type"] == "netdev"
    assert sorted(port_names(ovs, bridge)) == sorted([server.name, client.name])

    iface = ovs.row("Interface", server.name)
    assert iface is not None
    assert iface["type"] == "dpdkvhostuserclient"
    assert iface["options"] == {"vhost-server-path": server.socket_host_path}
    assert iface["mtu_request"] == 9000
    assert iface["external_ids"] == {OWNER_KEY: "ctr-a", SCOPE_KEY: SCOPE, INDEX_KEY: "0", "attached-mac": server.mac}
    port = ovs.row("Port", server.name)
    assert port is not None and port["tag"] == 100 and port["vlan_mode"] == "access"
    assert port["external_ids"] == {OWNER_KEY: "ctr-a", SCOPE_KEY: SCOPE, INDEX_KEY: "0"}

    iface = ovs.row("Interface", client.name)
    assert iface is not None
    assert iface["type"] == "dpdkvhostuser"
    assert iface["options"] == {}
    assert iface["mtu_request"] == []
    assert iface["external_ids"] == {OWNER_KEY: "ctr-a", SCOPE_KEY: SCOPE, INDEX_KEY: "1", "attached-mac": client.mac}
    assert iface["error"] == []
    port = ovs.row("Port", client.name)
    assert port is not None and port["tag"] == 0  # vlan 0: access port for untagged traffic only
    assert port["external_ids"] == {OWNER_KEY: "ctr-a", SCOPE_KEY: SCOPE, INDEX_KEY: "1"}


def test_no_vlan_means_access_port_of_vlan_0(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    p = lease(ovs, bridge, 0)
    sw.add_ports("ctr-notag", [p])
    port = ovs.row("Port", p.name)
    assert port is not None and port["tag"] == 0 and port["vlan_mode"] == "access" and port["trunks"] == []


def test_client_mode_socket_appears(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    p = lease(ovs, bridge, 0, MODE_CLIENT)
    path = sw.client_socket_path(p.name)
    assert path == os.path.join(ovs.rundir, p.name)
    assert not os.path.lexists(path)

    sw.add_ports("ctr-sock", [p])
    assert wait_for(lambda: os.path.exists(path), 5.0)
    import stat

    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)  # OVS listens as the vhost-user server

    sw.remove_ports("ctr-sock", [p])
    assert wait_for(lambda: not os.path.lexists(path), 5.0), "OVS should unlink the socket of a removed port"


def test_ports_on_different_bridges(ovs: OvsInstance, bridge: str) -> None:
    other = ovs.unique("tbr")
    sw = OvsSwitch(config(ovs, bridge, other))
    ovs.vsctl("add-br", other, "--", "set", "bridge", other, "datapath_type=netdev")  # only the configured one is created
    try:
        a = lease(ovs, bridge, 0)
        b = lease(ovs, other, 1, MODE_CLIENT)
        sw.add_ports("ctr-two-br", [a, b])
        assert port_names(ovs, bridge) == [a.name]
        assert port_names(ovs, other) == [b.name]
        for br in (bridge, other):
            row = ovs.row("Bridge", br)
            assert row is not None and row["datapath_type"] == "netdev"
    finally:
        ovs.vsctl("--if-exists", "del-br", other)


def test_remove_is_idempotent_and_keeps_bridge(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    ports = [lease(ovs, bridge, 0), lease(ovs, bridge, 1, MODE_CLIENT)]
    sw.add_ports("ctr-rm", ports)
    sw.remove_ports("ctr-rm", ports)
    assert port_names(ovs, bridge) == []
    for p in ports:
        assert ovs.row("Interface", p.name) is None
    sw.remove_ports("ctr-rm", ports)  # second time: nothing left, no error
    assert sw.bridge_exists(bridge)
    assert "ctr-rm" not in sw.owned_ports()


def test_remove_only_deletes_own_ports(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    mine = lease(ovs, bridge, 0)
    sw.add_ports("ctr-owner", [mine])
    foreign = lease(ovs, bridge, 1)
    ovs.vsctl("add-port", bridge, foreign.name, "--", "set", "Interface", foreign.name, "type=internal")

    sw.remove_ports("ctr-intruder", [mine, foreign])  # neither is ctr-intruder's

    assert sorted(port_names(ovs, bridge)) == sorted([mine.name, foreign.name])
    sw.remove_ports("ctr-owner", [mine, foreign])
    assert port_names(ovs, bridge) == [foreign.name]


def test_conflict_with_foreign_port_leaves_nothing(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    first = lease(ovs, bridge, 0, MODE_CLIENT)
    taken = lease(ovs, bridge, 1)
    sw.add_ports("ctr-other", [taken])

    with pytest.raises(SwitchError) as err:
        sw.add_ports("ctr-late", [first, taken])

    assert "ctr-other" in str(err.value) and taken.name in str(err.value)
    assert port_names(ovs, bridge) == [taken.name]
    assert ovs.row("Interface", first.name) is None
    row = ovs.row("Interface", taken.name)
    assert row is not None and row["external_ids"][OWNER_KEY] == "ctr-other"
    assert "ctr-late" not in sw.owned_ports()


def test_conflict_with_unmanaged_port_is_refused(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    taken = lease(ovs, bridge, 0)
    ovs.vsctl("add-port", bridge, taken.name, "--", "set", "Interface", taken.name, "type=internal")

    with pytest.raises(SwitchError, match="not managed by dpdk-oci-hook"):
        sw.add_ports("ctr-x", [taken])
    row = ovs.row("Interface", taken.name)
    assert row is not None and row["type"] == "internal" and row["external_ids"] == {}


def test_missing_bridge_without_create_leaves_nothing(ovs: OvsInstance, bridge: str) -> None:
    existing = ovs.unique("tbr")
    sw = OvsSwitch(config(ovs, bridge, existing, create_bridge=False))
    ovs.vsctl("add-br", existing, "--", "set", "bridge", existing, "datapath_type=netdev")
    try:
        ok = lease(ovs, existing, 0)
        bad = lease(ovs, bridge, 1)  # `bridge` does not exist
        with pytest.raises(SwitchError, match=f"no bridge named {bridge}"):
            sw.add_ports("ctr-nobr", [ok, bad])
        assert port_names(ovs, existing) == []
        assert ovs.row("Bridge", bridge) is None
        assert ovs.row("Interface", ok.name) is None
    finally:
        ovs.vsctl("--if-exists", "del-br", existing)


def test_setup_error_in_vswitchd_is_rolled_back(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    """A stale file at a client socket path: OVSDB commits, ovs-vswitchd fails; we undo."""
    server = lease(ovs, bridge, 0)
    client = lease(ovs, bridge, 1, MODE_CLIENT)
    stale = sw.client_socket_path(client.name)
    with open(stale, "w", encoding="ascii"):
        pass
    try:
        with pytest.raises(SwitchError) as err:
            sw.add_ports("ctr-stale", [server, client])
        assert f"could not set up port {client.name}" in str(err.value) and stale in str(err.value)
        assert port_names(ovs, bridge) == []
        assert ovs.row("Interface", server.name) is None
        assert ovs.row("Interface", client.name) is None
        assert os.path.isfile(stale)  # not ours to delete
    finally:
        os.unlink(stale)
    sw.add_ports("ctr-stale", [server, client])  # works once the path is free
    assert sorted(port_names(ovs, bridge)) == sorted([server.name, client.name])
    # ovs-vswitchd 3.1 / DPDK 22.11: the failed vhost-user bind sometimes closes the bridge
    # tap's fd ("error receiving ... Bad file descriptor"), and deleting the bridge then
    # leaves the tap behind.  Not ours to fix; not ours to leave either.
    ovs.vsctl("--if-exists", "del-br", bridge)
    if os.path.exists(f"/sys/class/net/{bridge}"):
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False, timeout=10)


def test_retried_add_replaces_own_ports(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    a = lease(ovs, bridge, 0, MODE_SERVER, mtu=1500)
    b = lease(ovs, bridge, 1, MODE_CLIENT)
    sw.add_ports("ctr-retry", [a, b])
    a2 = lease(ovs, bridge, 0, MODE_SERVER, name=a.name, mtu=2000, mac="02:00:00:00:00:aa")
    sw.add_ports("ctr-retry", [a2, b])

    assert sorted(port_names(ovs, bridge)) == sorted([a.name, b.name])
    row = ovs.row("Interface", a.name)
    assert row is not None and row["mtu_request"] == 2000
    assert row["external_ids"]["attached-mac"] == "02:00:00:00:00:aa"
    assert wait_for(lambda: os.path.exists(sw.client_socket_path(b.name)))
    assert sw.owned_ports()["ctr-retry"] == sorted([a.name, b.name])


def test_owned_ports_finds_tagged_ports(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    sw.add_ports("ctr-own-1", [lease(ovs, bridge, 0), lease(ovs, bridge, 1)])
    # A port the ledger no longer knows about: made by hand, only its tags remain.
    orphan = ovs.unique("tp")
    ovs.vsctl(
        "add-port",
        bridge,
        orphan,
        f"external_ids:{OWNER_KEY}=ctr-gone",
        f"external_ids:{SCOPE_KEY}={SCOPE}",
        "--",
        "set",
        "Interface",
        orphan,
        "type=dpdkvhostuserclient",
        "options:vhost-server-path=/tmp/dpdk-oci-test/gone.sock",
        f"external_ids:{OWNER_KEY}=ctr-gone",
        f"external_ids:{SCOPE_KEY}={SCOPE}",
    )
    untagged = ovs.unique("tp")
    ovs.vsctl("add-port", bridge, untagged, "--", "set", "Interface", untagged, "type=internal")

    owned = sw.owned_ports()
    mine = [n for n in port_names(ovs, bridge) if n not in (orphan, untagged)]
    assert owned["ctr-own-1"] == sorted(mine)
    assert owned["ctr-gone"] == [orphan]
    assert all(untagged not in names for names in owned.values())

    sw.remove_ports("ctr-gone", [lease(ovs, bridge, 0, name=orphan)])
    assert "ctr-gone" not in sw.owned_ports()


@pytest.mark.parametrize("owner", ["a" * 64, "k8s.io:ns_1:ctr-2", "0"], ids=["64-chars", "all-classes", "one-char"])
def test_instance_keys_round_trip(ovs: OvsInstance, sw: OvsSwitch, bridge: str, owner: str) -> None:
    p = lease(ovs, bridge, 0)
    sw.add_ports(owner, [p])
    row = ovs.row("Interface", p.name)
    assert row is not None and row["external_ids"][OWNER_KEY] == owner
    assert sw.owned_ports()[owner] == [p.name]
    sw.remove_ports(owner, [p])
    assert ovs.row("Interface", p.name) is None


@pytest.mark.parametrize("owner", ['we"ird id', "a" * 65, "ümlaut", "new\nline"], ids=["quotes-spaces", "65-chars", "non-ascii", "newline"])
def test_awkward_owner_is_refused_and_changes_nothing(ovs: OvsInstance, sw: OvsSwitch, bridge: str, owner: str) -> None:
    p = lease(ovs, bridge, 0)
    with pytest.raises(SwitchError, match="is not an instance key"):
        sw.add_ports(owner, [p])
    assert ovs.row("Bridge", bridge) is None and ovs.row("Interface", p.name) is None


def test_socket_path_with_spaces_and_quotes(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    p = lease(ovs, bridge, 0, socket_host_path='/tmp/dpdk oci "test"/a=b,c.sock')
    sw.add_ports("ctr-path", [p])
    row = ovs.row("Interface", p.name)
    assert row is not None and row["options"]["vhost-server-path"] == p.socket_host_path


def test_helpers(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    assert sw.dpdk_initialized() is True
    assert sw.bridge_exists(bridge) is False
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    assert sw.bridge_exists(bridge) is True


def test_empty_port_list_does_nothing(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    sw.add_ports("ctr-empty", [])
    sw.remove_ports("ctr-empty", [])
    assert ovs.row("Bridge", bridge) is None


def test_unreachable_database_is_a_clear_error(ovs: OvsInstance, bridge: str) -> None:
    sw = OvsSwitch(config(ovs, bridge, ovsdb=f"unix:{ovs.rundir}/nope.sock", timeout_s=1.0))
    start = time.monotonic()
    with pytest.raises(SwitchError) as err:
        sw.add_ports("ctr-nodb", [lease(ovs, bridge, 0)])
    assert time.monotonic() - start < 4.0
    assert str(err.value).startswith("switch ovs: cannot connect to the database unix:")
    with pytest.raises(SwitchError):
        sw.owned_ports()
    with pytest.raises(SwitchError):
        sw.bridge_exists(bridge)


def test_ovs_vsctl_is_not_needed(ovs: OvsInstance, bridge: str) -> None:
    """Ports go over OVSDB JSON-RPC: a missing ovs-vsctl binary does not matter."""
    sw = OvsSwitch(config(ovs, bridge, ovs_vsctl="/nonexistent/ovs-vsctl"))
    p = lease(ovs, bridge, 0)
    sw.add_ports("ctr-nobin", [p])
    assert port_names(ovs, bridge) == [p.name]


def test_hung_vswitchd(ovs: OvsInstance, bridge: str) -> None:
    """Client ports wait for ovs-vswitchd: a timeout undoes the commit.  Server ports don't wait,
    unless anti-spoofing rules must be installed (they live in ovs-vswitchd): then refused and undone."""
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    sw = OvsSwitch(config(ovs, bridge, timeout_s=1.0, anti_spoofing=False))
    guarded = OvsSwitch(config(ovs, bridge, timeout_s=1.0))
    pid = ovs.pid("ovs-vswitchd")
    assert pid is not None
    server = lease(ovs, bridge, 0)
    client = lease(ovs, bridge, 1, MODE_CLIENT)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(SwitchError, match="timed out"):
            sw.add_ports("ctr-hung", [server, client])
        assert ovs.row("Interface", server.name) is None
        assert ovs.row("Interface", client.name) is None

        sw.add_ports("ctr-hung", [server])  # no wait: committed, vswitchd applies it later
        assert ovs.row("Interface", server.name) is not None
        sw.remove_ports("ctr-hung", [server])  # works without vswitchd too
        assert ovs.row("Interface", server.name) is None

        with pytest.raises(SwitchError, match="anti-spoofing rules .* timed out|timeout"):
            guarded.add_ports("ctr-hung", [server])
        assert ovs.row("Interface", server.name) is None
    finally:
        os.kill(pid, signal.SIGCONT)
    ovs.vsctl("--if-exists", "del-br", bridge)  # waits until vswitchd caught up


def test_dpdk_not_initialized_is_refused(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    """Server-only adds do not wait for ovs-vswitchd, but still see dpdk_initialized=false."""
    pid = ovs.pid("ovs-vswitchd")
    assert pid is not None
    p = lease(ovs, bridge, 0)
    os.kill(pid, signal.SIGSTOP)  # or it would write dpdk_initialized=true back at once
    try:
        ovs.vsctl("set", "Open_vSwitch", ".", "dpdk_initialized=false", wait=False)
        assert sw.dpdk_initialized() is False
        with pytest.raises(SwitchError, match="has not initialized DPDK"):
            sw.add_ports("ctr-nodpdk", [p])
        assert ovs.row("Interface", p.name) is None
    finally:
        os.kill(pid, signal.SIGCONT)
    ovs.vsctl("set", "Open_vSwitch", ".", "dpdk_initialized=true")
    assert sw.dpdk_initialized() is True


def test_remove_port_names_for_gc(ovs: OvsInstance, sw: OvsSwitch, bridge: str) -> None:
    ports = [lease(ovs, bridge, 0), lease(ovs, bridge, 1, MODE_CLIENT)]
    sw.add_ports("ctr-gc", ports)
    names = sw.owned_ports()["ctr-gc"]
    sw.remove_port_names(names)
    sw.remove_port_names(names)  # already gone: fine
    assert port_names(ovs, bridge) == []
    assert "ctr-gc" not in sw.owned_ports()
