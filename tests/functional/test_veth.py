"""Kernel ports against real network namespaces and a real private OVS-DPDK.

Stand-in containers are ``unshare --net sleep`` processes (their pid is what the OCI state
gives the hook); every link, process and bridge made here is removed in teardown, and
traffic only flows between namespaces made here.  End state is asserted with ``ip -j``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hook.constants import INDEX_KEY, OWNER_KEY
from hook.host import veth as kp
from hook.host.veth import KernelPortError
from hook.model import KernelPortSpec
from tests.helpers.ovs_instance import OvsInstance

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="veth pairs and namespaces need root"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("unshare", "nsenter", "ip")), reason="util-linux or iproute2 missing"),
]

TESTPMD = "/usr/bin/dpdk-testpmd"


def run(*argv: str, timeout: float = 30.0, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(pid: int, *argv: str, timeout: float = 30.0, check: bool = True) -> str:
    return run("nsenter", "-t", str(pid), "-n", *argv, timeout=timeout, check=check)


def ip_json(pid: int | None, *args: str) -> list[dict[str, Any]]:
    argv = ("ip", "-j", *args)
    out = in_ns(pid, *argv) if pid else run(*argv)
    return json.loads(out or "[]")


def links(pid: int | None) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json(pid, "-d", "link", "show")}


def host_name(tag: str, index: int = 0) -> str:
    return f"dpv{tag}k{index}"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Containers:
    """Stand-in containers (their own network namespace) and the host ends made for them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def start(self) -> int:
        proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "300"], stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        assert wait_for(lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")), "unshare did not run"
        return proc.pid

    def tag(self) -> str:
        """9 hex digits as the hook takes from the container key (host end names stay <= 15)."""
        return secrets.token_hex(5)[:9]

    def spec(self, tag: str, index: int, **kw: Any) -> KernelPortSpec:
        name = host_name(tag, index)
        self.names.append(name)
        kw.setdefault("ifname", f"eth{index + 1}")
        kw.setdefault("bridge", "br-test")
        return KernelPortSpec(index=index, host_name=name, **kw)

    def stop(self, pid: int) -> None:
        for proc in self.procs:
            if proc.pid == pid and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        kp.remove(self.names)


@pytest.fixture()
def containers() -> Iterator[Containers]:
    c = Containers()
    try:
        yield c
    finally:
        c.close()
        leftovers = [n for n in c.names if n in links(None)]
        assert not leftovers, f"host links left behind: {leftovers}"


def test_two_ports_into_one_container(containers: Containers) -> None:
    """Names, MACs, MTUs, addresses, routes and UP state inside; host ends up, tagged, IPv6-free."""
    pid = containers.start()
    tag = containers.tag()
    specs = [
        containers.spec(
            tag, 0, mac="02:00:00:00:a0:01", mtu=9000,
            addresses=("10.201.0.2/24", "fd00:201::2/64"),
            routes=(("default", "10.201.0.1"), ("10.202.0.0/16", "10.201.0.254"), ("default", "fd00:201::1")),
        ),
        containers.spec(tag, 1, ifname="data0", addresses=("192.168.201.5/30",)),
    ]
    kp.create(pid, specs, owner="ctr-two")

    inside = links(pid)
    assert set(inside) == {"lo", "eth1", "data0"}
    eth1, data0 = inside["eth1"], inside["data0"]
    assert eth1["address"] == "02:00:00:00:a0:01" and eth1["mtu"] == 9000
    assert data0["mtu"] == 1500 and data0["address"] != eth1["address"]
    for link in (eth1, data0):
        assert link["linkinfo"]["info_kind"] == "veth"
        assert "UP" in link["flags"]

    addrs = {(a["local"], a["prefixlen"]) for i in ip_json(pid, "addr", "show") for a in i["addr_info"] if a.get("scope") == "global"}
    assert addrs == {("10.201.0.2", 24), ("fd00:201::2", 64), ("192.168.201.5", 30)}
    v6 = [a for i in ip_json(pid, "addr", "show", "dev", "eth1") for a in i["addr_info"] if a["local"] == "fd00:201::2"]
    assert not v6[0].get("tentative"), "IPv6 address is added without DAD"

    routes4 = {(r["dst"], r.get("gateway"), r["dev"]) for r in ip_json(pid, "route", "show")}
    assert ("default", "10.201.0.1", "eth1") in routes4
    assert ("10.202.0.0/16", "10.201.0.254", "eth1") in routes4
    routes6 = {(r["dst"], r.get("gateway"), r["dev"]) for r in ip_json(pid, "-6", "route", "show")}
    assert ("default", "fd00:201::1", "eth1") in routes6

    host = links(None)
    for spec, peer in ((specs[0], eth1), (specs[1], data0)):
        end = host[spec.host_name]
        assert end["linkinfo"]["info_kind"] == "veth" and "UP" in end["flags"]
        assert end.get("ifalias") == "dpdk-oci-hook-owner=ctr-two"
        assert end["mtu"] == (spec.mtu or 1500)
        assert end["link_index"] == peer["ifindex"]
        with open(f"/proc/sys/net/ipv6/conf/{spec.host_name}/disable_ipv6", encoding="ascii") as fh:
            assert fh.read().strip() == "1"
    assert kp.existing_owners()[specs[0].host_name] == "ctr-two"
    assert {s.host_name for s in specs} <= set(kp.existing())

    if shutil.which("ethtool"):  # tx checksum offload (and so TSO) is off in the container
        features = in_ns(pid, "ethtool", "-k", "eth1")
        assert re.search(r"^tx-checksumming: off", features, re.M), features
        assert re.search(r"^\s+tx-tcp-segmentation: off", features, re.M), features


def test_failure_half_way_leaves_no_host_link(containers: Containers) -> None:
    """The second port's route is refused by the kernel: the first port goes too."""
    pid = containers.start()
    tag = containers.tag()
    specs = [
        containers.spec(tag, 0, addresses=("10.203.0.2/24",), routes=(("default", "10.203.0.1"),)),
        containers.spec(tag, 1, addresses=("10.204.0.2/24",), routes=(("default", "10.209.0.1"),)),  # gateway not on link
    ]
    with pytest.raises(KernelPortError) as err:
        kp.create(pid, specs, owner="ctr-bad")
    assert "adding route default via 10.209.0.1" in str(err.value) and specs[1].host_name in str(err.value)
    host = links(None)
    assert not [s.host_name for s in specs if s.host_name in host]
    assert set(links(pid)) == {"lo"}


def test_name_clash_inside_leaves_nothing_and_keeps_what_was_there(containers: Containers) -> None:
    """A second setup that asks for an existing name fails whole; the first one is untouched."""
    pid = containers.start()
    first = containers.spec(containers.tag(), 0, addresses=("10.205.0.2/24",))
    kp.create(pid, [first], owner="ctr-a")
    tag = containers.tag()
    clash = [containers.spec(tag, 0, ifname="eth2"), containers.spec(tag, 1, ifname="eth1")]
    with pytest.raises(KernelPortError, match="already has an interface named eth1"):
        kp.create(pid, clash, owner="ctr-b")
    host = links(None)
    assert first.host_name in host
    assert not [s.host_name for s in clash if s.host_name in host]
    assert set(links(pid)) == {"lo", "eth1"}


def test_retry_by_the_owner_replaces_and_others_are_refused(containers: Containers) -> None:
    """A retried createRuntime replaces its own leftovers; another owner's link is never touched."""
    pid = containers.start()
    spec = containers.spec(containers.tag(), 0, addresses=("10.206.0.2/24",))
    kp.create(pid, [spec], owner="ctr-r")
    before = links(None)[spec.host_name]["ifindex"]
    kp.create(pid, [spec], owner="ctr-r")
    assert links(None)[spec.host_name]["ifindex"] != before
    assert set(links(pid)) == {"lo", "eth1"}
    other = containers.start()
    for owner in ("someone-else", None):
        with pytest.raises(KernelPortError, match="already exists .owned by 'ctr-r'"):
            kp.create(other, [spec], owner=owner)
    assert set(links(other)) == {"lo"}
    assert links(None)[spec.host_name].get("ifalias") == "dpdk-oci-hook-owner=ctr-r"


def test_remove_is_idempotent_and_only_removes_veths(containers: Containers) -> None:
    pid = containers.start()
    tag = containers.tag()
    specs = [containers.spec(tag, 0), containers.spec(tag, 1)]
    kp.create(pid, specs)
    kp.remove([s.host_name for s in specs])
    kp.remove([s.host_name for s in specs])
    kp.remove(["dpvnotthere0k0", "lo"])  # missing is fine; a non-veth is left alone
    host = links(None)
    assert "lo" in host and not [s.host_name for s in specs if s.host_name in host]
    assert set(links(pid)) == {"lo"}


def test_host_end_goes_with_the_container(containers: Containers) -> None:
    """When the container's namespace dies, its veths (both ends) die with it."""
    pid = containers.start()
    spec = containers.spec(containers.tag(), 0)
    kp.create(pid, [spec])
    assert spec.host_name in links(None)
    containers.stop(pid)
    assert wait_for(lambda: spec.host_name not in links(None), 10.0)
    kp.remove([spec.host_name])


def test_refuses_the_host_namespace_and_dead_pids(containers: Containers) -> None:
    spec = containers.spec(containers.tag(), 0)
    with pytest.raises(KernelPortError, match="shares the host network namespace"):
        kp.create(os.getpid(), [spec])
    pid = containers.start()
    containers.stop(pid)
    with pytest.raises(KernelPortError, match="cannot open the network namespace"):
        kp.create(pid, [spec])
    assert spec.host_name not in links(None)


# --- over OVS-DPDK ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bridge(ovs: OvsInstance) -> Iterator[str]:
    """A netdev (userspace datapath) bridge for this module; its name is also a host tap device, so random."""
    name = f"brk{secrets.token_hex(3)}"
    ovs.vsctl("add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev")
    try:
        if not wait_for(lambda: (ovs.row("Interface", name) or {}).get("ofport") == 65534, 10.0):
            log = ovs.log_tail(200)
            if "ovs-netdev: creating tap device failed: Device or resource busy" in log:
                # the userspace datapath's tap device is host-global: one OVS-DPDK per host (netns)
                pytest.skip("another OVS-DPDK on this host holds the ovs-netdev tap device; its netdev bridges exclude ours")
            raise AssertionError(f"OVS did not create bridge {name}:\n{ovs.log_tail()}")
        yield name
    finally:
        ovs.vsctl("--if-exists", "del-br", name)


def plug(ovs: OvsInstance, bridge: str, spec: KernelPortSpec, owner: str) -> None:
    """The OVS side as the hook does it: a system port with owner tags on Port and Interface."""
    tags = [f"external_ids:{OWNER_KEY}={json.dumps(owner)}", f"external_ids:{INDEX_KEY}={json.dumps(str(spec.index))}"]
    ovs.vsctl("--", "add-port", bridge, spec.host_name, *tags, "--", "set", "Interface", spec.host_name, "type=system", *tags)


def ofport_ready(ovs: OvsInstance, name: str) -> bool:
    row = ovs.row("Interface", name) or {}
    return isinstance(row.get("ofport"), int) and row["ofport"] > 0 and row.get("link_state") == "up"


def assert_plugged(ovs: OvsInstance, *names: str) -> None:
    for name in names:
        ok = wait_for(lambda n=name: ofport_ready(ovs, n), 10.0)  # type: ignore[misc]
        assert ok, f"OVS did not bring up {name}: {ovs.row('Interface', name)}\n{ovs.log_tail()}"


def ping(pid: int, address: str, count: int = 20) -> tuple[int, float]:
    """(replies, average RTT in ms) of ``ping -c COUNT -i 0.2`` from the namespace of pid."""
    out = in_ns(pid, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", address, timeout=count * 3 + 10, check=False)
    received = re.search(r"(\d+) received", out)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    print(out.strip().splitlines()[-1] if out.strip() else "(no ping output)")
    return (int(received.group(1)) if received else 0), (float(rtt.group(1)) if rtt else float("nan"))


TCP_SERVER = """
import socket, sys
s = socket.socket(); s.settimeout(20); s.bind((sys.argv[1], 5201)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(20); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
print(n, flush=True)
"""

TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5201), timeout=10); c.sendall(b"x" * int(sys.argv[2])); c.close()
"""


def tcp_bytes(server_pid: int, client_pid: int, address: str, size: int) -> int:
    """Send size bytes over TCP between two namespaces; what the server got."""
    server = subprocess.Popen(
        ["nsenter", "-t", str(server_pid), "-n", sys.executable, "-c", TCP_SERVER, address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        in_ns(client_pid, sys.executable, "-c", TCP_CLIENT, address, str(size), timeout=30)
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        return int(out.strip())
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.skipif(not shutil.which("ping"), reason="ping (iputils-ping) missing")
def test_two_containers_ping_over_the_ovs_dpdk_bridge(containers: Containers, ovs: OvsInstance, bridge: str) -> None:
    """Kernel to kernel through a netdev bridge: veth host ends as OVS system ports (AF_PACKET)."""
    a, b = containers.start(), containers.start()
    spec_a = containers.spec(containers.tag(), 0, bridge=bridge, mac="02:00:00:00:b0:01", addresses=("10.210.0.1/24", "fd00:210::1/64"))
    spec_b = containers.spec(containers.tag(), 0, bridge=bridge, mac="02:00:00:00:b0:02", addresses=("10.210.0.2/24", "fd00:210::2/64"))
    kp.create(a, [spec_a], owner="ctr-a")
    kp.create(b, [spec_b], owner="ctr-b")
    plug(ovs, bridge, spec_a, "ctr-a")
    plug(ovs, bridge, spec_b, "ctr-b")
    try:
        assert_plugged(ovs, spec_a.host_name, spec_b.host_name)
        ping(a, "10.210.0.2", count=3)  # ARP and the first upcalls
        received, avg_ms = ping(a, "10.210.0.2", count=20)
        print(f"kernel-to-kernel over OVS-DPDK netdev bridge: {received}/20 replies, avg RTT {avg_ms:.3f} ms")
        assert received >= 19, "ping over the OVS-DPDK bridge lost packets"
        received6, _ = ping(b, "fd00:210::1", count=3)
        assert received6 >= 2
        # TCP needs correct checksums end to end: AF_PACKET forwards what the container's
        # veth sent, so this fails when transmit checksum offload is left on
        assert tcp_bytes(b, a, "10.210.0.2", 4 << 20) == 4 << 20
        assert (ovs.row("Interface", spec_a.host_name) or {}).get("mtu") == 1500  # OVS leaves a system port's MTU alone
    finally:
        ovs.vsctl("--if-exists", "del-port", spec_a.host_name, "--", "--if-exists", "del-port", spec_b.host_name)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("ping") and os.path.exists(TESTPMD)), reason="ping or dpdk-testpmd missing")
def test_kernel_port_reaches_a_dpdk_vhost_port_on_the_same_bridge(containers: Containers, ovs: OvsInstance, bridge: str) -> None:
    """Kernel veth <-> OVS-DPDK <-> vhost-user <-> testpmd (icmpecho answers ARP and ping)."""
    pid = containers.start()
    spec = containers.spec(containers.tag(), 0, bridge=bridge, mtu=9000, addresses=("10.211.0.1/24",))
    kp.create(pid, [spec], owner="ctr-k")
    vhost = f"dpkt{secrets.token_hex(4)}"
    sock = ovs.path(f"{vhost}.sock")
    plug(ovs, bridge, spec, "ctr-k")
    ovs.vsctl("--", "add-port", bridge, vhost, "--", "set", "Interface", vhost, "type=dpdkvhostuserclient", f"options:vhost-server-path={sock}")
    prefix = f"kpt{secrets.token_hex(4)}"
    pmd = subprocess.Popen(
        [
            TESTPMD, "--lcores", "0@0,1@0", "--main-lcore", "0", "--no-pci", "--in-memory", f"--file-prefix={prefix}",
            "-m", "64", "--single-file-segments", "--vdev", f"net_virtio_user0,path={sock},server=1,mac=02:00:00:00:b1:99",
            "--", "--forward-mode=icmpecho", "--total-num-mbufs=2048", "--stats-period=0",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert_plugged(ovs, spec.host_name)
        assert wait_for(lambda: (ovs.row("Interface", vhost) or {}).get("link_state") == "up", 30.0), ovs.log_tail()
        ping(pid, "10.211.0.99", count=3)
        received, avg_ms = ping(pid, "10.211.0.99", count=10)
        print(f"kernel-to-DPDK over OVS-DPDK netdev bridge: {received}/10 replies, avg RTT {avg_ms:.3f} ms")
        assert received >= 9
        neigh = ip_json(pid, "neigh", "show", "10.211.0.99")
        assert neigh and neigh[0]["lladdr"] == "02:00:00:00:b1:99"
        assert (ovs.row("Interface", spec.host_name) or {}).get("mtu") == 9000  # a vhost port of 1500 on the bridge changes nothing
    finally:
        pmd.send_signal(signal.SIGINT)
        try:
            pmd.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pmd.kill()
            pmd.communicate()
        ovs.vsctl("--if-exists", "del-port", spec.host_name, "--", "--if-exists", "del-port", vhost)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
