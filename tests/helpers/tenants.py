"""Helpers for the hostile-tenant suite: a policy config, host snapshots, receivers and attackers.

A *receiver* is an OVS internal port the test adds to a bridge (a tap in the host namespace,
optionally an access port of a VLAN): frames the switch delivers to it show up in its kernel
counters and to a :class:`FrameCounter`.  An *attacker* is a container that sends raw
Ethernet frames from its kernel port (:func:`raw_sender_args`) or runs testpmd with its own
idea of its MAC.  Every frame an attacker crafts carries a marker (``HT:<label>``) so a
receiver counts exactly the frames of each attack and nothing of the background (IPv6 router
solicitations and the like).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.hook_env import HookEnv, make_env
from tests.helpers.ovs_instance import OvsInstance

P = "dpdk-oci-hook/"
RUNC = "/usr/sbin/runc"
MARKER = b"HT:"
LABEL_LEN = 8
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeRule:
    """One ``bridge "NAME" { ... }`` block of the host policy."""

    name: str
    vlan_required: bool = False
    vlans: str = "1-4094"
    allow_mac: bool = True
    allow_addresses: bool = True

    def hcl(self) -> str:
        return (
            f'  bridge "{self.name}" {{\n'
            f"    vlan_required   = {str(self.vlan_required).lower()}\n"
            f'    vlans           = "{self.vlans}"\n'
            f"    allow_mac       = {str(self.allow_mac).lower()}\n"
            f"    allow_addresses = {str(self.allow_addresses).lower()}\n"
            "  }\n"
        )


def policy_env(root: Path, ovs: OvsInstance, rules: tuple[BridgeRule, ...], anti_spoofing: bool = True, **kwargs: Any) -> HookEnv:
    """A hook config for ``ovs`` whose switch.bridge is the first rule's bridge, with a ``policy`` block."""
    root.mkdir(parents=True, exist_ok=True)
    env = make_env(root, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge=rules[0].name, **kwargs)
    block = "policy {\n" + f"  anti_spoofing = {str(anti_spoofing).lower()}\n" + "".join(r.hcl() for r in rules) + "}\n"
    path = Path(env.config_path)
    path.write_text(path.read_text() + block)
    return env


# --- what the host looks like ------------------------------------------------------------------


def switch_state(ovs: OvsInstance) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every bridge of the switch: its datapath_type and its ports."""
    state = {}
    for bridge in ovs.vsctl("list-br", wait=False).split():
        dp = ovs.vsctl("get", "Bridge", bridge, "datapath_type", wait=False).strip().strip('"')
        state[bridge] = (dp, tuple(sorted(ovs.vsctl("list-ports", bridge, wait=False).split())))
    return state


def hook_ports(ovs: OvsInstance) -> list[str]:
    """Ports of any bridge that the hook made (vhost-user ``dpk...`` and veth ``dpv...``)."""
    found = []
    for bridge in ovs.vsctl("list-br", wait=False).split():
        found += [p for p in ovs.vsctl("list-ports", bridge, wait=False).split() if p.startswith(("dpk", "dpv"))]
    return sorted(found)


def host_veths() -> list[str]:
    return sorted(name for name in os.listdir("/sys/class/net") if name.startswith("dpv"))


def run_free_bytes() -> int:
    """Free bytes of the filesystem holding /run (on these hosts: the root filesystem)."""
    st = os.statvfs("/run")
    return st.f_bavail * st.f_frsize


def entries_of(env: HookEnv, container_id: str) -> list[dict[str, Any]]:
    """The ledger entries of a container id (two instances may share one: the ledger is keyed by instance)."""
    return [e for e in env.ledger_entries().values() if e.get("container_id") == container_id]


def cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return ""


def cpuset_cgroup(pid: int) -> str:
    """The cpuset cgroup a process is in (v1), or its unified cgroup."""
    paths = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    return next((path for controllers, path in paths.items() if "cpuset" in controllers.split(",")), paths.get("", ""))


def interface(ovs: OvsInstance, name: str, column: str) -> str:
    return ovs.vsctl("--if-exists", "get", "Interface", name, column, wait=False).strip().strip('"')


def port_counters(ovs: OvsInstance, bridge: str, port: str) -> dict[str, int] | None:
    """Live rx/tx packet and drop counters of one port, from ovs-vswitchd (not the 5 s DB copy).

    None while OVS knows no counters for it (a vhost-user port with nothing connected).
    """
    out = subprocess.run(
        ["ovs-ofctl", "dump-ports", f"unix:{ovs.rundir}/{bridge}.mgmt", port],
        capture_output=True, text=True, timeout=15, check=True,
    ).stdout
    counters = {}
    for direction in ("rx", "tx"):
        match = re.search(rf"{direction} pkts=(\d+|\?), bytes=(?:\d+|\?), drop=(\d+|\?)", out)
        assert match, out
        if match.group(1) == "?":
            return None
        counters[f"{direction}_packets"] = int(match.group(1))
        counters[f"{direction}_dropped"] = int(match.group(2)) if match.group(2) != "?" else 0
    return counters


def port_rx(ovs: OvsInstance, bridge: str, port: str) -> int | None:
    counters = port_counters(ovs, bridge, port)
    return None if counters is None else counters["rx_packets"]


def measure_sending(ovs: OvsInstance, bridge: str, port: str, receiver: str | None = None, window_s: float = 2.0,
                    start_timeout_s: float = 30.0) -> tuple[int, int]:
    """Once ``port`` receives from its container, frames the switch got from it and frames ``receiver`` got, over a window."""
    deadline = time.monotonic() + start_timeout_s
    last = port_rx(ovs, bridge, port)
    while True:
        time.sleep(0.5)
        now = port_rx(ovs, bridge, port)
        if now is not None and last is not None and now > last:
            break
        assert time.monotonic() < deadline, f"port {port} received nothing from its container within {start_timeout_s} s"
        last = now
    port_start, tap_start = port_rx(ovs, bridge, port) or 0, rx_packets(receiver) if receiver else 0
    time.sleep(window_s)
    port_end, tap_end = port_rx(ovs, bridge, port) or 0, rx_packets(receiver) if receiver else 0
    return port_end - port_start, tap_end - tap_start


def dump_flows(ovs: OvsInstance, bridge: str) -> str:
    return subprocess.run(["ovs-ofctl", "dump-flows", f"unix:{ovs.rundir}/{bridge}.mgmt"], capture_output=True, text=True, timeout=15).stdout


# --- bridges and receivers -----------------------------------------------------------------------


def add_bridge(ovs: OvsInstance, prefix: str, datapath_type: str = "netdev") -> str:
    """A new bridge of this switch (removed by :func:`remove_bridge`)."""
    name = ovs.unique(prefix)
    ovs.vsctl("add-br", name, "--", "set", "Bridge", name, f"datapath_type={datapath_type}", wait=datapath_type == "netdev")
    return name


def remove_bridge(ovs: OvsInstance, bridge: str) -> None:
    ovs.vsctl("--if-exists", "del-br", bridge)


def add_receiver(ovs: OvsInstance, bridge: str, tag: int | None = None) -> tuple[str, str]:
    """An internal port (a host tap) on ``bridge``, up, without IPv6; (name, MAC)."""
    name = ovs.unique("htrx")
    port_cols = [f"tag={tag}"] if tag is not None else []
    ovs.vsctl("add-port", bridge, name, *port_cols, "--", "set", "Interface", name, "type=internal")
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/sys/class/net/{name}"):
        assert time.monotonic() < deadline, f"OVS made no tap for {name}"
        time.sleep(0.05)
    try:
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
    except OSError:
        pass
    subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=10)
    return name, Path(f"/sys/class/net/{name}/address").read_text().strip()


def rx_packets(ifname: str) -> int:
    """Frames the kernel received on a host interface (for a receiver: what the switch delivered)."""
    return int(Path(f"/sys/class/net/{ifname}/statistics/rx_packets").read_text())


class FrameCounter:
    """Counts marked frames (``HT:<label>``) arriving on a host interface, per label, in a thread."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self._sock.bind((ifname, 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == _PACKET_OUTGOING:
                continue
            at = frame.find(MARKER)
            if at >= 0:
                self.counts[frame[at + len(MARKER) : at + len(MARKER) + LABEL_LEN].decode(errors="replace").strip()] += 1

    def close(self) -> Counter[str]:
        time.sleep(0.3)  # frames still in the switch's queues
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        return self.counts


# --- attackers -----------------------------------------------------------------------------------

RAW_SENDER = r"""
import json, socket, struct, sys, time
spec = json.loads(sys.argv[1])
ifname = spec["ifname"]
deadline = time.time() + 10
while True:
    try:
        own = open("/sys/class/net/%s/address" % ifname).read().strip()
        if open("/sys/class/net/%s/operstate" % ifname).read().strip() in ("up", "unknown"):
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("no interface " + ifname)
    time.sleep(0.05)
print("OWN-MAC", own, flush=True)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))

def mac(text):
    return bytes.fromhex(text.replace(":", ""))

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF

time.sleep(spec.get("settle_s", 1.0))
for group in spec["groups"]:
    src = group.get("src_mac") or own
    payload = (b"HT:" + group["label"].encode().ljust(8)).ljust(32, b".")
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(group["ip_src"]), socket.inet_aton(group["ip_dst"]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    tag = b"" if group.get("vlan") is None else b"\x81\x00" + struct.pack("!H", group["vlan"])
    frame = mac(group["dst_mac"]) + mac(src) + tag + b"\x08\x00" + ip + udp
    for i in range(group["count"]):
        s.send(frame)
        if i % 10 == 9:
            time.sleep(0.002)
    print("SENT", group["label"], group["count"], flush=True)
    time.sleep(0.3)
"""


def raw_sender_args(ifname: str, groups: list[dict[str, Any]], settle_s: float = 1.0) -> list[str]:
    """A container command that sends each group of marked frames from ``ifname`` (needs CAP_NET_RAW).

    A group: ``label`` (<= 8 chars), ``count``, ``dst_mac``, ``ip_src``, ``ip_dst``, and optionally
    ``src_mac`` (default: the interface's own) and ``vlan`` (an 802.1Q tag).
    """
    return ["/usr/bin/python3", "-c", RAW_SENDER, json.dumps({"ifname": ifname, "groups": groups, "settle_s": settle_s})]


# --- runc ----------------------------------------------------------------------------------------


@dataclass
class Started:
    """``runc run --detach`` of one container: its exit status, stderr and init pid (if it runs)."""

    returncode: int
    stderr: str
    pid: int | None


def start_detached(runc_root: str, bundle: str, container_id: str) -> Started:
    """Start a container in the background (the createRuntime hook runs now)."""
    err_path = Path(bundle) / f"runc-stderr-{container_id}"
    # the container inherits runc's stdio: files, or reading them would wait for the container
    with open(err_path, "w") as err:
        proc = subprocess.run([RUNC, "--root", runc_root, "run", "--detach", "--bundle", bundle, container_id],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=90, check=False)
    state = subprocess.run([RUNC, "--root", runc_root, "state", container_id], capture_output=True, text=True, timeout=30)
    pid = None
    if proc.returncode == 0 and state.returncode == 0:
        doc = json.loads(state.stdout)
        pid = int(doc["pid"]) if doc.get("status") == "running" else None
    return Started(proc.returncode, err_path.read_text(), pid)


def delete(runc_root: str, container_id: str) -> None:
    """Force-delete a container of a private runc root (runs its poststop hook)."""
    subprocess.run([RUNC, "--root", runc_root, "delete", "--force", container_id], capture_output=True, timeout=60)


def hook_refusal(stderr: str) -> tuple[int, list[str]]:
    """The hook's exit status and its stderr lines, from runc's 'error running hook' message."""
    match = re.search(r"error running hook: exit status (\d+), stdout: .*?, stderr: (.*?)\"\s*$", stderr, re.S | re.M)
    assert match, f"runc did not report a failed hook: {stderr}"
    lines = [line for line in match.group(2).split("\\n") if line.strip()]
    return int(match.group(1)), lines


def oci_state(container_id: str, bundle: str, pid: int | None = None, annotations: dict[str, str] | None = None) -> str:
    """The state JSON a runtime hands a hook."""
    state: dict[str, Any] = {"ociVersion": "1.0.2", "id": container_id, "status": "stopped", "bundle": bundle}
    if pid is not None:
        state["pid"] = pid
    if annotations is not None:
        state["annotations"] = annotations
    return json.dumps(state)
