"""The switch's side of tenant isolation, on a real private OVS-DPDK with real frames.

Frames come from kernel ports: a veth pair per port, the host end plugged into the bridge by
the hook, the other end left in the host namespace where a raw AF_PACKET socket sends
hand-made frames (own or spoofed MAC, own or spoofed IP, 802.1Q-tagged) and another counts
what arrives at a receiving port.  No DPDK sender is needed, so no extra busy poller runs.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

import pytest

from hook.config import SwitchConfig
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, MODE_SERVER, KernelPortSpec, PortLease
from hook.switch import openflow
from hook.switch.commands import BumpNextCfg, Snapshot, render_vsctl
from hook.switch.ovs import OvsSwitch
from tests.helpers.ovs_instance import PMD_MAXSLEEP_US, OvsInstance

ETH_P_ALL = 0x0003
ETH_P_TEST = 0x88B5  # IEEE local experimental ethertype: nothing else on the host sends it
BROADCAST = b"\xff" * 6


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def config(ovs: OvsInstance, bridge: str, *more: str, scope: str = "policy", **kw: object) -> SwitchConfig:
    base: dict[str, object] = {
        "ovsdb": ovs.db,
        "ovs_rundir": ovs.rundir,
        "bridge": bridge,
        "bridges": (bridge, *more),
        "scope": scope,
        "timeout_s": 5.0,
    }
    base.update(kw)
    return SwitchConfig(**base)  # type: ignore[arg-type]


def lease(ovs: OvsInstance, bridge: str, index: int = 0, mode: str = MODE_SERVER) -> PortLease:
    name = ovs.unique("pp")
    path = os.path.join(ovs.rundir, name) if mode == MODE_CLIENT else f"/tmp/dpdk-oci-test/{name}.sock"
    return PortLease(index, name, mode, bridge, path, f"/run/dpdk/net{index}.sock", f"02:00:00:00:03:{index + 1:02x}")


def port_names(ovs: OvsInstance, bridge: str) -> list[str]:
    return ovs.vsctl("list-ports", bridge, wait=False).split()


def flows(ovs: OvsInstance, bridge: str) -> str:
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{ovs.rundir}/{bridge}.mgmt"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout


@pytest.fixture
def bridge(ovs: OvsInstance) -> Iterator[str]:
    name = ovs.unique("pbr")
    yield name
    ovs.vsctl("--if-exists", "del-br", name)


class Veth:
    """A veth pair: ``host`` goes into the bridge, ``peer`` (MAC ``mac``) sends and receives frames."""

    def __init__(self, host: str, mac: str) -> None:
        self.host, self.peer, self.mac = host, host + "p", mac
        subprocess.run(["ip", "link", "add", self.host, "type", "veth", "peer", "name", self.peer], check=True, timeout=10)
        for dev in (self.host, self.peer):
            with suppress(OSError):  # no IPv6 chatter from our test links
                with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w", encoding="ascii") as fh:
                    fh.write("1")
        subprocess.run(["ip", "link", "set", self.peer, "address", mac, "up"], check=True, timeout=10)
        subprocess.run(["ip", "link", "set", self.host, "up"], check=True, timeout=10)

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host], capture_output=True, check=False, timeout=10)

    def send(self, frames: list[bytes]) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
            s.bind((self.peer, 0))
            for frame in frames:
                s.send(frame)

    def receiver(self) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((self.peer, 0))
        s.settimeout(0.2)
        return s


def count_marked(sock: socket.socket, marker: bytes) -> int:
    return count_all(sock, [marker])[marker]


def count_all(sock: socket.socket, markers: list[bytes], quiet_s: float = 0.6, limit_s: float = 3.0) -> dict[bytes, int]:
    """Frames per marker that arrive until nothing marked came for ``quiet_s``."""
    seen = dict.fromkeys(markers, 0)
    deadline, last = time.monotonic() + limit_s, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        for marker in markers:
            if marker in data:
                seen[marker] += 1
                last = time.monotonic()
    return seen


def eth_frame(src: str, marker: bytes, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return BROADCAST + mac_bytes(src) + tag + struct.pack("!H", ETH_P_TEST) + marker + b"\0" * 32


def ipv4_frame(src_mac: str, src_ip: str, marker: bytes) -> bytes:
    payload = marker + b"\0" * 16
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 253, 0, socket.inet_aton(src_ip), socket.inet_aton("10.77.0.255"))
    return BROADCAST + mac_bytes(src_mac) + struct.pack("!H", 0x0800) + header + payload


def arp_frame(src_mac: str, sha: str, spa: str, marker: bytes) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac_bytes(sha), socket.inet_aton(spa), b"\0" * 6, socket.inet_aton("10.77.0.1"))
    return BROADCAST + mac_bytes(src_mac) + struct.pack("!H", 0x0806) + arp + marker


@pytest.fixture
def wired(ovs: OvsInstance, bridge: str) -> Iterator[Callable[..., tuple[Veth, KernelPortSpec]]]:
    """Makes veths and plugs them as kernel ports of owner ``ctr-wire``; undoes both."""
    made: list[tuple[OvsSwitch, Veth, KernelPortSpec]] = []

    def plug(sw: OvsSwitch, addresses: tuple[str, ...] = (), index: int = 0) -> tuple[Veth, KernelPortSpec]:
        mac = "02:00:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        veth = Veth(ovs.unique("pv"), mac)
        spec = KernelPortSpec(index, veth.host, "eth1", bridge, mac=mac, addresses=addresses)
        made.append((sw, veth, spec))
        sw.add_ports("ctr-wire", [], [spec])
        return veth, spec

    yield plug
    for sw, veth, spec in made:
        with suppress(SwitchError):
            sw.remove_ports("ctr-wire", [], [spec])
        veth.delete()


# --- bridges: the policy --------------------------------------------------------------


def test_bridge_outside_policy_is_refused_and_not_created(ovs: OvsInstance, bridge: str) -> None:
    stranger = ovs.unique("pbr")
    sw = OvsSwitch(config(ovs, bridge))
    bridges_before = ovs.vsctl("list-br", wait=False)
    with pytest.raises(SwitchError, match=f"bridge {stranger} is not allowed by the host policy"):
        sw.add_ports("ctr-pol", [lease(ovs, stranger)])
    assert ovs.row("Bridge", stranger) is None
    assert ovs.vsctl("list-br", wait=False) == bridges_before


def test_allowed_but_unconfigured_bridge_is_not_created(ovs: OvsInstance, bridge: str) -> None:
    other = ovs.unique("pbr")
    sw = OvsSwitch(config(ovs, bridge, other))
    with pytest.raises(SwitchError, match=f"no bridge named {other} \\(only the configured bridge {bridge} is created\\)"):
        sw.add_ports("ctr-pol", [lease(ovs, bridge), lease(ovs, other, 1)])
    assert ovs.row("Bridge", other) is None and ovs.row("Bridge", bridge) is None


@pytest.mark.parametrize("datapath", ["system", ""])
def test_existing_kernel_bridge_is_refused_and_left_unchanged(ovs: OvsInstance, bridge: str, datapath: str) -> None:
    """A kernel-datapath bridge (made while ovs-vswitchd is stopped, so no kernel datapath is created
    on this host) named in a request: refused, its datapath_type and ports as they were."""
    pid = ovs.pid("ovs-vswitchd")
    assert pid is not None
    sw = OvsSwitch(config(ovs, bridge))
    os.kill(pid, signal.SIGSTOP)
    try:
        args = ["add-br", bridge] + (["--", "set", "Bridge", bridge, f"datapath_type={datapath}"] if datapath else [])
        ovs.vsctl(*args, wait=False)
        before = ovs.row("Bridge", bridge)
        assert before is not None
        with pytest.raises(SwitchError, match=f"bridge {bridge} exists with datapath_type .*never changes an existing bridge"):
            sw.add_ports("ctr-kbr", [lease(ovs, bridge)])
        after = ovs.row("Bridge", bridge)
        assert after is not None
        assert after["datapath_type"] == before["datapath_type"] == datapath
        assert after["ports"] == before["ports"]
        assert port_names(ovs, bridge) == []
        ovs.vsctl("del-br", bridge, wait=False)  # gone before ovs-vswitchd ever sees it
    finally:
        os.kill(pid, signal.SIGCONT)


# --- owner tags: scopes -------------------------------------------------------------------


def test_two_scopes_never_see_or_remove_each_others_ports(ovs: OvsInstance, bridge: str) -> None:
    one = OvsSwitch(config(ovs, bridge, scope="install-one"))
    two = OvsSwitch(config(ovs, bridge, scope="install-two"))
    a, b = lease(ovs, bridge, 0), lease(ovs, bridge, 1)
    one.add_ports("same-id", [a])
    two.add_ports("same-id", [b])

    assert one.owned_ports() == {"same-id": [a.name]}
    assert two.owned_ports() == {"same-id": [b.name]}
    two.remove_ports("same-id", [a, b])  # a is not two's: untouched
    two.remove_port_names([a.name])  # gc of scope two: a is not its to remove either
    assert port_names(ovs, bridge) == [a.name]
    with pytest.raises(SwitchError, match="owned by another installation"):
        two.add_ports("same-id", [a])
    one.remove_ports("same-id", [a])
    assert port_names(ovs, bridge) == []


# --- anti-spoofing: rules with the port, real frames ---------------------------------------


def test_rules_come_and_go_with_the_ports(ovs: OvsInstance, bridge: str) -> None:
    sw = OvsSwitch(config(ovs, bridge))
    p, q = lease(ovs, bridge, 0), lease(ovs, bridge, 1, MODE_CLIENT)
    sw.add_ports("ctr-rules", [p, q])
    cookies = {n: f"cookie=0x{openflow.port_cookie('policy', n):x}" for n in (p.name, q.name)}
    table = flows(ovs, bridge)
    for port in (p, q):  # a server port is not waited for: ovs-vswitchd numbers it a moment later
        deadline = time.monotonic() + 5
        while (row := ovs.row("Interface", port.name)) is not None and row["ofport"] != row["ofport_request"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert row is not None and row["ofport"] == row["ofport_request"]
        mine = [line for line in table.splitlines() if cookies[port.name] in line]
        assert len(mine) == 2, table
        assert any(f"in_port={row['ofport']},dl_src={port.mac}" in line and "actions=NORMAL" in line for line in mine), table
        assert any(f"priority={openflow.PRIORITY_DROP},in_port={row['ofport']}" in line and "actions=drop" in line for line in mine), table
    assert "priority=0 actions=NORMAL" in table  # the bridge's own behaviour stays

    sw.remove_ports("ctr-rules", [p])
    table = flows(ovs, bridge)
    assert cookies[p.name] not in table and cookies[q.name] in table
    sw.remove_port_names([q.name])
    assert "0xd0c1" not in flows(ovs, bridge)


def test_concurrent_adds_get_distinct_numbers_and_keep_every_rule(ovs: OvsInstance, bridge: str) -> None:
    """Starts racing on one OVS (two installations among them) pick distinct OpenFlow port numbers,
    and every port keeps its rules: none is replaced and then deleted by a loser's cleanup."""
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    switches = [OvsSwitch(config(ovs, bridge, scope=("policy", "other")[i % 2])) for i in range(8)]
    leases = [lease(ovs, bridge, i) for i in range(8)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            start.wait(timeout=10)
            switches[i].add_ports(f"ctr-race{i}", [leases[i]])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors, errors
        numbers = {}
        for p in leases:
            row = ovs.row("Interface", p.name)
            assert row is not None
            numbers[p.name] = row["ofport_request"]
        assert len(set(numbers.values())) == 8, numbers
        table = flows(ovs, bridge)
        for i, p in enumerate(leases):
            cookie = f"cookie=0x{openflow.port_cookie(('policy', 'other')[i % 2], p.name):x}"
            mine = [line for line in table.splitlines() if cookie in line]
            assert len(mine) == 2 and all(f"in_port={numbers[p.name]}" in line for line in mine), table
    finally:
        for i, p in enumerate(leases):
            switches[i].remove_ports(f"ctr-race{i}", [p])


def test_rules_sent_before_a_commit_that_fails_are_deleted(ovs: OvsInstance, bridge: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an existing bridge the rules go in before the commit; when the commit fails (twice), they go
    again and nothing of the port is left."""
    import hook.switch.ovs as ovs_mod

    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    sw = OvsSwitch(config(ovs, bridge))
    p = lease(ovs, bridge, 0)
    sent: list[str] = []
    real_install, real_ops = OvsSwitch._install_rules, ovs_mod.transaction_ops

    def install(self: OvsSwitch, *args: object, **kw: object) -> None:
        real_install(self, *args, **kw)  # type: ignore[arg-type]
        sent.append(flows(ovs, bridge))

    monkeypatch.setattr(OvsSwitch, "_install_rules", install)
    monkeypatch.setattr(ovs_mod, "transaction_ops", lambda *a: [*real_ops(*a), {"op": "abort"}])
    with pytest.raises(SwitchError, match="refused the port transaction"):
        sw.add_ports("ctr-abort", [p])
    cookie = f"cookie=0x{openflow.port_cookie('policy', p.name):x}"
    assert len(sent) == 2 and all(cookie in table for table in sent)  # in before each commit
    assert ovs.row("Interface", p.name) is None
    assert cookie not in flows(ovs, bridge)


def test_restore_rules_after_vswitchd_lost_them(ovs: OvsInstance, bridge: str, wired: Callable[..., tuple[Veth, KernelPortSpec]]) -> None:
    sw = OvsSwitch(config(ovs, bridge))
    p = lease(ovs, bridge, 0)
    sw.add_ports("ctr-restore", [p])
    kernel, spec = wired(sw, ("10.77.0.2/24",), index=1)
    before = sorted(line.split(" actions=")[0].split("priority=")[1] for line in flows(ovs, bridge).splitlines() if "0xd0c1" in line)
    subprocess.run(["ovs-ofctl", "del-flows", f"unix:{ovs.rundir}/{bridge}.mgmt", "cookie=0xd0c1000000000000/0xffff000000000000"], check=True, timeout=10)
    assert "0xd0c1" not in flows(ovs, bridge)  # as after a restart of ovs-vswitchd

    assert sw.restore_rules() == sorted([p.name, spec.host_name])
    after = sorted(line.split(" actions=")[0].split("priority=")[1] for line in flows(ovs, bridge).splitlines() if "0xd0c1" in line)
    # vhost port: own MAC, drop; kernel port: own MAC, drop, ARP + IPv4 of its address, IPv6 link-local + unspecified, 3 L3 drops
    assert after == before and len(after) == 2 + 9
    sw.remove_ports("ctr-restore", [p])


def test_stale_rules_on_the_port_number_are_replaced(ovs: OvsInstance, bridge: str) -> None:
    """Rules of ours left on a number (a removal while ovs-vswitchd hung) do not outlive the next port
    on that number; flows that are not ours are left alone."""
    sw = OvsSwitch(config(ovs, bridge))
    first = lease(ovs, bridge, 0)
    sw.add_ports("ctr-stale", [first])  # creates the bridge
    row = ovs.row("Interface", first.name)
    assert row is not None
    number = row["ofport_request"] + 1
    mgmt = f"unix:{ovs.rundir}/{bridge}.mgmt"
    stale = f"cookie=0xd0c1000000000001,priority={openflow.PRIORITY_ALLOW_MAC},in_port={number},dl_src=02:66:66:66:66:66,actions=NORMAL"
    admin = f"cookie=0x1234,priority=5,in_port={number},actions=NORMAL"
    for flow in (stale, admin):
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", mgmt, flow], check=True, timeout=10)
    second = lease(ovs, bridge, 1)
    sw.add_ports("ctr-stale", [second])
    row = ovs.row("Interface", second.name)
    assert row is not None and row["ofport_request"] == number
    table = flows(ovs, bridge)
    assert "cookie=0xd0c1000000000001" not in table and "02:66:66:66:66:66" not in table
    assert "cookie=0x1234" in table
    assert f"cookie=0x{openflow.port_cookie('policy', second.name):x}" in table


def test_spoofed_source_mac_is_dropped_own_mac_passes(ovs: OvsInstance, bridge: str, wired: Callable[..., tuple[Veth, KernelPortSpec]]) -> None:
    sw = OvsSwitch(config(ovs, bridge))
    sender, _ = wired(sw, index=0)
    receiver, _ = wired(sw, index=1)
    own, spoofed = secrets.token_bytes(8), secrets.token_bytes(8)
    with receiver.receiver() as rx:
        sender.send([eth_frame(sender.mac, own) for _ in range(20)] + [eth_frame("02:66:66:66:66:66", spoofed) for _ in range(20)])
        sender.send([eth_frame(receiver.mac, spoofed) for _ in range(20)])  # another tenant's MAC
        seen = count_all(rx, [own, spoofed])
    assert seen[own] == 20
    assert seen[spoofed] == 0


def test_kernel_port_may_send_only_from_its_addresses(ovs: OvsInstance, bridge: str, wired: Callable[..., tuple[Veth, KernelPortSpec]]) -> None:
    sw = OvsSwitch(config(ovs, bridge))
    sender, _ = wired(sw, ("10.77.0.2/24",), index=0)
    receiver, _ = wired(sw, ("10.77.0.3/24",), index=1)
    good_ip, bad_ip, good_arp, bad_arp, bad_sha = (secrets.token_bytes(8) for _ in range(5))
    with receiver.receiver() as rx:
        frames = [ipv4_frame(sender.mac, "10.77.0.2", good_ip), ipv4_frame(sender.mac, "10.77.0.3", bad_ip)]
        frames += [arp_frame(sender.mac, sender.mac, "10.77.0.2", good_arp), arp_frame(sender.mac, sender.mac, "10.77.0.3", bad_arp)]
        frames += [arp_frame(sender.mac, receiver.mac, "10.77.0.2", bad_sha)]
        sender.send(frames * 5)
        seen = count_all(rx, [good_ip, bad_ip, good_arp, bad_arp, bad_sha])
    assert seen[good_ip] == 5 and seen[good_arp] == 5
    assert seen[bad_ip] == 0 and seen[bad_arp] == 0 and seen[bad_sha] == 0


# --- VLANs: untagged ports are access ports --------------------------------------------------


def test_tagged_frames_from_untagged_port_do_not_reach_another_vlan(
    ovs: OvsInstance, bridge: str, wired: Callable[..., tuple[Veth, KernelPortSpec]]
) -> None:
    sw = OvsSwitch(config(ovs, bridge))
    sender, sender_spec = wired(sw, index=0)
    untagged, _ = wired(sw, index=1)
    vlan100, vlan100_spec = wired(sw, index=2)
    ovs.vsctl("set", "Port", vlan100_spec.host_name, "tag=100")  # as a port of a container with vlan 100 would be
    plain, tagged = secrets.token_bytes(8), secrets.token_bytes(8)

    with vlan100.receiver() as rx100, untagged.receiver() as rx0:
        sender.send([eth_frame(sender.mac, tagged, vlan=100) for _ in range(10)] + [eth_frame(sender.mac, plain) for _ in range(10)])
        got100, got0 = count_marked(rx100, tagged), count_marked(rx0, plain)
    assert got0 == 10  # untagged traffic flows between untagged ports
    assert got100 == 0  # a VLAN-100 frame from an untagged port reaches nobody on VLAN 100

    # the measurement can see a leak: make the sender a trunk, as it was before access ports
    ovs.vsctl("clear", "Port", sender_spec.host_name, "tag", "--", "set", "Port", sender_spec.host_name, "vlan_mode=trunk")
    with vlan100.receiver() as rx100:
        sender.send([eth_frame(sender.mac, tagged, vlan=100) for _ in range(10)])
        assert count_marked(rx100, tagged) == 10


# --- issue 15: what a port transaction costs ------------------------------------------------


def _median_ms(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2] * 1000


def test_port_transaction_cost_jsonrpc_vs_ovs_vsctl(ovs: OvsInstance, bridge: str, capsys: pytest.CaptureFixture[str]) -> None:
    """One container start's port transaction through JSON-RPC and through ovs-vsctl (the same
    commands rendered as its argv): the same rows result; median timings are printed."""
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    runs = 15
    report = []
    cases = [(MODE_SERVER, False, True), (MODE_SERVER, True, True), (MODE_CLIENT, True, True), (MODE_SERVER, True, False), (MODE_CLIENT, True, False)]
    for mode, guarded, sleepy in cases:
        # the test switch's PMD sleeps when idle (pmd-maxsleep), which delays every port change by
        # a PMD reload; a production switch busy-polls: measure that too, briefly (one busy core)
        ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-maxsleep={PMD_MAXSLEEP_US if sleepy else 0}")
        sw = OvsSwitch(config(ovs, bridge, anti_spoofing=guarded))
        port = lease(ovs, bridge, 0, mode)
        snap = Snapshot()
        snap.bridges = {bridge: {"datapath_type": "netdev"}}
        snap.root = {"dpdk_initialized": True}
        commands, wait, _ = sw._plan_add("ctr-cost", [port], (), snap)
        argv = [ovs.vsctl_path, f"--db={ovs.db}", "--timeout=5", *render_vsctl([c for c in commands if not isinstance(c, BumpNextCfg)], wait=wait)]
        rpc_add, rpc_remove, vsctl_add = [], [], []
        rows = []
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            sw.add_ports("ctr-cost", [port])
            t1 = time.perf_counter()
            rows.append(ovs.row("Interface", port.name))
            t2 = time.perf_counter()
            sw.remove_ports("ctr-cost", [port])
            t3 = time.perf_counter()
            rpc_add.append(t1 - t0)
            rpc_remove.append(t3 - t2)
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, timeout=10)
            vsctl_add.append(time.perf_counter() - t0)
            rows.append(ovs.row("Interface", port.name))
            ovs.vsctl("del-port", port.name, wait=wait)
        first, last = rows[1], rows[-1]
        assert first is not None and last is not None
        for col in ("type", "options", "external_ids", "mtu_request", "ofport_request"):
            assert first[col] == last[col], col
        kind = f"{mode}{' + anti-spoofing' if guarded else ''}{' (waits)' if wait else ''}{'' if sleepy else ', busy PMD'}"
        report.append(
            f"{kind:44} JSON-RPC add {_median_ms(rpc_add[1:]):6.2f} ms, remove {_median_ms(rpc_remove[1:]):6.2f} ms;"
            f"  ovs-vsctl add (no rules) {_median_ms(vsctl_add[1:]):6.2f} ms"
        )
    ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-maxsleep={PMD_MAXSLEEP_US}")
    with capsys.disabled():
        print(f"\nport transaction, one port, median of {runs}:\n" + "\n".join(report))
