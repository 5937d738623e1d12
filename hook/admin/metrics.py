"""``dpdk-oci-hook metrics``: reservations and port counters in Prometheus text exposition format.

The same read as ``status`` (:func:`hook.admin.status.gather`), printed for a scraper:
node_exporter's textfile collector picks up a ``*.prom`` file, which ``--output`` writes
atomically (temporary file + rename, so the collector never reads half a file).
:func:`format_metrics` works on plain values and is unit-tested as such.

Port counters are the switch's: ``rx`` is what it received from the container's port,
``tx`` what it sent into it.  A counter the switch does not give is left out, not 0.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

from hook.admin.status import Status, port_list

PREFIX = "dpdk_oci_hook_"
_PORT_COUNTERS = (
    ("rx_packets", "packets the switch received from the container's port"),
    ("rx_bytes", "bytes the switch received from the container's port"),
    ("rx_dropped", "packets from the container's port the switch dropped"),
    ("tx_packets", "packets the switch sent into the container's port"),
    ("tx_bytes", "bytes the switch sent into the container's port"),
    ("tx_dropped", "packets for the container's port the switch dropped (e.g. its ring was full)"),
)


def escape_label(value: str) -> str:
    """A label value as the text format needs it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**pairs: str) -> str:
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in pairs.items()) + "}"


def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float | int]]) -> list[str]:
    """One metric family: HELP and TYPE lines, then its samples (label set, value)."""
    lines = [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
    lines += [f"{PREFIX}{name}{label_text} {value}" for label_text, value in samples]
    return lines


def format_metrics(status: Status) -> str:
    """Everything ``status`` shows, in the text exposition format (ends with a newline)."""
    per_container: dict[str, dict[str, int]] = {}
    for row in status.rows:
        acc = per_container.setdefault(str(row["container_id"]), {"cpus": 0, "hugepages": 0, "alive": 0, "entries": 0})
        acc["cpus"] += len(row["cpus"])
        acc["hugepages"] += int(row["hugepages_mib"]) * 1024 * 1024
        acc["alive"] = max(acc["alive"], 1 if row["alive"] else 0)
        acc["entries"] += 1
    ids = sorted(per_container)
    out: list[str] = []
    out += family("reservations", "gauge", "containers holding reservations in the ledger", [("", len(status.rows))])
    out += family("reserved_cpus", "gauge", "exclusive cores reserved for the container",
                  [(labels(container_id=cid), per_container[cid]["cpus"]) for cid in ids])
    out += family("reserved_hugepages_bytes", "gauge", "hugepage memory reserved for the container",
                  [(labels(container_id=cid), per_container[cid]["hugepages"]) for cid in ids])
    out += family("container_alive", "gauge", "1 while the container's process runs (0: run gc)",
                  [(labels(container_id=cid), per_container[cid]["alive"]) for cid in ids])
    ports: list[tuple[str, Any]] = []  # (label text, PortCounters or None)
    for row in status.rows:
        for name, bridge, expected_type in port_list(row):
            counters = status.counters.get(name)
            kind = (counters.type or "system") if counters else expected_type
            ports.append((labels(container_id=str(row["container_id"]), port=name, bridge=bridge, type=kind), counters))
    if status.switch_read:
        out += family("switch_counters_up", "gauge", "1 when the switch answered the read of port counters",
                      [("", 0 if status.switch_error else 1)])
    out += family("port_link_up", "gauge", "1 when the switch reports the port's link up, 0 when down",
                  [(text, 1 if c.link_state == "up" else 0) for text, c in ports if c is not None and c.link_state])
    for key, help_text in _PORT_COUNTERS:
        out += family(f"port_{key}_total", "counter", help_text,
                      [(text, getattr(c, key)) for text, c in ports if c is not None and getattr(c, key) is not None])
    return "\n".join(out) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".dpdk-oci-hook-metrics-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cmd_metrics(args: Any) -> int:
    """The ``metrics`` subcommand: to stdout, or atomically to ``--output FILE``."""
    from hook import config as config_mod
    from hook.admin.status import gather

    text = format_metrics(gather(config_mod.load(args.config)))
    if getattr(args, "output", None):
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
