"""Live port counters from OVS: link state and rx/tx packets, bytes and drops per interface.

Read-only: two subprocess calls per read, each with a timeout; any failure is one clear
:class:`~hook.errors.SwitchError`.  The counters are the switch's view: ``rx`` is what OVS
received from the port (what the container sent), ``tx`` what OVS sent into it.

Where the counters are, by interface type (measured on OVS 3.1, userspace datapath):

* ``dpdkvhostuserclient`` (the container's server mode) and kernel ports: everywhere.
  ``ovs-appctl dpctl/show -s`` gives them live (``netdev_get_stats``); the Interface
  table's ``statistics`` column has them too but is refreshed only every 5 s; ``ovs-ofctl
  dump-ports`` has them.  dpctl is the source used for packets and bytes.
* ``dpdkvhostuser`` (the container's client mode): no packet or byte counters anywhere.
  ``dpctl/show -s`` says "could not retrieve stats (Protocol error)", ``dump-ports`` shows
  ``?``, and ``statistics`` holds only OVS's own drop counters (``ovs_tx_failure_drops``:
  frames for the container that did not fit its ring, ``ovs_tx_*``/``ovs_rx_qos_drops``),
  which are used as its tx/rx drops.  Its packets and bytes stay None ("?" in ``status``;
  left out of ``metrics``).  ``dpif-netdev/pmd-stats-show`` counts per PMD, not per port.
* The Interface table gives ``link_state`` and the type for every port.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hook.config import SwitchConfig
from hook.errors import SwitchError

COUNTERS = ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_dropped")
_OVS_TX_DROPS = ("ovs_tx_failure_drops", "ovs_tx_mtu_exceeded_drops", "ovs_tx_qos_drops", "ovs_tx_invalid_hwol_drops")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
_PORT_LINE = re.compile(r"^\s*port (\d+): (\S+)(?: \(([^:)]*)[^)]*\))?\s*$")
_NEXT_PORT = re.compile(r"(?<=\S)\s+(?=port \d+: )")
_FIELD = re.compile(r"^(packets|bytes|dropped):(\d+|\?)$")


@dataclass(frozen=True)
class PortCounters:
    """One interface as the switch sees it; a counter is None where the switch gives none."""

    name: str
    type: str = ""
    link_state: str | None = None  # "up", "down", or None (the switch did not say)
    rx_packets: int | None = None
    rx_bytes: int | None = None
    rx_dropped: int | None = None
    tx_packets: int | None = None
    tx_bytes: int | None = None
    tx_dropped: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_interface_table(text: str) -> dict[str, PortCounters]:
    """``ovs-vsctl --format=json --columns=name,type,link_state,statistics list Interface``."""
    doc = json.loads(text)
    found: dict[str, PortCounters] = {}
    for raw in doc.get("data", []):
        row = dict(zip(doc["headings"], raw, strict=True))
        stats = _cell_map(row.get("statistics"))
        # dpdkvhostuser on OVS 3.1 has only OVS's own drop counters: they are its drops
        if "rx_dropped" not in stats and "ovs_rx_qos_drops" in stats:
            stats["rx_dropped"] = stats["ovs_rx_qos_drops"]
        if "tx_dropped" not in stats and any(key in stats for key in _OVS_TX_DROPS):
            stats["tx_dropped"] = sum(int(stats.get(key, 0)) for key in _OVS_TX_DROPS)
        link = row.get("link_state")
        found[str(row["name"])] = PortCounters(
            name=str(row["name"]),
            type=str(row.get("type") or ""),
            link_state=link if isinstance(link, str) else None,  # an empty set when unknown
            **{key: int(stats[key]) for key in COUNTERS if key in stats},
        )
    return found


def parse_dpctl_show(text: str) -> dict[str, dict[str, int]]:
    """``ovs-appctl dpctl/show -s``: port name -> the counters it gives (``?`` left out)."""
    found: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    # a port whose stats fail ends in ", could not retrieve stats (Protocol error)" with no
    # newline: the next "port N:" is on the same line
    text = _NEXT_PORT.sub("\n  ", text)
    for line in text.splitlines():
        port = _PORT_LINE.match(line)
        if port:
            current = found.setdefault(port.group(2), {})
            continue
        if current is None:
            continue
        direction = ""  # "RX packets:5 errors:0 dropped:0 ..." and "RX bytes:60 (60 B)  TX bytes:0"
        for token in line.split():
            if token in ("RX", "TX"):
                direction = token.lower()
                continue
            field = _FIELD.match(token)
            if direction and field and field.group(2) != "?":
                current[f"{direction}_{field.group(1)}"] = int(field.group(2))
    return found


def merge(table: dict[str, PortCounters], live: dict[str, dict[str, int]], names: Iterable[str]) -> dict[str, PortCounters]:
    """Per name: type and link state from the table, counters live where given, else the table's."""
    out: dict[str, PortCounters] = {}
    for name in names:
        row = table.get(name)
        if row is None:
            continue  # not on the switch (any more)
        values = {key: getattr(row, key) for key in COUNTERS}
        values.update({key: value for key, value in live.get(name, {}).items() if key in COUNTERS})
        out[name] = PortCounters(name=name, type=row.type, link_state=row.link_state, **values)
    return out


def _cell_map(cell: Any) -> dict[str, Any]:
    if isinstance(cell, list) and len(cell) == 2 and cell[0] == "map":
        return {str(k): v for k, v in cell[1]}
    return {}


class OvsStats:
    """Reads counters of named interfaces from the OVS the config points at."""

    def __init__(self, config: SwitchConfig) -> None:
        self.config = config
        tools = os.path.dirname(config.ovs_vsctl) or "/usr/bin"
        self.ovs_appctl = os.path.join(tools, "ovs-appctl")
        self._timeout = max(1.0, float(config.timeout_s))

    def _run(self, argv: Sequence[str], env: dict[str, str] | None = None) -> str:
        try:
            proc = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, capture_output=True, encoding="utf-8", errors="replace",
                env=env or _ENV, cwd="/", close_fds=True, timeout=self._timeout + 2, check=False,
            )
        except subprocess.TimeoutExpired:
            raise SwitchError(backend="ovs", reason=f"{os.path.basename(argv[0])} did not answer within {self._timeout + 2:g} s") from None
        except OSError as exc:
            raise SwitchError(backend="ovs", reason=f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise SwitchError(backend="ovs", reason=f"{os.path.basename(argv[0])} {argv[-1]}: {detail[0]}")
        return proc.stdout

    def interface_table(self) -> dict[str, PortCounters]:
        argv = [self.config.ovs_vsctl, f"--timeout={max(1, int(self._timeout))}"]
        if self.config.ovsdb:
            argv.append(f"--db={self.config.ovsdb}")
        argv += ["--format=json", "--columns=name,type,link_state,statistics", "list", "Interface"]
        text = self._run(argv)
        try:
            return parse_interface_table(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise SwitchError(backend="ovs", reason=f"ovs-vsctl gave an Interface table that does not parse: {exc}") from None

    def appctl_target(self) -> str:
        """ovs-vswitchd's control socket in the configured run directory."""
        rundir = self.config.ovs_rundir
        fixed = os.path.join(rundir, "ovs-vswitchd.ctl")  # --unixctl given explicitly
        if os.path.exists(fixed):
            return fixed
        try:
            with open(os.path.join(rundir, "ovs-vswitchd.pid"), encoding="ascii") as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            raise SwitchError(backend="ovs", reason=f"no ovs-vswitchd pidfile in {rundir} (is ovs-vswitchd running?)") from None
        return os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")

    def live(self) -> dict[str, dict[str, int]]:
        return parse_dpctl_show(self._run([self.ovs_appctl, f"--timeout={max(1, int(self._timeout))}", "-t", self.appctl_target(), "dpctl/show", "-s"]))

    def read(self, names: Iterable[str]) -> dict[str, PortCounters]:
        """Counters of the named interfaces that exist on the switch (others are left out)."""
        return merge(self.interface_table(), self.live(), list(names))
