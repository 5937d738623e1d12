"""``dpdk-oci-hook demo``: two containers wired by the hook pass packets over the host OVS-DPDK.

Containers ``rx`` and ``tx`` run testpmd, each with one vhost-user port on the configured
bridge.  Busy pollers never outnumber the cores: OVS's PMD is one, and on a 2-CPU host that
leaves one, so only one testpmd forwards at any time.  Every packet sent is accounted for:

1. tx -> switch -> rx, in bounded bursts: tx sends a burst that fits rx's ring (224
   packets), stops, then rx drains it, and so on; received must be >= 90% of sent.
2. Rate and latency through OVS-DPDK: a temporary OpenFlow rule (its own cookie, on tx's
   port only) sends every frame from tx back out of tx's port, and tx forwards what comes
   back (testpmd ``io``, ``start tx_first``): a fixed number of frames circulates
   container -> switch -> container.  32 in flight gives a rate; 1 in flight gives the
   round trip (1 / rate), as the benchmark's one-packet-in-flight latency.
3. The kernel path for comparison: a veth pair between two network namespaces, ``ping``
   flooding with the same 32 and 1 echoes in flight (ICMP echo is answered in the kernel).

It prints one line per phase, finishes in well under a minute, removes what it started
(containers, the rule, the namespaces; the PMD's idle sleep is restored), and fails (exit 1)
when fewer than 90% of the packets sent arrived.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hook.admin.runc_bundle import Container, make_bundle
from hook.config import Config

PREFIX = "dpdk-oci-hook/"
TESTPMD = "/usr/bin/dpdk-testpmd"
MIN_DELIVERED = 0.9  # received / sent below this fails the demo
BURSTS_PER_ROUND = 7  # x 32 packets = 224: fits the receiver's 256-descriptor ring with room
WINDOW = 32  # frames in flight for the rate
FLOW_PRIORITY = 65000  # above the hook's per-port rules: this rule only reflects tx's own frames
FLOW_COOKIE = 0xDE30_0000_0000_0000
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass
class PathResult:
    """A path's rate with :data:`WINDOW` frames in flight and round trip with one."""

    name: str
    rate_pps: float | None = None
    rtt_us: float | None = None
    sent: int = 0
    received: int = 0
    note: str = ""
    checked: bool = True  # counts toward the demo's pass/fail (the kernel's ping does not)


@dataclass
class DemoResult:
    """What the demo measured: packets tx sent and rx received through the switch, and the paths."""

    tx_packets: int
    rx_packets: int
    paths: list[PathResult] = field(default_factory=list)
    tx_output: list[str] = field(default_factory=list)
    rx_output: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> float:
        return self.rx_packets / self.tx_packets if self.tx_packets else 0.0

    @property
    def ok(self) -> bool:
        if self.delivered < MIN_DELIVERED:
            return False
        return all(p.received >= MIN_DELIVERED * p.sent for p in self.paths if p.checked)


def testpmd_command(extra: str = "") -> list[str]:
    """testpmd with the hook's EAL arguments, interactive, with a small mbuf pool."""
    script = f'exec /usr/bin/stdbuf -oL {TESTPMD} $(cat /run/dpdk/eal.args) --iova-mode=va -- -i --total-num-mbufs=2048 {extra}'
    return ["/bin/sh", "-c", script]


class Testpmd:
    """An interactive testpmd in a container: one command at a time, port counters."""

    def __init__(self, ctr: Container) -> None:
        self.ctr = ctr

    def cmd(self, command: str, done: str = "testpmd> ", timeout_s: float = 20) -> None:
        self.ctr.send(command)
        if done != "testpmd> ":
            self.ctr.wait_for(done, timeout_s)
        self.ctr.wait_for("testpmd> ", timeout_s)

    def stop(self) -> None:
        self.cmd("stop", done="Done.")

    def quit(self) -> None:
        self.ctr.send("quit")
        self.ctr.wait_for("Bye", 30)

    def counters(self) -> tuple[float, int, int]:
        """(monotonic time, RX-packets, TX-packets) of port 0."""
        mark = len(self.ctr.output)
        self.ctr.send("show port stats 0")
        self.ctr.wait_for("Tx-pps", 15)
        when = time.monotonic()
        self.ctr.wait_for("testpmd> ", 15)
        text = "\n".join(self.ctr.output[mark:])
        rx = re.search(r"RX-packets:\s+(\d+)", text)
        tx = re.search(r"TX-packets:\s+(\d+)", text)
        if not rx or not tx:
            raise RuntimeError(f"{self.ctr.id}: no port counters in:\n{text}")
        return when, int(rx.group(1)), int(tx.group(1))


def _run(argv: list[str], timeout: float = 30, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_ENV, cwd="/", check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


class Switch:
    """The few OVS operations the demo needs, on the configured OVS (rules by cookie only)."""

    def __init__(self, config: Config) -> None:
        sw = config.switch
        tools = os.path.dirname(sw.ovs_vsctl) or "/usr/bin"
        self.vsctl = [sw.ovs_vsctl, "--timeout=10"] + ([f"--db={sw.ovsdb}"] if sw.ovsdb else [])
        self.ofctl = os.path.join(tools, "ovs-ofctl")
        self.rundir = sw.ovs_rundir
        self.cookie = FLOW_COOKIE | (os.getpid() & 0xFFFF_FFFF)

    def get(self, table: str, record: str, column: str) -> str:
        return _run([*self.vsctl, "--no-wait", "get", table, record, column]).strip().strip('"')

    def mgmt(self, bridge: str) -> str:
        return f"unix:{os.path.join(self.rundir, bridge + '.mgmt')}"

    @contextlib.contextmanager
    def rule(self, bridge: str, in_port: str, actions: str) -> Iterator[None]:
        """A flow for one port while the block runs, removed by its cookie afterwards."""
        mgmt = self.mgmt(bridge)
        _run([self.ofctl, "-O", "OpenFlow13", "add-flow", mgmt,
              f"cookie={self.cookie:#x},priority={FLOW_PRIORITY},in_port={in_port},actions={actions}"])
        try:
            yield
        finally:
            _run([self.ofctl, "-O", "OpenFlow13", "del-flows", mgmt, f"cookie={self.cookie:#x}/-1"], check=False)

    @contextlib.contextmanager
    def pmd_awake(self) -> Iterator[str]:
        """The PMD does not nap between polls while the block runs (its setting is restored after).

        With few frames in flight the PMD's load-based sleep (``pmd-maxsleep``, up to 10 ms
        on an idle switch) would be measured instead of the data path.
        """
        before = _run([*self.vsctl, "--no-wait", "--if-exists", "get", "Open_vSwitch", ".", "other_config:pmd-maxsleep"],
                      check=False).strip().strip('"')
        if before in ("", "0"):
            yield before or "unset"
            return
        _run([*self.vsctl, "set", "Open_vSwitch", ".", "other_config:pmd-maxsleep=0"])  # waits until applied
        try:
            yield before
        finally:
            _run([*self.vsctl, "--no-wait", "set", "Open_vSwitch", ".", f"other_config:pmd-maxsleep={before}"], check=False)


def wait_link_up(switch: Switch, port: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while switch.get("Interface", port, "link_state") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port}: link not up within {timeout_s:g} s")
        time.sleep(0.2)


def circulate(tp: Testpmd, in_flight: int, window_s: float) -> PathResult:
    """Frames bounce tx -> switch -> tx with ``in_flight`` of them at a time; the rate over ``window_s``."""
    burst = min(in_flight, 32)
    tp.cmd("set fwd io")
    tp.cmd(f"set burst {burst}")
    tp.cmd(f"start tx_first {max(1, in_flight // burst)}")
    time.sleep(0.2)
    t1, rx1, tx1 = tp.counters()
    time.sleep(window_s)
    t2, rx2, tx2 = tp.counters()
    tp.stop()
    # drain what was still in flight (testpmd runs with --no-flush-rx): it would join the next window
    tp.cmd("set fwd rxonly")
    tp.cmd("start")
    time.sleep(0.05)
    tp.stop()
    rate = (rx2 - rx1) / (t2 - t1)
    return PathResult("", rate_pps=rate, sent=tx2 - tx1, received=rx2 - rx1)


class KernelPath:
    """Two network namespaces joined by a veth pair; ICMP echo is answered by the kernel."""

    def __init__(self, tag: str) -> None:
        self.a, self.b = f"dpdkdemo{tag}a", f"dpdkdemo{tag}b"
        self.addr_b = "10.254.77.2"

    def __enter__(self) -> KernelPath:
        try:
            for ns in (self.a, self.b):
                _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", self.a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.b])
            for ns, addr in ((self.a, "10.254.77.1/24"), (self.b, self.addr_b + "/24")):
                _run(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.a, self.b):
            if os.path.exists(f"/run/netns/{ns}"):
                _run(["ip", "netns", "del", ns], check=False)

    def ping(self, in_flight: int, count: int) -> PathResult:
        """``ping -f`` with ``in_flight`` echoes outstanding (``-l``); rate, and ping's mean round trip."""
        argv = ["ip", "netns", "exec", self.a, "ping", "-q", "-f", "-c", str(count), "-W", "1"]
        if in_flight > 1:
            argv += ["-l", str(in_flight)]
        start = time.monotonic()
        out = _run(argv + [self.addr_b], timeout=60, check=False)
        elapsed = time.monotonic() - start
        sent = re.search(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms", out)
        rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
        if not sent:
            raise RuntimeError(f"ping gave no summary: {out.strip()[-300:]}")
        received = int(sent.group(2))
        seconds = int(sent.group(3)) / 1000 or elapsed  # ping's own clock: without its start-up
        return PathResult("", rate_pps=received / seconds if seconds > 0 else None, rtt_us=float(rtt.group(1)) * 1000 if rtt else None,
                          sent=int(sent.group(1)), received=received)


def fmt_rate(pps: float | None) -> str:
    if pps is None:
        return "-"
    return f"{pps / 1e6:.2f} Mpps" if pps >= 1e6 else f"{pps / 1e3:.0f} kpps"


def fmt_us(us: float | None) -> str:
    return "-" if us is None else f"{us:.1f} µs"


def summary_table(paths: list[PathResult]) -> list[str]:
    """The comparison as aligned lines (plain values in, text out)."""
    head = f"{'path':44} {f'rate, {WINDOW} in flight':>20} {'round trip, 1 in flight':>24}"
    lines = [head]
    for p in paths:
        lines.append(f"{p.name:44} {fmt_rate(p.rate_pps):>20} {fmt_us(p.rtt_us):>24}" + (f"  ({p.note})" if p.note else ""))
    return lines


def run_demo(
    config_path: str,
    workdir: str | None = None,
    say: Callable[[str], None] = print,
    rounds: int = 20,
    window_s: float = 1.0,
    hugepages: str = "64Mi",
    kernel: bool = True,
) -> DemoResult:
    """Start rx and tx through the hook, run the three phases, stop everything; returns what was measured."""
    from hook import config as config_mod
    from hook.host.ledger import Ledger

    config = config_mod.load(config_path)
    if config.switch.backend != "ovs":
        raise RuntimeError(f"the demo needs the ovs switch backend (the config has {config.switch.backend!r})")
    switch = Switch(config)
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="dpdk-oci-demo-")
    runc_root = os.path.join(workdir, "runc")
    os.makedirs(runc_root, exist_ok=True)
    stamp = f"{os.getpid()}-{int(time.time())}"
    containers: list[Container] = []
    started = time.monotonic()

    def step(text: str) -> None:
        say(f"==> [{time.monotonic() - started:5.1f}s] {text}")

    def start(name: str, cpus: int) -> tuple[Testpmd, str, str]:
        """The container, and its switch port's name and bridge (from the ledger)."""
        annotations = {PREFIX + "vhost-user": "1", PREFIX + "hugepages": hugepages}
        if cpus:
            annotations[PREFIX + "cpus"] = str(cpus)
        # --no-flush-rx: testpmd would otherwise drop what waits in the ring when forwarding starts
        bundle = make_bundle(os.path.join(workdir, name), testpmd_command("--no-flush-rx"), annotations, config_path)
        step(f"starting container {name}: " + " ".join(f"--annotation {k}={v}" for k, v in annotations.items()))
        ctr = Container(runc_root, bundle, f"demo-{name}-{stamp}")
        containers.append(ctr)
        ctr.wait_for("testpmd> ", timeout_s=60)
        entry = next(r for r in Ledger(config.ledger_path).snapshot().values() if r.container_id == ctr.id)
        return Testpmd(ctr), entry.ports[0].name, entry.ports[0].bridge

    try:
        rx, rx_port, bridge = start("rx", 0)
        tx, tx_port, tx_bridge = start("tx", 1 if config.cpu_pool else 0)
        for port in (rx_port, tx_port):
            wait_link_up(switch, port)
        rx_of, tx_of = switch.get("Interface", rx_port, "ofport"), switch.get("Interface", tx_port, "ofport")
        rx.cmd("set fwd rxonly")
        tx.cmd("set fwd rxonly")  # after its first bursts tx only listens (nothing comes back)

        per_round = BURSTS_PER_ROUND * 32
        step(f"tx -> switch -> rx: {rounds} rounds of {per_round} packets, one poller at a time")
        _, rx0, _ = rx.counters()
        _, _, tx0 = tx.counters()
        with switch.rule(tx_bridge, tx_of, f"output:{rx_of}") if tx_bridge == bridge else contextlib.nullcontext():
            for _ in range(rounds):
                tx.cmd(f"start tx_first {BURSTS_PER_ROUND}")
                tx.stop()
                rx.cmd("start")
                time.sleep(0.01)
                rx.stop()
        _, rx1, _ = rx.counters()
        _, _, tx1 = tx.counters()
        result = DemoResult(tx1 - tx0, rx1 - rx0)
        step(f"tx sent {result.tx_packets} packets; rx received {result.rx_packets} of them "
             f"({100 * result.delivered:.1f}%) through the switch")
        from hook.admin.status import format_status, gather

        for line in format_status(gather(config)).splitlines():
            say(f"    {line}")

        rx.quit()
        step(f"through OVS-DPDK: frames circulate tx -> switch -> tx (1 in flight, then {WINDOW}), {window_s:g} s each")
        ovs = PathResult("OVS-DPDK, container vhost-user port")
        with switch.pmd_awake() as maxsleep, switch.rule(tx_bridge, tx_of, "in_port"):
            one = circulate(tx, 1, window_s)
            many = circulate(tx, WINDOW, window_s)
        ovs.rate_pps, ovs.sent, ovs.received = many.rate_pps, many.sent, many.received
        ovs.rtt_us = 1e6 / one.rate_pps if one.rate_pps else None
        if maxsleep not in ("unset", "0"):
            ovs.note = f"PMD idle sleep off while measuring (pmd-maxsleep {maxsleep} restored)"
        result.paths.append(ovs)
        step(f"OVS-DPDK: {fmt_rate(ovs.rate_pps)} with {WINDOW} in flight; round trip {fmt_us(ovs.rtt_us)}")
        tx.quit()
        result.tx_output, result.rx_output = tx.ctr.output, rx.ctr.output

        if kernel and shutil.which("ip") and shutil.which("ping"):
            step(f"kernel path: veth pair between two network namespaces, ping -f ({WINDOW} in flight, then 1)")
            with KernelPath(str(os.getpid() % 100000)) as kpath:
                many = kpath.ping(WINDOW, 100000)
                one = kpath.ping(1, 10000)
            kern = PathResult("kernel veth pair, ping", many.rate_pps, one.rtt_us, many.sent, many.received, checked=False)
            result.paths.append(kern)
            step(f"kernel: {fmt_rate(kern.rate_pps)} with {WINDOW} in flight; round trip {fmt_us(kern.rtt_us)}")
        else:
            step("kernel path skipped (no ip or ping)")
        for line in summary_table(result.paths):
            say(f"    {line}")
        return result
    finally:
        for ctr in reversed(containers):
            ctr.finish()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def main(config_path: str) -> int:
    """The demo as a command: exit 0 when at least 90% of what was sent arrived."""
    import signal

    if not os.path.exists(TESTPMD):
        print(f"dpdk-oci-hook demo: {TESTPMD} is missing (apt-get install dpdk-dev)")
        return 1

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # a killed demo still removes what it started
    try:
        result = run_demo(config_path)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"dpdk-oci-hook demo: {exc}")
        return 1
    except KeyboardInterrupt:
        print("dpdk-oci-hook demo: interrupted; what it started was removed")
        return 130
    if not result.ok:
        print(f"dpdk-oci-hook demo: FAILED: fewer than {MIN_DELIVERED:.0%} of the packets sent arrived")
        return 1
    print("==> done: every container, rule and namespace the demo made is gone")
    return 0
