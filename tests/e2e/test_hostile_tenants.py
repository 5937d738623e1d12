"""Hostile tenants on real runc + OVS-DPDK: every attack is refused or contained, the host unchanged.

Each test plays a container that asks for, or does, what a tenant must not: a bridge the host
does not offer, another tenant's MAC, spoofed or VLAN-tagged frames, a namesake in another
runtime root, a full socket directory, a socket swapped for a symlink.  The host's side is
checked after every attack: bridges and their datapath_type, other tenants' ports and ledger
entries, free space on the filesystem holding /run.

Traffic is counted at *receivers*: OVS internal ports the test adds (host taps), so no
receiving app busy-polls; with OVS's PMD and at most one testpmd forwarding, no more than two
pollers ever run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hook.admin import demo
from hook.admin.runc_bundle import Container, make_bundle, run_to_end
from hook.units import format_cpulist
from tests.helpers.hook_env import HookEnv
from tests.helpers.ovs_instance import OvsInstance
from tests.helpers.tenants import (
    BridgeRule,
    FrameCounter,
    P,
    Started,
    add_bridge,
    add_receiver,
    cpus_allowed,
    cpuset_cgroup,
    delete,
    dump_flows,
    entries_of,
    hook_ports,
    hook_refusal,
    host_veths,
    interface,
    measure_sending,
    oci_state,
    policy_env,
    port_rx,
    raw_sender_args,
    remove_bridge,
    run_free_bytes,
    start_detached,
    switch_state,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed"),
    pytest.mark.skipif(not shutil.which("ovs-ofctl"), reason="ovs-ofctl is not installed"),
]
VHOST = "vhost-user"
KERNEL = "kernel-ports"
SPOOF_MAC = "02:de:ad:be:ef:01"
BROADCAST = "ff:ff:ff:ff:ff:ff"
TESTPMD = "/usr/bin/dpdk-testpmd"


@pytest.fixture
def bridge(ovs: OvsInstance) -> Iterator[str]:
    """A netdev bridge for one test (the policy's bridge), removed after it with all its ports."""
    name = add_bridge(ovs, "brht")
    try:
        yield name
    finally:
        remove_bridge(ovs, name)


def assert_refused(proc: subprocess.CompletedProcess[str], key: str, *words: str) -> str:
    """The container did not start; the hook said why in one line naming the key and the policy rule."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    status, lines = hook_refusal(proc.stderr)
    assert len(lines) == 1, lines
    line = lines[0].replace('\\"', '"')
    assert status == 2, line
    assert line.startswith(f"dpdk-oci-hook: annotation {P}{key}: "), line
    assert "(host policy: " in line, line
    for word in words:
        assert word in line, line
    return line


def assert_host_unchanged(env: HookEnv, ovs: OvsInstance, switch_before: dict[str, Any]) -> None:
    assert switch_state(ovs) == switch_before
    assert env.ledger_entries() == {}
    assert hook_ports(ovs) == [] and host_veths() == []


def request(kind: str, bridge: str, **fields: Any) -> dict[str, str]:
    """Annotations asking for one port of ``kind`` on ``bridge``."""
    port = json.dumps([{"bridge": bridge, **fields}])
    if kind == VHOST:
        return {P + VHOST: port, P + "hugepages": "32Mi"}
    return {P + KERNEL: port}


# --- bridges the host does not offer -------------------------------------------------------------


@pytest.mark.parametrize("kind", [VHOST, KERNEL])
def test_existing_kernel_bridge_is_refused_and_left_alone(kind: str, bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A request for an existing kernel-datapath bridge outside the policy is refused; its datapath_type stays 'system'."""
    kernel_bridge = add_bridge(ovs, "brkx", datapath_type="system")
    try:
        env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
        before = switch_state(ovs)
        assert before[kernel_bridge][0] == "system"
        ctr = make_bundle(str(tmp_path / "b"), ["/bin/true"], request(kind, kernel_bridge), env.config_path)
        proc = run_to_end(str(tmp_path / "runc"), ctr, "ht-kbr")
        assert_refused(proc, kind, kernel_bridge)
        assert_host_unchanged(env, ovs, before)
    finally:
        remove_bridge(ovs, kernel_bridge)


@pytest.mark.parametrize("kind", [VHOST, KERNEL])
def test_unknown_bridge_is_refused_and_not_created(kind: str, bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A bridge name the switch does not have and the policy does not offer is refused, and no bridge appears."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    missing = ovs.unique("brnone")  # minted by the instance, so a leaked tap would be removed at its stop
    before = switch_state(ovs)
    ctr = make_bundle(str(tmp_path / "b"), ["/bin/true"], request(kind, missing), env.config_path)
    try:
        proc = run_to_end(str(tmp_path / "runc"), ctr, "ht-nobr")
        assert_refused(proc, kind, missing)
        assert_host_unchanged(env, ovs, before)
        assert not os.path.exists(f"/sys/class/net/{missing}")
    finally:
        remove_bridge(ovs, missing)


# --- what a bridge offers: VLANs, MACs, addresses --------------------------------------------------

POLICY_CASES: dict[str, tuple[str, str, dict[str, Any], list[str]]] = {
    "vlan-missing": (VHOST, "strict", {}, ["needs a vlan"]),
    "vlan-outside-range": (VHOST, "strict", {"vlan": 5}, ["vlan 5"]),
    "mac-not-allowed": (VHOST, "strict", {"vlan": 150, "mac": "02:00:00:00:00:99"}, ["MAC"]),
    "kernel-mac-not-allowed": (KERNEL, "fixed", {"mac": "02:00:00:00:00:98"}, ["MAC"]),
    "kernel-addresses-not-allowed": (KERNEL, "fixed", {"addresses": ["10.40.0.1/24"]}, ["addresses"]),
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_policy_refuses_what_the_bridge_does_not_offer(case: str, bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A VLAN outside the bridge's ranges, none where one is required, a MAC or address where the tenant may not choose: refused."""
    kind, which, fields, words = POLICY_CASES[case]
    fixed = add_bridge(ovs, "brfx")
    try:
        rules = (
            BridgeRule(bridge, vlan_required=True, vlans="100-199", allow_mac=False),
            BridgeRule(fixed, allow_mac=False, allow_addresses=False),
        )
        env = policy_env(tmp_path / "cfg", ovs, rules)
        before = switch_state(ovs)
        ctr = make_bundle(str(tmp_path / "b"), ["/bin/true"], request(kind, bridge if which == "strict" else fixed, **fields), env.config_path)
        proc = run_to_end(str(tmp_path / "runc"), ctr, "ht-policy")
        assert_refused(proc, kind, *words)
        assert_host_unchanged(env, ovs, before)
    finally:
        remove_bridge(ovs, fixed)


def test_vlan_the_policy_allows_makes_an_access_port(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """The positive side of the policy: a VLAN within the ranges is granted as the port's tag; no VLAN means tag 0 (untagged access)."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge, vlans="100-199"),))
    annotations = {P + VHOST: json.dumps([{"vlan": 150}, {}]), P + "hugepages": "32Mi"}
    ctr = make_bundle(str(tmp_path / "b"), ["/bin/sleep", "60"], annotations, env.config_path)
    root = str(tmp_path / "runc")
    started = start_detached(root, ctr, "ht-vlan-ok")
    try:
        assert started.pid is not None, started.stderr
        ports = {name: ovs.row("Port", name) or {} for name in hook_ports(ovs)}
        tags = sorted(str(row.get("tag")) for row in ports.values())
        assert len(ports) == 2 and "150" in tags, ports
        # the port without a VLAN is an access port of the untagged VLAN, not a trunk
        (untagged,) = [row for row in ports.values() if str(row.get("tag")) != "150"]
        assert untagged.get("tag") == 0 or untagged.get("vlan_mode") == "access", untagged
    finally:
        delete(root, "ht-vlan-ok")
    assert env.ledger_entries() == {} and hook_ports(ovs) == []


def test_mac_or_address_of_another_tenant_is_refused(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A MAC or IP address another live container holds on the bridge is refused; the holder keeps everything."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    root = str(tmp_path / "runc")
    held = {
        P + VHOST: json.dumps([{"mac": "02:aa:00:00:00:01"}]),
        P + KERNEL: json.dumps([{"mac": "02:aa:00:00:00:02", "addresses": ["10.30.0.1/24"]}]),
        P + "hugepages": "32Mi",
    }
    owner = make_bundle(str(tmp_path / "owner"), ["/bin/sleep", "120"], held, env.config_path)
    started = start_detached(root, owner, "ht-holder")
    try:
        assert started.pid is not None, started.stderr
        ledger, ports = env.ledger_entries(), hook_ports(ovs)
        assert len(ports) == 2
        thieves = {
            "vhost-mac": (VHOST, {P + VHOST: json.dumps([{"mac": "02:aa:00:00:00:01"}]), P + "hugepages": "32Mi"}),
            "kernel-mac": (KERNEL, {P + KERNEL: json.dumps([{"mac": "02:aa:00:00:00:02"}])}),
            "vhost-takes-kernel-mac": (VHOST, {P + VHOST: json.dumps([{"mac": "02:aa:00:00:00:02"}]), P + "hugepages": "32Mi"}),
            "kernel-address": (KERNEL, {P + KERNEL: json.dumps([{"addresses": ["10.30.0.1/24"]}])}),
        }
        failures = []
        for name, (key, annotations) in thieves.items():
            thief = make_bundle(str(tmp_path / name), ["/bin/true"], annotations, env.config_path)
            proc = run_to_end(root, thief, f"ht-{name}")
            try:
                assert_refused(proc, key, "already")
            except AssertionError as exc:
                failures.append(f"{name}: {exc}")
            assert env.ledger_entries() == ledger and hook_ports(ovs) == ports, name
        assert failures == []
    finally:
        delete(root, "ht-holder")
    assert env.ledger_entries() == {} and hook_ports(ovs) == [] and host_veths() == []


# --- frames a tenant may send ---------------------------------------------------------------------------


def test_kernel_port_may_send_only_from_its_own_mac_and_addresses(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """Raw frames from a kernel port: its own MAC and address pass; a spoofed source MAC or source IP is dropped by the switch."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    receiver, _ = add_receiver(ovs, bridge)
    own_ip = "10.20.0.5"
    groups = [
        {"label": "own", "count": 200, "dst_mac": BROADCAST, "ip_src": own_ip, "ip_dst": "10.20.0.99"},
        {"label": "smac", "count": 200, "dst_mac": BROADCAST, "ip_src": own_ip, "ip_dst": "10.20.0.99", "src_mac": SPOOF_MAC},
        {"label": "sip", "count": 200, "dst_mac": BROADCAST, "ip_src": "10.20.0.66", "ip_dst": "10.20.0.99"},
    ]
    annotations = {P + KERNEL: json.dumps([{"addresses": [f"{own_ip}/24"]}])}
    ctr = make_bundle(str(tmp_path / "b"), raw_sender_args("eth1", groups), annotations, env.config_path, capabilities=("CAP_NET_RAW",))
    counter = FrameCounter(receiver)
    try:
        proc = run_to_end(str(tmp_path / "runc"), ctr, "ht-spoof-k", timeout_s=90)
    finally:
        counts = counter.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f"SENT {g['label']} 200" in proc.stdout for g in groups), proc.stdout
    flows = dump_flows(ovs, bridge)
    assert counts["own"] >= 180, f"own frames did not pass: {dict(counts)}\n{flows}"
    assert counts["smac"] == 0, f"spoofed source MAC reached another port: {dict(counts)}\n{flows}"
    assert counts["sip"] == 0, f"spoofed source IP reached another port: {dict(counts)}\n{flows}"
    assert env.ledger_entries() == {} and hook_ports(ovs) == [] and host_veths() == []


def test_vlan_tagged_frames_from_an_untagged_port_stay_out(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A port without a VLAN is an untagged access port: 802.1Q frames it sends reach neither a VLAN-10 port nor a trunk."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    trunk, _ = add_receiver(ovs, bridge)
    vlan10, _ = add_receiver(ovs, bridge, tag=10)
    own_ip = "10.21.0.5"
    groups = [
        {"label": "untag", "count": 200, "dst_mac": BROADCAST, "ip_src": own_ip, "ip_dst": "10.21.0.99"},
        {"label": "v10", "count": 200, "dst_mac": BROADCAST, "ip_src": own_ip, "ip_dst": "10.21.0.99", "vlan": 10},
    ]
    annotations = {P + KERNEL: json.dumps([{"addresses": [f"{own_ip}/24"]}])}
    ctr = make_bundle(str(tmp_path / "b"), raw_sender_args("eth1", groups), annotations, env.config_path, capabilities=("CAP_NET_RAW",))
    counters = {trunk: FrameCounter(trunk), vlan10: FrameCounter(vlan10)}
    try:
        proc = run_to_end(str(tmp_path / "runc"), ctr, "ht-vlan-k", timeout_s=90)
    finally:
        counts = {name: c.close() for name, c in counters.items()}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    flows = dump_flows(ovs, bridge)
    assert counts[trunk]["untag"] >= 180, f"the attacker's untagged frames did not arrive (control): {counts}\n{flows}"
    assert counts[vlan10]["v10"] == 0, f"tagged frames reached a port of VLAN 10: {counts}\n{flows}"
    assert counts[trunk]["v10"] == 0, f"tagged frames from an untagged port were forwarded: {counts}\n{flows}"
    assert env.ledger_entries() == {} and hook_ports(ovs) == [] and host_veths() == []


@pytest.mark.slow
def test_testpmd_spoofed_source_mac_is_dropped(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """testpmd txonly from its own MAC reaches a receiver; the same testpmd with a MAC of its choosing is dropped by the switch."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    receiver, receiver_mac = add_receiver(ovs, bridge)
    send = (f"timeout -s INT -k 3 90 {TESTPMD} $1 --iova-mode=va -- --total-num-mbufs=2048 --forward-mode=txonly "
            f"--eth-peer=0,{receiver_mac} --stats-period=1 </dev/null >/dev/null 2>&1")
    # each phase sends until the test has counted, then testpmd is stopped
    script = (
        f"phase() {{ {send} & echo PHASE-$2; read go; kill -INT $!; wait; }}; A=$(cat /run/dpdk/eal.args); "
        "phase \"$A\" OWN; rm -f /run/dpdk/net0.sock; "
        f"phase \"$(echo \"$A\" | sed 's/mac=[0-9a-fA-F:]*/mac={SPOOF_MAC}/')\" SPOOF; echo DONE; read go"
    )
    annotations = {P + VHOST: "1", P + "cpus": "1", P + "hugepages": "64Mi"}
    ctr_bundle = make_bundle(str(tmp_path / "b"), ["/bin/sh", "-c", script], annotations, env.config_path)
    ctr = Container(str(tmp_path / "runc"), ctr_bundle, "ht-spoof-pmd")
    try:
        ctr.wait_for("PHASE-OWN", timeout_s=90)
        (port,) = hook_ports(ovs)
        own_sent, own_delivered = measure_sending(ovs, bridge, port, receiver)
        ctr.send("go")
        ctr.wait_for("PHASE-SPOOF", timeout_s=60)
        spoof_sent, spoof_delivered = measure_sending(ovs, bridge, port, receiver)
        flows = dump_flows(ovs, bridge)
        ctr.send("go")
        ctr.wait_for("DONE", timeout_s=30)
        ctr.send("go")
    finally:
        ctr.finish()
    report = f"own: switch got {own_sent}, receiver {own_delivered}; spoofed: switch got {spoof_sent}, receiver {spoof_delivered}\n{flows}"
    assert own_sent > 1000 and own_delivered > 1000, report
    assert spoof_sent > 1000, report  # the spoofed frames did reach the switch...
    assert spoof_delivered <= 10, report  # ...and went no further
    assert env.ledger_entries() == {} and hook_ports(ovs) == []


# --- identity: same id, two runtime roots ---------------------------------------------------------------


DUP_ANNOTATIONS = {P + VHOST: "1", P + "cpus": "1", P + "hugepages": "32Mi"}


def dup_bundle(path: Path, config_path: str, cgroups_path: str | None = None) -> str:
    """A bundle of a container that will be named 'dup'; with ``cgroups_path``, its own cgroup."""
    bundle = make_bundle(str(path), ["/bin/sleep", "300"], DUP_ANNOTATIONS, config_path)
    if cgroups_path is not None:
        spec = json.loads(Path(bundle, "config.json").read_text())
        spec["linux"]["cgroupsPath"] = cgroups_path
        Path(bundle, "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


class FirstDup:
    """The first live 'dup': what it holds when it starts, and a check that it still holds exactly that."""

    def __init__(self, env: HookEnv, ovs: OvsInstance, started: Started) -> None:
        assert started.pid is not None, started.stderr
        self.env, self.ovs, self.pid = env, ovs, started.pid
        (self.entry,) = entries_of(env, "dup")
        self.ports, self.cpus = hook_ports(ovs), cpus_allowed(started.pid)
        assert len(self.ports) == 1 and self.cpus == format_cpulist(self.entry["cpus"]), (self.ports, self.cpus, self.entry)

    def intact(self, when: str) -> None:
        entries = entries_of(self.env, "dup")
        summary = [{k: e.get(k) for k in ("key", "pid", "bundle", "cpus", "state")} for e in entries]
        assert [e for e in entries if e.get("pid") == self.pid] == [self.entry], f"{when}: the first 'dup' lost its reservation: {summary}"
        assert set(self.ports) <= set(hook_ports(self.ovs)), f"{when}: the first 'dup' lost its port"
        assert cpus_allowed(self.pid) == self.cpus, (f"{when}: the first 'dup' runs on CPUs {cpus_allowed(self.pid)}, not its reserved "
                                                     f"{self.cpus} (cpuset cgroup {cpuset_cgroup(self.pid)})")


def test_same_id_in_two_runc_roots_sharing_a_cgroup_is_refused(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A second 'dup' under another runc root, put by runc in the first's cgroup (no cgroupsPath), is refused; the first keeps its core and port."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),), pool="0-1", reserved="")
    root_a, root_b = str(tmp_path / "runc-a"), str(tmp_path / "runc-b")
    bundle_a, bundle_b = dup_bundle(tmp_path / "a", env.config_path), dup_bundle(tmp_path / "b", env.config_path)
    started_a = start_detached(root_a, bundle_a, "dup")
    try:
        first = FirstDup(env, ovs, started_a)
        b = start_detached(root_b, bundle_b, "dup")
        try:
            assert b.pid is None, f"the second 'dup' (pid {b.pid}) started in the first's cgroup {cpuset_cgroup(first.pid)}"
            status, lines = hook_refusal(b.stderr)
            assert len(lines) == 1, lines
            line = lines[0]
            assert status == 9, line
            assert re.search(r"cpuset \S*/dup: container dup shares this cgroup with the running container dup "
                             rf"\(bundle {re.escape(bundle_a)}, pid {first.pid}\).*own cgroupsPath", line), line
            first.intact("after the refused start and runc's poststop")
            assert len(entries_of(env, "dup")) == 1
            # a poststop for 'dup' with b's bundle (a replayed one) frees nothing of the first's
            assert env.run("poststop", stdin=oci_state("dup", bundle_b, annotations=DUP_ANNOTATIONS)).returncode == 0
            first.intact("after a poststop naming the second's bundle")
            gc = env.run("gc")
            assert gc.returncode == 0, gc.stderr
            first.intact("after gc")
        finally:
            delete(root_b, "dup")
        first.intact("after the second was deleted")
    finally:
        delete(root_a, "dup")
    assert env.run("gc").returncode == 0
    assert env.ledger_entries() == {} and hook_ports(ovs) == []


def test_same_id_in_two_runc_roots_with_own_cgroups(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """Two 'dup' containers under two runc roots, each with its own cgroupsPath, run on distinct cores with own ports; one's stop never frees the other."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),), pool="0-1", reserved="")
    root_a, root_b = str(tmp_path / "runc-a"), str(tmp_path / "runc-b")
    tag = tmp_path.name.replace("_", "-")[-24:]  # unique per run: cgroups are host-wide
    bundle_a = dup_bundle(tmp_path / "a", env.config_path, f"/ht-dup-a-{tag}")
    bundle_b = dup_bundle(tmp_path / "b", env.config_path, f"/ht-dup-b-{tag}")
    started_a = start_detached(root_a, bundle_a, "dup")
    try:
        first = FirstDup(env, ovs, started_a)
        b = start_detached(root_b, bundle_b, "dup")
        try:
            assert b.pid is not None and b.pid != first.pid, b.stderr
            (entry_b,) = [e for e in entries_of(env, "dup") if e.get("pid") == b.pid]
            assert cpuset_cgroup(b.pid) != cpuset_cgroup(first.pid)
            assert set(entry_b["cpus"]).isdisjoint(first.entry["cpus"])
            assert cpus_allowed(b.pid) == format_cpulist(entry_b["cpus"]) != first.cpus
            ports = hook_ports(ovs)
            assert len(ports) == 2 and set(first.ports) < set(ports), "the second 'dup' has no port of its own"
            first.intact("with the second running")
            # a replayed poststop for 'dup' with b's bundle never frees the first
            assert env.run("poststop", stdin=oci_state("dup", bundle_b, annotations=DUP_ANNOTATIONS)).returncode == 0
            first.intact("after a poststop naming the second's bundle")
            gc = env.run("gc")
            assert gc.returncode == 0, gc.stderr
            first.intact("after gc with both alive")
        finally:
            delete(root_b, "dup")
        first.intact("after the second was deleted")
        assert entries_of(env, "dup") == [first.entry] and hook_ports(ovs) == first.ports  # runc's poststop freed the second
        assert env.run("gc").returncode == 0
        first.intact("after gc")
    finally:
        delete(root_a, "dup")
    assert env.run("gc").returncode == 0
    assert env.ledger_entries() == {} and hook_ports(ovs) == []


# --- the socket directory ---------------------------------------------------------------------------------

FILL = r"""
import errno, os, sys
out = {"fs": os.statvfs("/run/dpdk").f_bsize}
written, err = 0, "none"
chunk = b"x" * (1 << 20)
try:
    with open("/run/dpdk/fill", "wb") as fh:
        while written < (256 << 20):
            fh.write(chunk)
            fh.flush()
            written += len(chunk)
except OSError as exc:
    err = errno.errorcode.get(exc.errno, str(exc.errno))
written = os.stat("/run/dpdk/fill").st_size
files, ferr = 0, "none"
try:
    while files < 100000:
        os.close(os.open("/run/dpdk/f%d" % files, os.O_CREAT | os.O_WRONLY, 0o600))
        files += 1
except OSError as exc:
    ferr = errno.errorcode.get(exc.errno, str(exc.errno))
print("WROTE %d %s FILES %d %s" % (written, err, files, ferr), flush=True)
print("FILLED", flush=True)
sys.stdin.readline()
"""


def test_container_filling_its_socket_directory_is_capped(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """/run/dpdk is a small private tmpfs: writing into it ends in ENOSPC inside, the host's /run loses nothing, the hook keeps working."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    annotations = {P + VHOST: "1", P + "hugepages": "32Mi"}
    ctr_bundle = make_bundle(str(tmp_path / "b"), ["/usr/bin/python3", "-c", FILL], annotations, env.config_path)
    free_before = run_free_bytes()
    ctr = Container(str(tmp_path / "runc"), ctr_bundle, "ht-fill")
    try:
        line = ctr.wait_for("WROTE ", timeout_s=120)
        ctr.wait_for("FILLED", timeout_s=30)
        free_during = run_free_bytes()
        state = json.loads(subprocess.run(["runc", "--root", str(tmp_path / "runc"), "state", "ht-fill"], capture_output=True, text=True,
                                          timeout=30).stdout)
        fstype = [m.split(" - ")[1].split()[0] for m in Path(f"/proc/{state['pid']}/mountinfo").read_text().splitlines()
                  if m.split()[4] == "/run/dpdk"]
        # the hook still starts containers while this one sits on its full directory
        other = make_bundle(str(tmp_path / "other"), ["/bin/true"], {P + "hugepages": "4Mi"}, env.config_path)
        other_run = run_to_end(str(tmp_path / "runc"), other, "ht-fill-other")
        ctr.send("done")
    finally:
        ctr.finish()
    match = re.match(r"WROTE (\d+) (\S+) FILES (\d+) (\S+)", line)
    assert match, line
    written, err, files, ferr = int(match.group(1)), match.group(2), int(match.group(3)), match.group(4)
    assert fstype == ["tmpfs"], fstype
    assert written < 64 << 20 and err == "ENOSPC", line  # a few MiB of memory at most, never 256 MiB of the host's disk
    assert files < 4096 and ferr == "ENOSPC", line
    assert free_before - free_during < 32 << 20, f"/run lost {(free_before - free_during) >> 20} MiB while the container filled its directory"
    assert other_run.returncode == 0, other_run.stderr
    assert env.ledger_entries() == {} and env.owner_records() == [] and hook_ports(ovs) == []


SWAP = r"""
import os, sys
print("READY", flush=True)
for target in iter(sys.stdin.readline, ""):
    target = target.strip()
    if not target:
        break
    try:
        os.unlink("/run/dpdk/net0.sock")
    except FileNotFoundError:
        pass
    os.symlink(target, "/run/dpdk/net0.sock")
    print("SWAPPED", target, flush=True)
"""


def runc_pid(runc_root: str, container_id: str) -> int:
    out = subprocess.run(["runc", "--root", runc_root, "state", container_id], capture_output=True, text=True, timeout=30, check=True).stdout
    return int(json.loads(out)["pid"])


@pytest.mark.slow
def test_socket_swapped_for_a_symlink_does_not_reach_another_tenant(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """A container that replaces net0.sock by a symlink to another tenant's socket gets no link; the victim keeps sending."""
    env = policy_env(tmp_path / "cfg", ovs, (BridgeRule(bridge),))
    root = str(tmp_path / "runc")
    victim_bundle = make_bundle(str(tmp_path / "victim"), demo.testpmd_command(),
                                {P + VHOST: "1", P + "cpus": "1", P + "hugepages": "64Mi"}, env.config_path)
    victim = Container(root, victim_bundle, "ht-victim")
    attacker: Container | None = None
    try:
        victim.wait_for("testpmd> ", timeout_s=90)
        (victim_port,) = hook_ports(ovs)
        victim_pid = runc_pid(root, "ht-victim")
        victim.send("set fwd txonly")
        victim.send("start")
        attacker_bundle = make_bundle(str(tmp_path / "attacker"), ["/usr/bin/python3", "-c", SWAP],
                                      {P + VHOST: "1", P + "hugepages": "32Mi"}, env.config_path)
        attacker = Container(root, attacker_bundle, "ht-attacker")
        attacker.wait_for("READY", timeout_s=60)
        (attacker_port,) = set(hook_ports(ovs)) - {victim_port}
        deadline = time.monotonic() + 10
        while interface(ovs, victim_port, "link_state") != "up":
            assert time.monotonic() < deadline, "the victim's port never came up"
            time.sleep(0.2)
        # first a listening socket of the host, named by the container: the switch must not connect to it
        bait_dir = Path(tempfile.mkdtemp(prefix="ht-bait-", dir="/tmp"))
        bait = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            bait.bind(str(bait_dir / "bait.sock"))
            bait.listen(4)
            bait.settimeout(5)
            attacker.send(str(bait_dir / "bait.sock"))
            attacker.wait_for("SWAPPED", timeout_s=10)
            try:
                conn, _ = bait.accept()
                conn.close()
                connected = True
            except TimeoutError:
                connected = False
        finally:
            bait.close()
            shutil.rmtree(bait_dir, ignore_errors=True)
        failures = ["ovs-vswitchd followed the container's symlink and connected to a host socket it names"] if connected else []
        targets = [interface(ovs, victim_port, "options:vhost-server-path"), f"/proc/{victim_pid}/root/run/dpdk/net0.sock"]
        for target in dict.fromkeys(targets):
            attacker.send(target)
            attacker.wait_for("SWAPPED", timeout_s=10)
            time.sleep(1)
            victim_before = port_rx(ovs, bridge, victim_port)
            time.sleep(4)  # OVS retries a server-mode path once a second
            victim_after = port_rx(ovs, bridge, victim_port)
            attacker_rx = port_rx(ovs, bridge, attacker_port)
            where = f"symlink to {target}"
            if interface(ovs, attacker_port, "link_state") == "up":
                failures.append(f"{where}: the attacker's port connected")
            if attacker_rx:
                failures.append(f"{where}: the attacker's port received {attacker_rx} packets (the victim's traffic?)")
            if interface(ovs, victim_port, "link_state") != "up" or victim_before is None or victim_after is None:
                failures.append(f"{where}: the victim's port lost its link")
            elif victim_after - victim_before <= 1000:
                failures.append(f"{where}: the victim's traffic stopped ({victim_after - victim_before} packets in 4 s)")
        assert failures == []
        attacker.send("")
        victim.send("stop")
        victim.wait_for("Accumulated forward statistics", timeout_s=20)
        victim.send("quit")
    finally:
        if attacker is not None:
            attacker.finish()
        victim.finish()
    assert env.ledger_entries() == {} and hook_ports(ovs) == []


# --- user namespaces ------------------------------------------------------------------------------

USERNS_HOST_ID = 100000


@pytest.mark.slow
def test_user_namespaced_testpmd_runs_through_the_hook(bridge: str, ovs: OvsInstance) -> None:
    """Container root mapped to host uid 100000: its socket dir and hugetlbfs belong to 100000 and testpmd sends over OVS."""
    env_root = Path(tempfile.mkdtemp(prefix="ht-userns-", dir="/tmp"))
    os.chmod(env_root, 0o755)  # the mapped root must reach its rootfs
    try:
        env = policy_env(env_root / "cfg", ovs, (BridgeRule(bridge),))
        script = (
            "echo \"inside uid=$(id -u) run=$(stat -c %u:%g /run/dpdk) huge=$(stat -c %u:%g /dev/hugepages)\"; read go; "
            f"timeout -s INT -k 3 90 {TESTPMD} $(cat /run/dpdk/eal.args) --iova-mode=va -- --total-num-mbufs=2048 "
            "--forward-mode=txonly --stats-period=1 </dev/null >/run/dpdk/testpmd.log 2>&1 & echo SENDING; read go; kill -INT $!; wait; "
            "tail -5 /run/dpdk/testpmd.log; echo TESTPMD-DONE; read go"
        )
        bundle = make_bundle(str(env_root / "b"), ["/bin/sh", "-c", script],
                             {P + VHOST: "1", P + "cpus": "1", P + "hugepages": "64Mi"}, env.config_path)
        spec = json.loads(Path(bundle, "config.json").read_text())
        spec["linux"]["namespaces"].append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": USERNS_HOST_ID, "size": 65536}]
        spec["linux"]["uidMappings"] = mapping
        spec["linux"]["gidMappings"] = mapping
        Path(bundle, "config.json").write_text(json.dumps(spec, indent=1))
        for path in (env_root / "b", Path(bundle, "rootfs")):
            os.chmod(path, 0o755)
        root = str(env_root / "runc")
        ctr = Container(root, bundle, "ht-userns")
        try:
            inside = ctr.wait_for("inside uid=", timeout_s=60)
            pid = runc_pid(root, "ht-userns")
            run_dir = os.stat(f"/proc/{pid}/root/run/dpdk")
            huge_dir = os.stat(f"/proc/{pid}/root/dev/hugepages")
            ctr.send("go")
            ctr.wait_for("SENDING", timeout_s=30)
            (port,) = hook_ports(ovs)
            try:
                sent, _ = measure_sending(ovs, bridge, port)
            finally:
                ctr.send("go")
            done = ctr.wait_for("TESTPMD-DONE", timeout_s=30)
            ctr.send("go")
        finally:
            ctr.finish()
        assert "uid=0 run=0:0 huge=0:0" in inside, inside
        assert (run_dir.st_uid, run_dir.st_gid) == (USERNS_HOST_ID, USERNS_HOST_ID)
        assert (huge_dir.st_uid, huge_dir.st_gid) == (USERNS_HOST_ID, USERNS_HOST_ID)
        assert sent > 1000, f"{done}: OVS got {sent} packets from the container\n" + "\n".join(ctr.output[-30:])
        assert env.ledger_entries() == {} and hook_ports(ovs) == []
    finally:
        shutil.rmtree(env_root, ignore_errors=True)


# --- two installations on one switch ----------------------------------------------------------------


def test_two_installations_gc_only_their_own(bridge: str, ovs: OvsInstance, tmp_path: Path) -> None:
    """Two configs (two state_dirs) on one OVS: each gc removes its own leftovers and never the other's ports or veths."""
    one = policy_env(tmp_path / "one", ovs, (BridgeRule(bridge),))
    two = policy_env(tmp_path / "two", ovs, (BridgeRule(bridge),))
    annotations = {P + VHOST: "1", P + KERNEL: "1", P + "hugepages": "32Mi"}
    root = str(tmp_path / "runc")
    live_one = make_bundle(str(tmp_path / "live-one"), ["/bin/sleep", "300"], annotations, one.config_path)
    live_two = make_bundle(str(tmp_path / "live-two"), ["/bin/sleep", "300"], annotations, two.config_path)
    # killed without poststop: it leaves an OVS port behind (its veth goes with its namespace)
    dead_two = make_bundle(str(tmp_path / "dead-two"), ["/bin/sleep", "300"], {P + VHOST: "1", P + "hugepages": "32Mi"}, two.config_path,
                           hook_stages=("createRuntime",))
    started: list[str] = []
    try:
        owned: dict[str, set[str]] = {}
        links: dict[str, set[str]] = {}
        for cid, bundle in (("ht-one", live_one), ("ht-two", live_two), ("ht-dead", dead_two)):
            before_ports, before_links = set(hook_ports(ovs)), set(host_veths())
            got = start_detached(root, bundle, cid)
            assert got.pid is not None, got.stderr
            started.append(cid)
            owned[cid] = set(hook_ports(ovs)) - before_ports
            links[cid] = set(host_veths()) - before_links
        delete(root, "ht-dead")
        started.remove("ht-dead")
        assert owned["ht-dead"] <= set(hook_ports(ovs)), "the killed container's port should still be there before gc"

        gc = one.run("gc")
        assert gc.returncode == 0, gc.stderr
        ports = set(hook_ports(ovs))
        assert owned["ht-two"] <= ports and owned["ht-dead"] <= ports, "gc of one installation removed the other's ports"
        assert links["ht-two"] <= set(host_veths()), "gc of one installation removed the other's veths"
        assert owned["ht-one"] <= ports and len(entries_of(one, "ht-one")) == 1

        gc = two.run("gc")
        assert gc.returncode == 0, gc.stderr
        ports = set(hook_ports(ovs))
        assert not owned["ht-dead"] & ports, "gc did not remove its own installation's leftover port"
        assert owned["ht-one"] <= ports and owned["ht-two"] <= ports
        assert links["ht-one"] <= set(host_veths()) and links["ht-two"] <= set(host_veths())
        assert len(entries_of(one, "ht-one")) == 1 and len(entries_of(two, "ht-two")) == 1
    finally:
        for cid in started:
            delete(root, cid)
    assert one.ledger_entries() == {} and two.ledger_entries() == {}
    assert hook_ports(ovs) == [] and host_veths() == []
