"""Scenarios 8-11: packets per second and one-packet-in-flight latency, DPDK vs kernel.

At most one busy poller per core (2 vCPUs), so the scenario runs in two phases.

Phase A, no switch: a host ``dpdk-testpmd`` offers two vhost-user sockets (net_vhost, its
forwarding lcore on CPU 1) and receives (rxonly).  Each socket has a sender, a
``dpdk-testpmd`` with a virtio_user port, txonly, its forwarding lcore on CPU 0:
  8. hand-wired: a host process, with the EAL arguments the hook would write and a private
     64M hugetlbfs, as in the DPDK how-to;
  9. hook-wired: the same testpmd in a runc container wired by the hook (static backend
     leasing the host testpmd's socket; 1 core, 64Mi hugepages; ``$(cat /run/dpdk/eal.args)``).
Both senders stay up and take turns (A B B A A B ...), one transmitting at a time, so
noise from other load on the host hits both alike.  Rate = growth of the receiver's
RX-packets (``show port stats``) over the window; the sender's TX alongside; frame size
checked as RX-bytes / RX-packets.

Phase B, a private OVS-DPDK (its PMD on CPU 1):
 10. a hook-wired container (1 core = CPU 0, one port on the bridge) runs testpmd
     ``flowgen``: it sends, and receives and drops what comes back; an OpenFlow rule sends
     every frame back out of its input port, so each counted frame crossed the switch
     (container -> OVS -> container).  Rate = the container's RX-packets growth.
 11. the kernel path: namespaces A and B, each a veth into a Linux bridge in namespace S;
     iperf3 UDP with ``-b 0`` and payloads that give the same frames (18 and 1472 bytes),
     client on CPU 0, server on CPU 1; rate = packets the receiver got (sent - lost) per
     second; and iperf3 TCP.
The OVS and kernel rounds alternate; the PMD may sleep when idle (pmd-maxsleep) except
during the OVS measurements.

Frame sizes are Ethernet frames including the 4-byte FCS (64 and 1518); software ports
carry no FCS, so the frames on the wire here are 60 and 1514 bytes.

Latency, one packet in flight: ``pingpong`` (pingpong.c, built here against the packaged
DPDK) sends one frame and waits for it to come back before sending the next; the
reflector is the host testpmd in macswap mode (8, 9) or the OVS rule (10).  Kernel: ping
between the namespaces (one echo at a time: the interval is far longer than the RTT).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from hook.admin.demo import TESTPMD, testpmd_command
from hook.admin.runc_bundle import Container, Interactive
from tests.bench.common import (
    BENCH_DIR,
    CONTAINER_IDS,
    Bench,
    P,
    Section,
    Target,
    bundle,
    fmt,
    hook_entry,
    median,
    netns_names,
    runc,
    stop_process,
    summary,
)
from tests.bench.start import start_ovs

FRAMES = ((64, 60, 18), (1518, 1514, 1472))  # (frame with FCS, length without FCS, UDP payload)
CORE_ANN = {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "64Mi"}
HAND_HOST = "hand-wired, host process"
HAND_CTR = "hand-wired, container"
HOOK = "hook-wired"
REFLECT_PRIORITY = 65535  # the highest OpenFlow priority


class Testpmd:
    """An interactive testpmd, on the host or in a runc container, with helpers for its counters."""

    def __init__(self, proc: Interactive) -> None:
        self.proc = proc

    @classmethod
    def host(cls, argv: list[str], name: str) -> Testpmd:
        return cls(Interactive(argv, name))

    @classmethod
    def container(cls, runc_root: str, bundle_path: str, container_id: str) -> Testpmd:
        CONTAINER_IDS.add(container_id)
        return cls(Container(runc_root, bundle_path, container_id))

    def wait_for(self, text: str, timeout_s: float = 30.0) -> str:
        return self.proc.wait_for(text, timeout_s)

    def port_stats(self, port: int = 0) -> dict[str, float]:
        mark = len(self.proc.output)
        t0 = time.monotonic()
        self.proc.send(f"show port stats {port}")
        self.proc.wait_for("Tx-pps", timeout_s=15)
        t1 = time.monotonic()
        return parse_stats(self.proc.output[mark:], (t0 + t1) / 2)

    def cmd(self, command: str, timeout_s: float = 20) -> None:
        self.proc.send(command)
        self.proc.wait_for("testpmd> ", timeout_s=timeout_s)

    def stop_fwd(self) -> None:
        self.proc.send("stop")
        self.proc.wait_for("Done.", timeout_s=20)

    def quit(self) -> None:
        """Quit testpmd (and delete its container); killed if it does not exit."""
        if self.proc.proc.poll() is None:
            try:
                self.proc.send("quit")
            except OSError:
                pass
        self.proc.finish(timeout_s=30)


def parse_stats(lines: list[str], t: float) -> dict[str, float]:
    text = "\n".join(lines)
    out = {"t": t}
    for key, pat in (("rx_packets", r"RX-packets:\s+(\d+)"), ("rx_bytes", r"RX-bytes:\s+(\d+)"),
                     ("tx_packets", r"TX-packets:\s+(\d+)"), ("tx_bytes", r"TX-bytes:\s+(\d+)")):
        m = re.search(pat, text)
        out[key] = float(m.group(1)) if m else float("nan")
    return out


def remove_runtime_dirs(prefix: str) -> None:
    """The /var/run/dpdk/<file-prefix> directories host DPDK processes leave."""
    base = "/var/run/dpdk"
    if os.path.isdir(base):
        for name in os.listdir(base):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def rate(a: dict[str, float], b: dict[str, float], key: str) -> float:
    return (b[key] - a[key]) / (b["t"] - a["t"])


def build_pingpong(b: Bench) -> tuple[str | None, str]:
    """Compile pingpong.c against the packaged DPDK; (binary dir or None, why not)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not shutil.which("pkg-config"):
        return None, "no C compiler or pkg-config"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libdpdk"], capture_output=True, text=True, timeout=30)
    if flags.returncode != 0:
        return None, "pkg-config finds no libdpdk (dpdk-dev)"
    out_dir = b.dir("pingpong")
    proc = subprocess.run([cc, "-O2", "-o", str(out_dir / "pingpong"), str(BENCH_DIR / "pingpong.c"), *flags.stdout.split()],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        return None, f"compile failed: {proc.stderr.strip()[-300:]}"
    os.chmod(out_dir, 0o755)
    return str(out_dir), ""


def parse_pingpong(text: str) -> dict[int, dict[str, Any]]:
    found = {}
    for line in text.splitlines():
        if line.startswith("{") and '"size"' in line:
            doc = json.loads(line)
            found[int(doc["size"])] = doc
    return found


def add_pingpong(latency: dict[str, dict[int, list[dict[str, Any]]]], notes: list[str], variant: str, out: str, err: str) -> None:
    """File one pingpong run's results under ``latency[variant][frame]``, or note that it gave none."""
    found = parse_pingpong(out)
    if not found:
        notes.append(f"pingpong {variant} gave no result: {err.strip()[-200:]}")
    for frame, length, _ in FRAMES:
        if length in found:
            latency.setdefault(variant, {}).setdefault(frame, []).append(found[length])


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class KernelPath:
    """Namespaces A and B, each with a veth into a Linux bridge in namespace S."""

    def __init__(self, prefix: str) -> None:
        self.a, self.b, self.s = f"{prefix}a", f"{prefix}b", f"{prefix}s"
        self.addr_a, self.addr_b = "10.252.0.1", "10.252.0.2"

    def setup(self) -> None:
        for ns in (self.a, self.b, self.s):
            ip("netns", "add", ns)
        ip("-n", self.s, "link", "add", "br0", "type", "bridge")
        for ns, addr in ((self.a, self.addr_a), (self.b, self.addr_b)):
            ip("-n", self.s, "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"to-{ns[-1]}")
            ip("-n", self.s, "link", "set", f"to-{ns[-1]}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.s, "link", "set", "br0", "up")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the bridge ports go through listening/learning first
            if self.exec(self.a, "ping", "-c", "1", "-W", "1", self.addr_b).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("kernel path: A cannot ping B across the bridge")

    def teardown(self) -> None:
        for ns in (self.a, self.b, self.s):
            if ns in netns_names():
                ip("netns", "del", ns, check=False)

    def exec(self, ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)

    def iperf(self, b: Bench, seconds: float, udp_payload: int | None) -> dict[str, float]:
        """One iperf3 run A -> B; UDP with ``udp_payload`` bytes or TCP when None."""
        port = "5299"
        server = b.popen(["ip", "netns", "exec", self.b, "iperf3", "-s", "-1", "-p", port, "-A", "1"], "iperf3 server",
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        argv = ["iperf3", "-c", self.addr_b, "-p", port, "-A", "0", "-t", f"{seconds:g}", "-J"]
        if udp_payload is not None:
            argv += ["-u", "-b", "0", "-l", str(udp_payload)]
        proc = self.exec(self.a, *argv, timeout=seconds + 30)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(server)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            return {"error": 1.0}
        end = doc.get("end", {})
        if udp_payload is not None:
            s = end.get("sum", {})
            secs = float(s.get("seconds") or seconds)
            got = float(s.get("packets", 0)) - float(s.get("lost_packets", 0))
            return {"rx_pps": got / secs, "tx_pps": float(s.get("packets", 0)) / secs, "lost_percent": float(s.get("lost_percent", 0))}
        r = end.get("sum_received", {})
        return {"gbit_s": float(r.get("bits_per_second", 0)) / 1e9}

    def ping(self, count: int, payload: int) -> dict[str, Any]:
        proc = self.exec(self.a, "ping", "-c", str(count), "-i", "0.002", "-s", str(payload), self.addr_b, timeout=count * 0.01 + 30)
        rtts = [float(m) * 1000.0 for m in re.findall(r"time=([\d.]+) ms", proc.stdout)]
        return {"count": len(rtts), "lost": count - len(rtts), "p50_us": median(rtts), "p95_us": summary(rtts)["p95"],
                "p99_us": summary(rtts)["p99"], "min_us": min(rtts) if rtts else None}


def measure(rx: Testpmd, tx: Testpmd, window_s: float, warm_s: float, rx_port: int = 0, tx_port: int = 0) -> dict[str, float]:
    """Rates over the window from both sides' counters (forwarding already started)."""
    time.sleep(warm_s)
    r1, t1 = rx.port_stats(rx_port), tx.port_stats(tx_port)
    time.sleep(window_s)
    r2, t2 = rx.port_stats(rx_port), tx.port_stats(tx_port)
    drx = r2["rx_packets"] - r1["rx_packets"]
    return {"rx_pps": rate(r1, r2, "rx_packets"), "tx_pps": rate(t1, t2, "tx_packets"),
            "rx_bytes_per_frame": (r2["rx_bytes"] - r1["rx_bytes"]) / drx if drx > 0 else float("nan")}


def run_datapath(b: Bench) -> Section:
    sec = Section("datapath", "Data path: packets per second and latency (scenarios 8-11)")
    reps = 2 if b.quick else 8  # turns per variant and frame size
    rounds = 1 if b.quick else 4  # OVS / kernel rounds
    window = 1.0 if b.quick else 2.0
    warm = 0.5
    pings = 20000 if b.quick else 200000
    lat_reps = 1 if b.quick else 2
    prefix = f"bench{b.tag}"
    through: dict[str, dict[int, list[dict[str, float]]]] = {}
    latency: dict[str, dict[int, list[dict[str, Any]]]] = {}
    notes: list[str] = []
    pp_dir, why = build_pingpong(b)
    if pp_dir is None:
        notes.append(f"DPDK latency not measured: {why}")

    def record(variant: str, frame: int, value: dict[str, float]) -> None:
        through.setdefault(variant, {}).setdefault(frame, []).append(value)
        b.say(f"datapath: {variant} {frame}B: {value.get('rx_pps', 0) / 1e6:.3f} Mpps at the receiver")

    # ---- phase A: host testpmd vhost <-> testpmd virtio_user, hand- or hook-wired --------------------
    # The host testpmd offers one vhost-user port per sender; all senders stay up and take
    # turns transmitting, so the comparison alternates every few seconds.
    mark = b.mark()
    sock_dir = b.dir("dp-sock")
    os.chmod(sock_dir, 0o755)
    names = [HAND_HOST, HAND_CTR, HOOK]
    socks = {name: str(sock_dir / f"vhost{i}.sock") for i, name in enumerate(names)}
    port_of = {name: i for i, name in enumerate(names)}
    b.on_cleanup("DPDK runtime dirs", lambda: remove_runtime_dirs(prefix))
    vdevs = [arg for i, name in enumerate(names) for arg in ("--vdev", f"net_vhost{i},iface={socks[name]}")]
    vhost = Testpmd.host(["/usr/bin/stdbuf", "-oL", TESTPMD, "-l", "0,1", "--main-lcore", "0", "--no-pci", "--in-memory",
                     f"--file-prefix={prefix}vh", "-m", "128", *vdevs, "--", "-i", "--total-num-mbufs=4096",
                     "--port-topology=loop"], "vhost")  # loop: macswap sends a frame back out of its own port
    b.on_cleanup("host testpmd (vhost)", vhost.quit)
    vhost.wait_for("testpmd> ", timeout_s=60)

    def hugetlbfs(name: str) -> Path:
        """What the hook gives a container, made by hand: a private, capped, reserved hugetlbfs."""
        path = b.dir(name)
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M,size=64M,min_size=64M,mode=0700", "nodev", str(path)],
                       check=True, timeout=30)
        b.on_cleanup(f"hugetlbfs {path}", lambda: subprocess.run(["umount", "-l", str(path)], check=True, timeout=30))
        return path

    def eal(huge: str, sock: str, file_prefix: str) -> list[str]:
        """The EAL arguments the hook writes for 1 core, 64Mi and one client-mode port (and --iova-mode=va)."""
        return ["--lcores", "0@0,1@0", "--main-lcore", "0", f"--file-prefix={file_prefix}", f"--huge-dir={huge}", "-m", "64",
                "--single-file-segments", "--no-pci", f"--vdev=net_virtio_user0,path={sock},mac=02:00:00:00:00:01,queues=1",
                "--iova-mode=va"]

    host_eal = eal(str(hugetlbfs("dp-huge-host")), socks[HAND_HOST], f"{prefix}hw")
    # the DPDK how-to's container: the socket and a hugetlbfs bound in by hand (docker run -v ...), no hook
    ctr_eal = eal("/dev/hugepages", f"/run/dpdk/{Path(socks[HAND_CTR]).name}", f"{prefix}hc")
    ctr_mounts = [{"destination": "/run/dpdk", "type": "bind", "source": str(sock_dir), "options": ["rbind", "rw"]},
                  {"destination": "/dev/hugepages", "type": "bind", "source": str(hugetlbfs("dp-huge-ctr")), "options": ["rbind", "rw"]}]
    static_env = b.hook_env("dp-static", backend="static", static_sockets=(socks[HOOK],), pool="0", reserved="1", budget="512Mi")
    s_cache = str(static_env.root / "cache")
    s_hooks = {stage: [hook_entry(stage, static_env.config_path, s_cache)] for stage in ("createRuntime", "poststop")}
    root = b.runc_root("runc-dp")
    bdir = b.dir("bundles-dp")
    pp_mount = [{"destination": "/bench", "type": "bind", "source": pp_dir, "options": ["rbind", "ro"]}] if pp_dir else []
    pp_args = ["--", "--sizes", ",".join(str(f[1]) for f in FRAMES), "--count", str(pings)]
    pp_script = "exec /bench/pingpong $(cat /run/dpdk/eal.args) --iova-mode=va " + " ".join(pp_args)
    tp_tail = ["--", "-i", "--total-num-mbufs=2048"]

    b.say(f"datapath A: {', '.join(names)}; {reps} turns each per frame size, {window:g} s windows")
    senders: dict[str, Testpmd] = {
        HAND_HOST: Testpmd.host(["/usr/bin/stdbuf", "-oL", TESTPMD, *host_eal, *tp_tail], HAND_HOST),
        HAND_CTR: Testpmd.container(root, bundle(bdir / "tx-hand", ["/usr/bin/stdbuf", "-oL", TESTPMD, *ctr_eal, *tp_tail], {}, {},
                                                extra_mounts=ctr_mounts), "dptxhand"),
        HOOK: Testpmd.container(root, bundle(bdir / "tx-hook", testpmd_command(), CORE_ANN, s_hooks), "dptxhook"),
    }
    for name, tp in senders.items():
        b.on_cleanup(f"sender {name}", tp.quit)
    for tp in senders.values():
        tp.wait_for("testpmd> ", timeout_s=60)
        tp.cmd("set fwd txonly")
    vhost.cmd("set fwd rxonly")
    time.sleep(1.0)
    for frame, length, _ in FRAMES:
        for tp in senders.values():
            tp.cmd(f"set txpkts {length}")
        vhost.cmd("start")
        try:
            for rep in range(reps):
                for variant in names[rep % 3:] + names[:rep % 3]:
                    tp = senders[variant]
                    tp.cmd("start")
                    try:
                        record(variant, frame, measure(vhost, tp, window, warm, rx_port=port_of[variant]))
                    finally:
                        tp.stop_fwd()
        finally:
            vhost.stop_fwd()
    for tp in senders.values():
        tp.quit()
    if pp_dir:
        b.say("datapath A: latency, one packet in flight (pingpong <-> testpmd macswap)")
        vhost.cmd("set fwd macswap")
        vhost.cmd("start")
        pp_bundles = {
            HAND_CTR: bundle(bdir / "pp-hand", ["/bench/pingpong", *ctr_eal, *pp_args], {}, {}, extra_mounts=ctr_mounts + pp_mount),
            HOOK: bundle(bdir / "pp-hook", ["/bin/sh", "-c", pp_script], CORE_ANN, s_hooks, extra_mounts=pp_mount),
        }
        try:
            for rep in range(lat_reps):
                for variant in names[rep % 3:] + names[:rep % 3]:
                    if variant == HAND_HOST:
                        proc = subprocess.run([f"{pp_dir}/pingpong", *host_eal, *pp_args], capture_output=True, text=True, timeout=300)
                        out, err = proc.stdout, proc.stderr
                    else:
                        cid = f"dppp{port_of[variant]}x{rep}"
                        res = runc(root, "run", "--bundle", pp_bundles[variant], cid, timeout=300)
                        runc(root, "delete", "--force", cid)
                        out, err = res.stdout, res.stderr
                    add_pingpong(latency, notes, variant, out, err)
        finally:
            vhost.stop_fwd()
    b.cleanup(keep=mark)  # the host testpmds, the hugetlbfs, the containers

    # ---- phase B: through OVS-DPDK vs the kernel path ---------------------------------------
    ovs = start_ovs(b)
    env = b.hook_env("dp-ovs", ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-bench", pool="0", reserved="1", budget="512Mi")
    o_cache = str(env.root / "cache")
    o_hooks = {stage: [hook_entry(stage, env.config_path, o_cache)] for stage in ("createRuntime", "poststop")}
    mgmt = f"unix:{ovs.rundir}/br-bench.mgmt"

    def ofctl(*args: str) -> None:
        subprocess.run(["ovs-ofctl", *args], check=True, capture_output=True, timeout=30)

    def pmd_sleep(us: int) -> None:
        ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-maxsleep={us}", wait=False)

    def ovs_stats(port: str) -> dict[str, float]:
        """The port's live counters from ovs-vswitchd (the OVSDB statistics column lags by seconds)."""
        ofport = ovs.vsctl("get", "Interface", port, "ofport", wait=False).strip()
        text = subprocess.run(["ovs-ofctl", "dump-ports", mgmt, ofport], capture_output=True, text=True, timeout=30).stdout
        values = {"t": time.monotonic()}
        for direction in ("rx", "tx"):
            m = re.search(direction + r" pkts=(\d+), bytes=\d+, drop=(\d+)", text)
            if m:
                values[f"{direction}_packets"] = float(m.group(1))
                values[f"{direction}_dropped"] = float(m.group(2))
        return values

    root = b.runc_root("runc-dp-b")
    kernel = KernelPath(prefix)
    b.on_cleanup("network namespaces", kernel.teardown)
    kernel.setup()
    fg_bundle = bundle(bdir / "fg", testpmd_command(), CORE_ANN, o_hooks)
    fg = Testpmd.container(root, fg_bundle, "dpflowgen")
    b.on_cleanup("flowgen container", fg.quit)
    fg.wait_for("testpmd> ", timeout_s=60)
    entry = env.ledger().get("dpflowgen")
    port = entry["ports"][0]["name"] if isinstance(entry, dict) else ""
    # every frame goes back out of the port it came in on: above the hook's per-port anti-spoofing
    # rules (allow the port's MAC -> NORMAL), which the pingpong container's port gets later
    ofctl("del-flows", mgmt)
    ofctl("add-flow", mgmt, f"priority={REFLECT_PRIORITY},actions=in_port")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and ovs.vsctl("get", "Interface", port, "link_state", wait=False).strip() != "up":
        time.sleep(0.2)
    fg.cmd("set fwd flowgen")
    b.say(f"datapath B: through OVS vs kernel path, {rounds} round(s)")
    tcp: list[float] = []
    for rnd in range(rounds):
        for variant in (("OVS", "kernel") if rnd % 2 == 0 else ("kernel", "OVS")):
            if variant == "OVS":
                pmd_sleep(0)
                try:
                    for frame, _, _ in FRAMES:
                        fg.cmd(f"set txpkts {frame}")  # flowgen takes 4 bytes off for the FCS
                        fg.cmd("start")
                        o1 = ovs_stats(port)
                        value = measure(fg, fg, window, warm)
                        o2 = ovs_stats(port)
                        fg.stop_fwd()
                        dt = o2["t"] - o1["t"]
                        for key in ("rx_packets", "tx_packets", "tx_dropped", "rx_dropped"):
                            value[f"ovs_{key}_per_s"] = (o2.get(key, 0.0) - o1.get(key, 0.0)) / dt
                        record("through OVS (container)", frame, value)
                finally:
                    pmd_sleep(10000)
            else:
                for frame, _, payload in FRAMES:
                    record("kernel veth+bridge (iperf3 UDP)", frame, kernel.iperf(b, window + warm, payload))
                tcp.append(kernel.iperf(b, window + warm, None).get("gbit_s", float("nan")))
                b.say(f"datapath: kernel TCP {tcp[-1]:.2f} Gbit/s")
    fg.quit()
    if pp_dir:
        b.say("datapath B: latency, one packet in flight (OVS reflects; kernel: ping)")
        pp_ovs = bundle(bdir / "pp-ovs", ["/bin/sh", "-c", "exec /bench/pingpong $(cat /run/dpdk/eal.args) --iova-mode=va "
                                          + " ".join(pp_args)], CORE_ANN, o_hooks, extra_mounts=pp_mount)
        pmd_sleep(0)
        try:
            res = runc(root, "run", "--bundle", pp_ovs, "dpppovs", timeout=300)
        finally:
            pmd_sleep(10000)
            runc(root, "delete", "--force", "dpppovs")
        add_pingpong(latency, notes, "through OVS (container)", res.stdout, res.stderr)
    for frame, _, payload in FRAMES:
        latency.setdefault("kernel veth+bridge (ping)", {}).setdefault(frame, []).append(kernel.ping(500 if b.quick else 2000, payload))

    # ---- results -----------------------------------------------------------------------------
    rows = []
    trows: list[dict[str, Any]] = []
    med: dict[tuple[str, int], float] = {}
    for variant, by_frame in through.items():
        for frame, vals in sorted(by_frame.items()):
            rx = [v.get("rx_pps", float("nan")) for v in vals]
            tx = [v.get("tx_pps", float("nan")) for v in vals]
            bpf = [v.get("rx_bytes_per_frame", float("nan")) for v in vals]
            med[(variant, frame)] = median(rx)
            trows.append({"variant": variant, "frame": frame, "mpps_median": median(rx) / 1e6, "mpps_p95": summary(rx)["p95"] / 1e6,
                          "tx_mpps_median": median(tx) / 1e6, "rounds": len(vals)})
            rows.append([variant, str(frame), fmt(median(rx) / 1e6, 3), fmt(min(rx) / 1e6, 3), fmt(max(rx) / 1e6, 3),
                         fmt(median(tx) / 1e6, 3), fmt(median(bpf), 0) if "kernel" not in variant else "-", str(len(vals))])
    sec.table(f"Packets per second at the receiver (Mpps; {window:g} s windows; hand/hook-wired alternate {reps} times each, "
              f"OVS/kernel {rounds} rounds each)",
              ["path", "frame B", "rx median", "rx min", "rx max", "sender tx median", "bytes/frame seen", "windows"], rows)
    if tcp:
        sec.notes.append(f"kernel path TCP (iperf3, one stream): median {fmt(median(tcp), 2)} Gbit/s over {len(tcp)} run(s)")
    lrows = []
    lat_rows: list[dict[str, Any]] = []
    for variant, by_frame in latency.items():
        for frame, runs in sorted(by_frame.items()):
            d = runs[-1] if len(runs) == 1 else {k: median([r.get(k) or 0 for r in runs]) for k in runs[0] if k != "size"}
            d["count"] = sum(int(r.get("count") or 0) for r in runs)
            d["lost"] = sum(int(r.get("lost") or 0) for r in runs)
            if "p50_ns" in d:
                p50, p95, p99, mn = (d.get(k, 0) / 1000.0 for k in ("p50_ns", "p95_ns", "p99_ns", "min_ns"))
            else:
                p50, p95, p99, mn = (float(d.get(k) or "nan") for k in ("p50_us", "p95_us", "p99_us", "min_us"))
            lat_rows.append({"variant": variant, "frame": frame, "p50_us": p50, "p95_us": p95, "p99_us": p99, "min_us": mn})
            lrows.append([variant, str(frame), fmt(mn, 2), fmt(p50, 2), fmt(p95, 2), fmt(p99, 2), str(d.get("count")), str(d.get("lost"))])
    if lrows:
        sec.table("Round trip with one packet in flight (µs; DPDK: pingpong.c, medians over its runs; kernel: ping)",
                  ["path", "frame B", "min", "median", "p95", "p99", "samples", "lost"], lrows)
    sec.data = {"rounds": rounds, "window_s": window, "throughput": through, "throughput_rows": trows, "latency": latency,
                "latency_rows": lat_rows, "tcp_gbit_s": tcp, "frames": FRAMES}
    ovs_rows = through.get("through OVS (container)", {})
    if ovs_rows:
        sec.notes.append("OVS's own counters on the container's port during the OVS windows (median, per second): " + "; ".join(
            f"{f} B: received {fmt(median([v.get('ovs_rx_packets_per_s', float('nan')) for v in vals]) / 1e6, 3)} M, sent "
            f"{fmt(median([v.get('ovs_tx_packets_per_s', float('nan')) for v in vals]) / 1e6, 3)} M, tx dropped "
            f"{fmt(median([v.get('ovs_tx_dropped_per_s', float('nan')) for v in vals]) / 1e6, 3)} M"
            for f, vals in sorted(ovs_rows.items())))
    sec.notes.append("8/9 count one direction (virtio_user -> vhost) with 2 pollers; 10 counts frames that crossed the switch and "
                     "came back, sent and received by the one forwarding core of the container (the other core is OVS's PMD).")
    sec.notes.append("'hand-wired, container' is the DPDK how-to's container (socket directory and a 64M hugetlbfs bound in by "
                     "hand, same EAL arguments, no hook, not pinned by cgroup); it tells the hook's wiring apart from "
                     "running in a container at all (its own cgroup, all threads on the sender's core).")
    sec.notes += notes

    def turn_ratios(base: str, frame: int) -> list[float]:
        """hook-wired / base for each turn (the variants of a turn ran back to back)."""
        hook = [v.get("rx_pps", float("nan")) for v in through.get(HOOK, {}).get(frame, [])]
        ref = [v.get("rx_pps", float("nan")) for v in through.get(base, {}).get(frame, [])]
        return [h / r for h, r in zip(hook, ref, strict=False) if r > 0]

    tax: dict[str, dict[int, dict[str, float]]] = {}
    for base, label in ((HAND_HOST, "host process, as the issue defines it"), (HAND_CTR, "a container wired by hand, no hook")):
        per = {f: {"median_of_turn_ratios": median(turn_ratios(base, f)),
                   "ratio_of_medians": med.get((HOOK, f), float("nan")) / med.get((base, f), float("nan"))} for f, _, _ in FRAMES}
        tax[base] = per
        worst = min(v["median_of_turn_ratios"] for v in per.values())
        sec.targets.append(Target(f"hook_tax_vs_{'host' if base == HAND_HOST else 'container'}",
                                  f"hook-wired / hand-wired ({label}) packets per second, worse of 64 and 1518 B "
                                  "(median of per-turn ratios)", worst, 0.95, "x", ">=",
                                  note=", ".join(f"{f} B: {fmt(v['median_of_turn_ratios'], 3)} (ratio of medians "
                                                 f"{fmt(v['ratio_of_medians'], 3)})" for f, v in per.items())))
    sec.data["hook_tax"] = tax
    k64 = med.get(("kernel veth+bridge (iperf3 UDP)", 64), float("nan"))
    ovs64 = med.get(("through OVS (container)", 64), float("nan"))
    hook64 = med.get((HOOK, 64), float("nan"))
    sec.targets.append(Target("dpdk_vs_kernel", "through OVS-DPDK / kernel veth+bridge, 64 B, packets per second at the receiver",
                              ovs64 / k64 if k64 else None, 5.0, "x", ">=",
                              note=f"OVS {fmt(ovs64 / 1e6, 3)} Mpps vs kernel {fmt(k64 / 1e6, 3)} Mpps; hook-wired (no switch) / kernel "
                                   f"= {fmt(hook64 / k64 if k64 else None, 1)}x"))
    return sec
