"""OvsStats against a real private OVS-DPDK with traffic from a host testpmd.

One port of each vhost-user type on a netdev bridge; one testpmd (one forwarding lcore, on
CPU 0 beside the PMD's CPU 1) sends a known number of frames into each; the switch's
counters must show them exactly for ``dpdkvhostuserclient`` (and agree with ``ovs-ofctl
dump-ports``); for ``dpdkvhostuser`` OVS 3.1 has no packet counters at all, only its own drops
(the frames flooded to it from the other port, which nobody reads, fill its ring and drop).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hook.admin.runc_bundle import Interactive
from hook.config import SwitchConfig
from hook.errors import SwitchError
from hook.switch.stats import OvsStats, PortCounters
from tests.helpers.ovs_instance import OvsInstance

TESTPMD = "/usr/bin/dpdk-testpmd"
FRAME = 64  # testpmd txonly's default frame length (no FCS on software ports)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists(TESTPMD), reason=f"{TESTPMD} is missing (apt-get install dpdk-dev)"),
]


def switch_config(ovs: OvsInstance) -> SwitchConfig:
    return SwitchConfig(backend="ovs", ovs_vsctl=ovs.vsctl_path, ovsdb=ovs.db, ovs_rundir=ovs.rundir, timeout_s=5.0)


def port_tx(tp: Interactive, port: int) -> int:
    mark = len(tp.output)
    tp.send(f"show port stats {port}")
    tp.wait_for("Tx-pps", 15)
    tp.wait_for("testpmd> ", 15)
    found = re.search(r"TX-packets:\s+(\d+)", "\n".join(tp.output[mark:]))
    assert found, "\n".join(tp.output[mark:])
    return int(found.group(1))


def test_counters_of_both_vhost_user_types_follow_real_traffic(ovs: OvsInstance, tmp_path: Path) -> None:
    """dpdkvhostuserclient: exact live rx packets and bytes; dpdkvhostuser: link state and drops only (OVS 3.1)."""
    bridge, client, server = ovs.unique("brst"), ovs.unique("stc"), ovs.unique("sts")
    server_sock = tmp_path / "server.sock"
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    ovs.vsctl("add-port", bridge, client, "--", "set", "Interface", client, "type=dpdkvhostuser")
    ovs.vsctl("add-port", bridge, server, "--", "set", "Interface", server, "type=dpdkvhostuserclient",
              f"options:vhost-server-path={server_sock}", wait=False)
    prefix = f"stats{os.getpid()}"
    tp = Interactive(["/usr/bin/stdbuf", "-oL", TESTPMD, "--lcores", "0@0,1@0", "--main-lcore", "0", "--no-pci", "--in-memory",
                      f"--file-prefix={prefix}", "-m", "128", "--single-file-segments",
                      f"--vdev=net_virtio_user0,path={ovs.rundir}/{client},mac=02:00:00:00:5a:01",
                      f"--vdev=net_virtio_user1,path={server_sock},mac=02:00:00:00:5a:02,server=1",
                      "--", "-i", "--total-num-mbufs=2048"], "stats-testpmd")
    try:
        tp.wait_for("testpmd> ", 60)
        stats = OvsStats(switch_config(ovs))
        deadline = time.monotonic() + 20
        while True:
            now = stats.read([client, server])
            if all(now.get(name, PortCounters(name)).link_state == "up" for name in (client, server)):
                break
            assert time.monotonic() < deadline, f"links not up: {now}"
            time.sleep(0.3)
        before = now
        tp.send("set fwd txonly")
        tp.wait_for("testpmd> ")
        tp.send("start")
        tp.wait_for("testpmd> ")
        time.sleep(0.5)
        tp.send("stop")
        tp.wait_for("Done.", 20)
        tp.wait_for("testpmd> ")
        sent = {client: port_tx(tp, 0), server: port_tx(tp, 1)}
        assert min(sent.values()) > 1000, sent
        deadline = time.monotonic() + 10
        while True:  # the PMD drains the ring a moment after testpmd stops
            after = stats.read([client, server, "no-such-port"])
            got = (after[server].rx_packets or 0) - (before[server].rx_packets or 0)
            if got == sent[server] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(after) == {client, server}, "a port not on the switch is left out"
        assert after[client].type == "dpdkvhostuser" and after[server].type == "dpdkvhostuserclient"
        # dpdkvhostuserclient: every frame counted, live, with its bytes; the same as OVS's OpenFlow port counters
        assert got == sent[server], f"switch rx {got} vs testpmd tx {sent[server]}"
        assert (after[server].rx_bytes or 0) - (before[server].rx_bytes or 0) == got * FRAME
        ofport = ovs.vsctl("get", "Interface", server, "ofport", wait=False).strip()
        dump = subprocess.run(["ovs-ofctl", "dump-ports", f"unix:{ovs.rundir}/{bridge}.mgmt", ofport],
                              capture_output=True, text=True, timeout=30, check=True).stdout
        rx_line = re.search(r"rx pkts=(\d+), bytes=(\d+)", dump)
        assert rx_line and int(rx_line.group(1)) == after[server].rx_packets, dump
        # the client port's frames were flooded to the server port: sent into it, or dropped at its full ring
        into_server = sum((getattr(after[server], k) or 0) - (getattr(before[server], k) or 0) for k in ("tx_packets", "tx_dropped"))
        assert into_server >= 0.99 * sent[client], (into_server, sent[client])
        # dpdkvhostuser: OVS 3.1 gives no packet counters for it (left None, never a made-up 0), only its own drops
        deadline = time.monotonic() + 12
        while True:  # these come from the Interface table, which OVS refreshes every 5 s
            c = stats.read([client])[client]
            if (c.tx_dropped or 0) - (before[client].tx_dropped or 0) >= 0.99 * sent[server] - 256 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if c.rx_packets is not None:  # a newer OVS that counts them must count them right
            assert 0.99 * sent[client] <= c.rx_packets - (before[client].rx_packets or 0) <= sent[client]
        assert c.tx_dropped is not None and c.tx_dropped - (before[client].tx_dropped or 0) >= 0.99 * sent[server] - 256
        tp.send("quit")
        tp.wait_for("Bye", 30)
    finally:
        tp.finish(timeout_s=30)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
        ovs.vsctl("--if-exists", "del-br", bridge)


def test_unreachable_switch_is_a_clear_switch_error(tmp_path: Path) -> None:
    """No ovsdb-server at the configured socket: SwitchError naming the tool, within the timeout."""
    cfg = SwitchConfig(backend="ovs", ovsdb=f"unix:{tmp_path}/db.sock", ovs_rundir=str(tmp_path), timeout_s=1.0)
    if not shutil.which("ovs-vsctl"):
        pytest.skip("ovs-vsctl is not installed")
    start = time.monotonic()
    with pytest.raises(SwitchError, match=r"switch ovs: ovs-vsctl"):
        OvsStats(cfg).interface_table()
    assert time.monotonic() - start < 10
    with pytest.raises(SwitchError, match=r"no ovs-vswitchd pidfile in"):
        OvsStats(cfg).live()
