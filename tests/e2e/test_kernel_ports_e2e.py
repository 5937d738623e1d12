"""Kernel interfaces beside DPDK ports: a veth from the hook answers to, and reaches, a DPDK app on the same OVS bridge."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from hook.admin import demo
from hook.admin.runc_bundle import Container, make_bundle, run_to_end
from tests.helpers.hook_env import make_env
from tests.helpers.ovs_instance import OvsInstance

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("ping"), reason="ping is not installed (iputils-ping)"),
]
P = "dpdk-oci-hook/"


def rtt_ms(output: str) -> float:
    match = re.search(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/", output)
    assert match, output
    return float(match.group(1))


def host_links() -> list[str]:
    return sorted(name for name in os.listdir("/sys/class/net") if name.startswith("dpv"))


def test_kernel_port_pings_a_dpdk_app_and_a_kernel_neighbour(tmp_path: Path, ovs: OvsInstance) -> None:
    """A kernel-only container pings testpmd (icmpecho, vhost-user) and the DPDK container's own veth; all goes after."""
    env = make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-kern")
    runc_root = str(tmp_path / "runc")
    dpdk_annotations = {
        P + "vhost-user": "1",
        P + "cpus": "1",
        P + "hugepages": "64Mi",
        P + "kernel-ports": '[{"name": "ctl0", "addresses": ["10.9.0.3/24"]}]',
    }
    bundle = make_bundle(str(tmp_path / "dpdk"), demo.testpmd_command(), dpdk_annotations, env.config_path)
    app = Container(runc_root, bundle, "icmpecho")
    try:
        app.wait_for("testpmd> ", timeout_s=60)
        app.send("set fwd icmpecho")
        app.send("start")
        pinger_annotations = {P + "kernel-ports": '[{"addresses": ["10.9.0.1/24"], "mtu": 1500}]'}
        script = ("ip -br addr show eth1; ping -c 10 -i 0.2 -W 2 10.9.0.2; echo SPLIT-HERE; ping -c 10 -i 0.2 -W 2 10.9.0.3; "
                  "cat /run/dpdk/config.json")
        pinger = make_bundle(str(tmp_path / "pinger"), ["/bin/sh", "-c", script], pinger_annotations, env.config_path,
                             capabilities=("CAP_NET_RAW",))
        proc = run_to_end(runc_root, pinger, "pinger")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "10.9.0.1/24" in proc.stdout
        to_dpdk, to_kernel = proc.stdout.split("SPLIT-HERE")
        assert " 0% packet loss" in to_dpdk, to_dpdk
        assert " 0% packet loss" in to_kernel, to_kernel
        print(f"\nRTT kernel->DPDK (testpmd icmpecho): {rtt_ms(to_dpdk):.3f} ms; kernel->kernel: {rtt_ms(to_kernel):.3f} ms")
        assert '"kernel_ports"' in proc.stdout and '"name": "eth1"' in proc.stdout
        app.send("stop")
        app.wait_for("Accumulated forward statistics", timeout_s=20)
        app.send("quit")
    finally:
        app.finish()
    assert env.ledger() == {} and env.owner_records() == []
    assert host_links() == []
    out = ovs.vsctl("--bare", "--columns=name", "find", "Interface", 'external_ids:dpdk-oci-hook-owner!=""', wait=False)
    assert out.split() == []
