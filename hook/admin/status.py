"""``dpdk-oci-hook status``: what is reserved per container, and each port's live switch counters.

:func:`gather` reads the ledger and (OVS backend) the switch; :func:`format_status` turns
plain values into text and is unit-tested as such.  ``--watch`` redraws once a second until
Ctrl-C.  The switch being unreachable is not fatal here: reservations are still shown, with
one line saying why the counters are missing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hook.config import Config
from hook.switch.stats import PortCounters

CLEAR_SCREEN = "\x1b[H\x1b[2J"
_TYPE_OF_MODE = {"client": "dpdkvhostuser", "server": "dpdkvhostuserclient"}


@dataclass
class Status:
    """One read of the ledger and the switch: rows are reservations as dicts, plus ``alive``."""

    config_path: str
    pool: str
    budget_mib: int
    backend: str
    rows: list[dict[str, Any]]
    counters: dict[str, PortCounters] = field(default_factory=dict)
    switch_error: str | None = None
    switch_read: bool = False  # the switch was asked (there were ports to ask about)

    def to_json(self) -> dict[str, Any]:
        entries = []
        for row in self.rows:
            entry = dict(row)
            entry["counters"] = {name: self.counters[name].to_dict() for name, *_ in port_list(row) if name in self.counters}
            entries.append(entry)
        return {"config": self.config_path, "entries": entries, "switch_error": self.switch_error}


def port_list(row: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(switch port name, bridge, expected interface type) of a reservation's ports, kernel ports too."""
    ports = [(str(p["name"]), str(p.get("bridge") or ""), _TYPE_OF_MODE.get(str(p.get("mode")), "")) for p in row.get("ports", [])
             if not p.get("static")]
    ports += [(str(k["host_name"]), str(k.get("bridge") or ""), "system") for k in row.get("kernel_ports", [])]
    return ports


def gather(config: Config) -> Status:
    """Reservations from the ledger, and counters of their ports when the backend is OVS."""
    from hook.errors import SwitchError
    from hook.host.ledger import Ledger
    from hook.host.proc import process_alive
    from hook.units import format_cpulist

    rows = []
    for _key, res in sorted(Ledger(config.ledger_path).snapshot().items(), key=lambda kv: (kv[1].container_id, kv[0])):
        row = res.to_dict()
        row["alive"] = process_alive(res.pid, res.pid_start)
        rows.append(row)
    status = Status(config.path, format_cpulist(config.cpu_pool), config.hugepage_budget_kib // 1024, config.switch.backend, rows)
    names = [name for row in rows for name, *_ in port_list(row)]
    if config.switch.backend == "ovs" and names:
        from hook.switch.stats import OvsStats

        status.switch_read = True
        try:
            status.counters = OvsStats(config.switch).read(names)
        except SwitchError as exc:
            status.switch_error = str(exc)
    return status


def human(value: int | None, unit: str = "") -> str:
    """A counter in 4 significant characters: 999, 1.2k, 34.5M; '?' when the switch gives none."""
    if value is None:
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}{unit}"
    return f"{value}{unit}"


def format_port(name: str, bridge: str, expected_type: str, counters: PortCounters | None) -> str:
    """One port line: link state and the switch's rx/tx packets, bytes and drops."""
    if counters is None:
        return f"      {name:16} {bridge:10} {expected_type:20} not on the switch"
    c = counters
    link = c.link_state or "?"
    return (f"      {name:16} {bridge:10} {c.type or 'system':20} link {link:5} "
            f"rx {human(c.rx_packets)} pkts {human(c.rx_bytes, 'B')} drop {human(c.rx_dropped)}  "
            f"tx {human(c.tx_packets)} pkts {human(c.tx_bytes, 'B')} drop {human(c.tx_dropped)}")


def format_status(status: Status) -> str:
    """The text of ``status``: a summary line, one line per container, one per port."""
    from hook.units import format_cpulist

    lines = [f"{len(status.rows)} container(s) hold reservations (pool {status.pool}, hugepage budget {status.budget_mib} MiB)"]
    for row in status.rows:
        ports = ", ".join(f"{p['name']}({p['mode']})" for p in row["ports"]) or "-"
        lines.append(
            f"  {row['container_id'][:24]:24} {row['state']:9} cpus={format_cpulist(row['cpus']) or '-':8} "
            f"hugepages={row['hugepages_mib']}Mi node={row['numa_node']} ports={ports}"
            + ("".join(f" link={link['name']}({link['role']}, {link['mode']})" for link in row.get("links", [])))
            + ("" if row["alive"] else "  [container gone: run gc]")
        )
        if status.backend == "ovs" and status.switch_error is None:
            lines.extend(format_port(name, bridge, kind, status.counters.get(name)) for name, bridge, kind in port_list(row))
    if status.switch_error:
        lines.append(f"switch counters unavailable: {status.switch_error}")
    elif status.backend == "ovs" and any(port_list(row) for row in status.rows):
        lines.append("counters as the switch counts them: rx = received from the container, tx = sent to it; "
                     "? = the switch keeps none (dpdkvhostuser ports: drops only)")
    return "\n".join(lines)


def watch(read: Callable[[], str], out: Any = None, interval_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
          rounds: int | None = None) -> int:
    """Redraw ``read()`` every ``interval_s`` until Ctrl-C (or ``rounds`` draws); exit status 0."""
    out = out or sys.stdout
    drawn = 0
    try:
        while rounds is None or drawn < rounds:
            text = read()
            out.write(f"{CLEAR_SCREEN}{text}\n\n(every {interval_s:g} s, {time.strftime('%H:%M:%S')}; Ctrl-C to stop)\n")
            out.flush()
            drawn += 1
            if rounds is None or drawn < rounds:
                sleep(interval_s)
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
    return 0


def cmd_status(args: Any) -> int:
    """The ``status`` subcommand: once (text or ``--json``), or ``--watch``."""
    from hook import config as config_mod

    config = config_mod.load(args.config)
    if getattr(args, "watch", False):
        return watch(lambda: format_status(gather(config)))
    status = gather(config)
    text = json.dumps(status.to_json(), indent=2, default=str) if args.json else format_status(status)
    sys.stdout.write(text + "\n")
    return 0

