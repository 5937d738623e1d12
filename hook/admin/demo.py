"""``dpdk-oci-hook demo``: two containers wired by the hook pass packets over the host switch.

Container ``rx`` runs testpmd in rxonly mode, container ``tx`` in txonly mode, each with one
vhost-user port on the configured bridge.  On a small host the two forwarding loops take
turns (tx sends for a while, then rx drains its ring), so no more busy pollers run than
there are cores beside the switch's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from hook.admin.runc_bundle import Container, forward_stats, make_bundle

PREFIX = "dpdk-oci-hook/"
TESTPMD = "/usr/bin/dpdk-testpmd"


@dataclass
class DemoResult:
    """Packets the sender sent and the receiver got, through the switch."""

    tx_packets: int
    rx_packets: int
    tx_output: list[str]
    rx_output: list[str]


def testpmd_command(extra: str = "") -> list[str]:
    """testpmd with the hook's EAL arguments, interactive, with a small mbuf pool."""
    script = f'exec /usr/bin/stdbuf -oL {TESTPMD} $(cat /run/dpdk/eal.args) --iova-mode=va -- -i --total-num-mbufs=2048 {extra}'
    return ["/bin/sh", "-c", script]


def run_demo(
    config_path: str,
    workdir: str | None = None,
    send_seconds: float = 1.0,
    tx_cpus: int = 1,
    rx_cpus: int = 0,
    hugepages: str = "64Mi",
    say: Callable[[str], None] = print,
    concurrent: bool | None = None,
) -> DemoResult:
    """Start rx and tx containers through the hook, send, receive, stop; returns the counts.

    ``concurrent`` (default: when the host has 4 or more CPUs) lets rx poll while tx sends;
    otherwise rx drains afterwards what its ring held (at most the ring's 256 packets).
    """
    if concurrent is None:
        concurrent = (os.cpu_count() or 1) >= 4
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="dpdk-oci-demo-")
    runc_root = os.path.join(workdir, "runc")
    os.makedirs(runc_root, exist_ok=True)
    stamp = f"{os.getpid()}-{int(time.time())}"
    containers: list[Container] = []
    try:
        def start(name: str, cpus: int, extra: str = "") -> Container:
            annotations = {PREFIX + "vhost-user": "1", PREFIX + "hugepages": hugepages}
            if cpus:
                annotations[PREFIX + "cpus"] = str(cpus)
            bundle = make_bundle(os.path.join(workdir, name), testpmd_command(extra), annotations, config_path)
            say(f"==> starting container {name}: " + " ".join(f"--annotation {k}={v}" for k, v in annotations.items()))
            ctr = Container(runc_root, bundle, f"demo-{name}-{stamp}")
            containers.append(ctr)
            ctr.wait_for("testpmd> ", timeout_s=60)
            return ctr

        # --no-flush-rx: testpmd would otherwise drop what waits in the ring when it starts
        rx = start("rx", rx_cpus, "--no-flush-rx")
        rx.send("set fwd rxonly")
        if concurrent:
            rx.send("start")
        tx = start("tx", tx_cpus)
        time.sleep(1.5)  # vhost-user reconnects once a second: let both links come up
        tx.send("set fwd txonly")
        tx.send("start")
        say(f"==> tx sends for {send_seconds} s")
        time.sleep(send_seconds)
        tx.send("stop")
        tx.wait_for("Accumulated forward statistics", timeout_s=20)
        tx.wait_for("testpmd> ", timeout_s=20)
        if not concurrent:
            rx.send("start")
            time.sleep(0.5)
        rx.send("stop")
        rx.wait_for("Accumulated forward statistics", timeout_s=20)
        rx.wait_for("testpmd> ", timeout_s=20)
        result = DemoResult(forward_stats(tx.output)["tx"], forward_stats(rx.output)["rx"], tx.output, rx.output)
        for ctr in (tx, rx):
            ctr.send("quit")
        say(f"==> tx sent {result.tx_packets} packets; rx received {result.rx_packets} of them through the switch")
        return result
    finally:
        for ctr in reversed(containers):
            ctr.finish()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def main(config_path: str) -> int:
    """The demo as a command: exit 0 when packets crossed the switch."""
    if not os.path.exists(TESTPMD):
        print(f"dpdk-oci-hook demo: {TESTPMD} is missing (apt-get install dpdk-dev)")
        return 1
    result = run_demo(config_path)
    status = subprocess.run([sys.executable, "-I", "-m", "hook", "status"], capture_output=True, text=True, timeout=30)
    print(status.stdout.strip())
    return 0 if result.rx_packets > 0 else 1
