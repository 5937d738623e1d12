"""``gc`` and ``gc --rebuild``: free what belongs to containers that no longer exist."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from hook.config import Config
from hook.decide.names import container_key
from hook.errors import HookError
from hook.host.ledger import Ledger
from hook.host.proc import process_alive
from hook.model import STATE_ACTIVE, Reservation
from hook.stage.eventlog import Log
from hook.stage.lifecycle import release
from hook.switch.factory import make_switch


@dataclass
class GcReport:
    """What a gc pass freed."""

    released: list[str] = field(default_factory=list)
    orphan_ports: dict[str, list[str]] = field(default_factory=dict)
    orphan_dirs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def gc(config: Config, log: Log, live: Callable[[Reservation], bool] | None = None) -> GcReport:
    """Free what belongs to containers that no longer exist, from every side."""
    alive = live or (lambda res: process_alive(res.pid, res.pid_start))
    report = GcReport()
    ledger = Ledger(config.ledger_path)
    entries = ledger.snapshot()
    for cid, res in entries.items():
        if not alive(res):
            try:
                release(cid, config, log)
                report.released.append(cid)
            except HookError as exc:
                report.errors.append(f"{cid}: {exc}")
    known = set(ledger.snapshot())
    try:
        switch = make_switch(config.switch)
        for cid, names in switch.owned_ports().items():
            if cid not in known:
                switch.remove_port_names(names)
                report.orphan_ports[cid] = names
    except HookError as exc:
        report.errors.append(str(exc))
    try:
        from hook.host import veth

        stray = [name for name, owner in veth.existing_owners().items() if owner not in known]
        if stray:
            veth.remove(stray)
            report.orphan_ports.setdefault("(kernel links)", []).extend(stray)
    except HookError as exc:
        report.errors.append(str(exc))
    known_keys = {container_key(cid)[:16] for cid in known}
    try:
        names = os.listdir(config.socket_root)
    except FileNotFoundError:
        names = []
    for name in sorted(names):
        key = name.split(".", 1)[0]
        if key not in known_keys:
            path = os.path.join(config.socket_root, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            report.orphan_dirs.append(path)
    log.info("gc done", released=report.released, orphan_ports=report.orphan_ports, orphan_dirs=report.orphan_dirs, errors=report.errors)
    return report


def rebuild(config: Config, log: Log) -> tuple[dict[str, Reservation], str | None]:
    """Rebuild a corrupt ledger from the owner records of containers that still run."""
    entries: dict[str, Reservation] = {}
    try:
        names = os.listdir(config.socket_root)
    except FileNotFoundError:
        names = []
    for name in sorted(names):
        if not name.endswith(".owner"):
            continue
        try:
            with open(os.path.join(config.socket_root, name), encoding="utf-8") as fh:
                res = Reservation.from_dict(json.load(fh))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable owner record", file=name, error=str(exc))
            continue
        if process_alive(res.pid, res.pid_start):
            res.state = STATE_ACTIVE
            entries[res.container_id] = res
    aside = Ledger(config.ledger_path).reset(entries)
    log.info("ledger rebuilt", kept=sorted(entries), old=aside)
    return entries, aside
