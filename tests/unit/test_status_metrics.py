"""status and metrics: switch counters parsed, merged and formatted from plain values."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from hook.admin import demo
from hook.admin.cli import build_parser
from hook.admin.metrics import escape_label, format_metrics, write_atomically
from hook.admin.status import CLEAR_SCREEN, Status, format_status, human, port_list, watch
from hook.switch.stats import PortCounters, merge, parse_dpctl_show, parse_interface_table

# OVS 3.1: a dpdkvhostuser interface has only drop counters in its statistics column
INTERFACE_TABLE = json.dumps({
    "headings": ["name", "type", "link_state", "statistics"],
    "data": [
        ["dpk1n0", "dpdkvhostuser", "up",
         ["map", [["ovs_rx_qos_drops", 0], ["ovs_tx_failure_drops", 5], ["ovs_tx_mtu_exceeded_drops", 2], ["ovs_tx_qos_drops", 0]]]],
        ["dpk2n0", "dpdkvhostuserclient", "down",
         ["map", [["rx_bytes", 600], ["rx_packets", 10], ["rx_dropped", 0], ["tx_bytes", 0], ["tx_packets", 0], ["tx_dropped", 0]]]],
        ["dpv3k0", "", ["set", []], ["map", []]],
        ["br-dpdk", "internal", "up", ["map", [["rx_packets", 1]]]],
    ],
})

DPCTL_SHOW = """netdev@ovs-netdev:
  lookups: hit:100 missed:3 lost:0
  flows: 2
  port 0: ovs-netdev (tap)
    RX packets:0 errors:0 dropped:0 overruns:0 frame:0
    TX packets:0 errors:0 dropped:0 aborted:0 carrier:0
    collisions:0
    RX bytes:0  TX bytes:0
  port 1: dpk1n0 (dpdkvhostuser: configured_rx_queues=1, configured_tx_queues=1, mtu=1500, requested_rx_queues=1, requested_tx_queues=1)
, could not retrieve stats (Protocol error)  port 2: dpk2n0 (dpdkvhostuserclient: configured_rx_queues=1, configured_tx_queues=1)
    RX packets:12 errors:0 dropped:0 overruns:? frame:?
    TX packets:? errors:? dropped:? aborted:? carrier:?
    collisions:?
    RX bytes:720  TX bytes:?
  port 3: dpk4n0 (dpdkvhostuserclient: configured_rx_queues=1, configured_tx_queues=1)
    RX packets:5000 errors:0 dropped:0 overruns:? frame:?
    TX packets:4990 errors:? dropped:7 aborted:? carrier:?
    collisions:?
    RX bytes:300000 (293.0 KiB)  TX bytes:299400 (292.4 KiB)
"""


def row(container_id: str = "ctr1", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "container_id": container_id, "state": "active", "cpus": [0], "hugepages_mib": 64, "numa_node": 0, "alive": True,
        "ports": [{"name": "dpk1n0", "mode": "client", "bridge": "br-dpdk"}],
        "kernel_ports": [],
    }
    base.update(over)
    return base


def status(rows: list[dict[str, Any]], counters: dict[str, PortCounters] | None = None, error: str | None = None) -> Status:
    read = any(port_list(r) for r in rows)
    return Status("/etc/dpdk-oci-hook/config.hcl", "0", 1024, "ovs", rows, counters or {}, error, switch_read=read)


def test_interface_table_parses_link_state_type_and_partial_statistics() -> None:
    """Types and link states come through; dpdkvhostuser's drops are OVS's own; unknown link is None."""
    table = parse_interface_table(INTERFACE_TABLE)
    assert table["dpk1n0"] == PortCounters("dpk1n0", "dpdkvhostuser", "up", rx_dropped=0, tx_dropped=7)
    assert table["dpk2n0"].rx_packets == 10 and table["dpk2n0"].link_state == "down"
    assert table["dpv3k0"].link_state is None and table["dpv3k0"].type == ""


def test_dpctl_show_gives_live_counters_where_ovs_has_them() -> None:
    """Each datapath port's own counters; '?' is left out, not read as 0; a port whose stats fail gets none."""
    live = parse_dpctl_show(DPCTL_SHOW)
    assert live["dpk1n0"] == {}  # OVS 3.1: dpdkvhostuser stats fail, and the next port follows on the same line
    assert live["dpk4n0"] == {"rx_packets": 5000, "rx_dropped": 0, "tx_packets": 4990, "tx_dropped": 7,
                              "rx_bytes": 300000, "tx_bytes": 299400}
    assert live["dpk2n0"] == {"rx_packets": 12, "rx_dropped": 0, "rx_bytes": 720}
    assert live["ovs-netdev"]["rx_packets"] == 0


def test_merge_prefers_live_counters_and_keeps_table_fallbacks() -> None:
    """Live counters win; a counter only the table has is kept; ports not on the switch are left out."""
    merged = merge(parse_interface_table(INTERFACE_TABLE), parse_dpctl_show(DPCTL_SHOW), ["dpk1n0", "dpk2n0", "gone"])
    assert set(merged) == {"dpk1n0", "dpk2n0"}
    assert merged["dpk1n0"] == PortCounters("dpk1n0", "dpdkvhostuser", "up", rx_dropped=0, tx_dropped=7)
    assert merged["dpk2n0"].tx_packets == 0 and merged["dpk2n0"].tx_bytes == 0  # '?' live, 0 in the table
    assert merged["dpk2n0"].rx_packets == 12


@pytest.mark.parametrize(("value", "unit", "text"), [(None, "", "?"), (0, "", "0"), (999, "", "999"), (1234, "B", "1.2kB"),
                                                     (34_500_000, "", "34.5M"), (2_000_000_000, "B", "2.0GB")])
def test_human(value: int | None, unit: str, text: str) -> None:
    assert human(value, unit) == text


def test_status_text_shows_each_port_with_link_and_counters() -> None:
    """A container line, then a port line with link state, rx/tx packets, bytes, drops; a legend line."""
    counters = {"dpk1n0": PortCounters("dpk1n0", "dpdkvhostuser", "up", 5000, 300000, 0, 4990, 299400, 7)}
    text = format_status(status([row()], counters))
    lines = text.splitlines()
    assert lines[0] == "1 container(s) hold reservations (pool 0, hugepage budget 1024 MiB)"
    assert "ctr1" in lines[1] and "ports=dpk1n0(client)" in lines[1]
    assert re.search(r"dpk1n0 +br-dpdk +dpdkvhostuser +link up +rx 5.0k pkts 300.0kB drop 0  tx 5.0k pkts 299.4kB drop 7$", lines[2])
    assert lines[-1].startswith("counters as the switch counts them")


def test_status_text_without_the_switch_still_shows_reservations() -> None:
    """The switch unreachable: reservations shown, one line saying why there are no counters."""
    text = format_status(status([row(alive=False)], error="switch ovs: ovs-vsctl list: database connection failed"))
    assert "[container gone: run gc]" in text
    assert text.splitlines()[-1] == "switch counters unavailable: switch ovs: ovs-vsctl list: database connection failed"
    assert "link" not in text


def test_status_text_marks_ports_missing_from_the_switch_and_kernel_ports() -> None:
    kernel = [{"host_name": "dpv9k0", "bridge": "br-dpdk"}]
    text = format_status(status([row(kernel_ports=kernel)], {"dpv9k0": PortCounters("dpv9k0", "", "up", 1, 60, 0, 2, 120, 0)}))
    assert re.search(r"dpk1n0 +br-dpdk +dpdkvhostuser +not on the switch", text)
    assert re.search(r"dpv9k0 +br-dpdk +system +link up", text)


def test_status_json_carries_counters_per_entry() -> None:
    counters = {"dpk1n0": PortCounters("dpk1n0", "dpdkvhostuser", "up", 1, 2, 3, 4, 5, 6)}
    doc = status([row()], counters).to_json()
    assert doc["entries"][0]["counters"]["dpk1n0"]["tx_dropped"] == 6 and doc["switch_error"] is None


def test_port_list_skips_static_leases() -> None:
    r = row(ports=[{"name": "s0", "mode": "client", "bridge": "", "static": True}, {"name": "p1", "mode": "server", "bridge": "b"}])
    assert port_list(r) == [("p1", "b", "dpdkvhostuserclient")]


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+|NaN)$')


def check_exposition(text: str) -> dict[str, list[str]]:
    """Validate the text format strictly enough for node_exporter; samples by metric name."""
    assert text.endswith("\n")
    help_seen: set[str] = set()
    types: dict[str, str] = {}
    samples: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in help_seen, f"second HELP for {name}"
            help_seen.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in help_seen and name not in types and kind in ("gauge", "counter")
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            assert name in types, f"sample before TYPE: {line!r}"
            if types[name] == "counter":
                assert name.endswith("_total")
            samples.setdefault(name, []).append(line)
    for lines in samples.values():
        assert len(set(lines)) == len(lines)
        assert len({line.rsplit(" ", 1)[0] for line in lines}) == len(lines), "duplicate series"
    return samples


def test_metrics_exposition_has_help_type_and_labelled_port_counters() -> None:
    counters = {"dpk1n0": PortCounters("dpk1n0", "dpdkvhostuser", "up", 5000, 300000, 0, 4990, 299400, 7)}
    samples = check_exposition(format_metrics(status([row()], counters)))
    labels = 'container_id="ctr1",port="dpk1n0",bridge="br-dpdk",type="dpdkvhostuser"'
    assert samples["dpdk_oci_hook_port_rx_packets_total"] == [f"dpdk_oci_hook_port_rx_packets_total{{{labels}}} 5000"]
    assert samples["dpdk_oci_hook_port_tx_dropped_total"] == [f"dpdk_oci_hook_port_tx_dropped_total{{{labels}}} 7"]
    assert samples["dpdk_oci_hook_port_link_up"] == [f"dpdk_oci_hook_port_link_up{{{labels}}} 1"]
    assert samples["dpdk_oci_hook_reserved_cpus"] == ['dpdk_oci_hook_reserved_cpus{container_id="ctr1"} 1']
    assert samples["dpdk_oci_hook_reserved_hugepages_bytes"] == ['dpdk_oci_hook_reserved_hugepages_bytes{container_id="ctr1"} 67108864']
    assert samples["dpdk_oci_hook_switch_counters_up"] == ["dpdk_oci_hook_switch_counters_up 1"]
    assert samples["dpdk_oci_hook_reservations"] == ["dpdk_oci_hook_reservations 1"]


def test_metrics_leave_out_counters_the_switch_does_not_give() -> None:
    """A None counter is absent, not 0; a down link is 0; an unreachable switch is switch_counters_up 0."""
    counters = {"dpk1n0": PortCounters("dpk1n0", "dpdkvhostuser", "down", rx_dropped=0, tx_dropped=3)}
    samples = check_exposition(format_metrics(status([row()], counters)))
    assert "dpdk_oci_hook_port_rx_packets_total" not in samples
    assert samples["dpdk_oci_hook_port_link_up"][0].endswith(" 0")
    samples = check_exposition(format_metrics(status([row()], error="switch ovs: down")))
    assert samples["dpdk_oci_hook_switch_counters_up"] == ["dpdk_oci_hook_switch_counters_up 0"]
    assert not any(name.startswith("dpdk_oci_hook_port_") for name in samples)


def test_metrics_sum_two_instances_of_one_container_id_into_one_series() -> None:
    """Two ledger entries with the same id (two runtime roots) do not make duplicate series."""
    rows = [row("same", ports=[]), row("same", cpus=[1, 2], alive=False, ports=[])]
    samples = check_exposition(format_metrics(status(rows)))
    assert samples["dpdk_oci_hook_reserved_cpus"] == ['dpdk_oci_hook_reserved_cpus{container_id="same"} 3']
    assert samples["dpdk_oci_hook_container_alive"] == ['dpdk_oci_hook_container_alive{container_id="same"} 1']


def test_metrics_escape_hostile_label_values() -> None:
    """A container id is the engine's: quotes, backslashes and newlines cannot break the format."""
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    check_exposition(format_metrics(status([row('x"}\n# HELP evil', ports=[])])))


def test_metrics_with_nothing_reserved() -> None:
    samples = check_exposition(format_metrics(status([])))
    assert samples["dpdk_oci_hook_reservations"] == ["dpdk_oci_hook_reservations 0"]
    assert "dpdk_oci_hook_switch_counters_up" not in samples  # nothing to ask the switch about


def test_write_atomically_replaces_the_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "dpdk_oci_hook.prom"
    target.write_text("old\n")
    write_atomically(str(target), "new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["dpdk_oci_hook.prom"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_watch_redraws_until_ctrl_c_and_exits_0() -> None:
    """Each draw clears the screen; Ctrl-C during the sleep ends it cleanly with status 0."""
    out = io.StringIO()
    reads = iter(["first", "second"])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    assert watch(lambda: next(reads), out=out, sleep=sleep) == 0
    text = out.getvalue()
    assert text.count(CLEAR_SCREEN) == 2 and text.index("first") < text.index("second")
    assert sleeps == [1.0, 1.0] and text.endswith("\n")


def test_cli_status_watch_and_metrics_options() -> None:
    parser = build_parser()
    assert parser.parse_args(["status", "--watch"]).watch
    assert parser.parse_args(["metrics", "--output", "/x.prom"]).output == "/x.prom"
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "--watch", "--json"])


def test_demo_passes_only_when_90_percent_arrived() -> None:
    """The demo's verdict: the exchange and the OVS path must deliver 90%; the kernel's ping is for comparison."""
    ok = demo.DemoResult(4480, 4480, [demo.PathResult("ovs", 2e6, 20.0, 1000, 1000),
                                      demo.PathResult("kernel", 1e5, 50.0, 100, 10, checked=False)])
    assert ok.ok and ok.delivered == 1.0
    assert not demo.DemoResult(4480, 256).ok
    assert not demo.DemoResult(4480, 4480, [demo.PathResult("ovs", 2e6, 20.0, 1000, 899)]).ok
    assert not demo.DemoResult(0, 0).ok


def test_demo_summary_table() -> None:
    lines = demo.summary_table([demo.PathResult("OVS-DPDK", 2_345_000, 12.34), demo.PathResult("kernel", 123_400, None, note="n")])
    assert "2.35 Mpps" in lines[1] and "12.3 µs" in lines[1]
    assert "123 kpps" in lines[2] and lines[2].endswith("-  (n)")
