"""``gc`` and ``gc --rebuild``: free what belongs to container instances that are gone.

Correct while containers start and stop beside it:

* an entry is released only when its process is provably gone (pid and start time), and
  the release itself re-reads the entry under the lock;
* tagged resources (switch ports, veths, owner records) are listed first and the ledger is
  read after: a start records its entry before it creates anything, and keys are random and
  never reused, so a resource whose key the ledger does not hold at that later moment can
  belong to no running or starting instance;
* ``--rebuild`` holds the lock from reading the owner records to writing the new ledger.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field

from hook.config import Config
from hook.errors import HookError
from hook.host import owner_records, run_dirs
from hook.host.ledger import Ledger
from hook.host.proc import process_alive
from hook.model import STATE_ACTIVE, Reservation
from hook.stage.eventlog import Log
from hook.stage.lifecycle import alive, release_key
from hook.switch.factory import make_switch


@dataclass
class GcReport:
    """What a gc pass freed."""

    released: list[dict[str, str]] = field(default_factory=list)  # {"container_id", "key"} of each instance freed
    orphan_ports: dict[str, list[str]] = field(default_factory=dict)
    orphan_records: list[str] = field(default_factory=list)
    orphan_links: list[str] = field(default_factory=list)  # ids of link directories no entry held
    errors: list[str] = field(default_factory=list)
    rules_restored: int = 0  # ports whose anti-spoofing rules were (re)installed

    @property
    def freed_anything(self) -> bool:
        return bool(self.released or self.orphan_ports or self.orphan_records or self.orphan_links)


def gc(config: Config, log: Log) -> GcReport:
    """Free what belongs to instances that no longer exist, from every side."""
    report = GcReport()
    ledger = Ledger(config.ledger_path)
    with ledger.locked() as data:
        dead = [(key, res.container_id) for key, res in data.entries.items() if not alive(res)]
    for key, cid in dead:
        try:
            if release_key(key, config, log):
                report.released.append({"container_id": cid, "key": key})
        except HookError as exc:
            report.errors.append(f"{cid} ({key}): {exc}")

    # Resources first, the ledger after (see the module's docstring).
    switch_owned: dict[str, list[str]] = {}
    try:
        switch_owned = make_switch(config.switch).owned_ports()
    except HookError as exc:
        report.errors.append(str(exc))
    veth_owned: dict[str, str] = {}
    try:
        from hook.host import veth

        veth_owned = veth.existing_owners()
    except HookError as exc:
        report.errors.append(str(exc))
    record_keys = owner_records.keys(config.state_dir)
    run_keys = run_dirs.keys(config.state_dir)
    known = set(ledger.snapshot())

    for key, names in switch_owned.items():
        if key not in known:
            try:
                make_switch(config.switch).remove_port_names(names)
                report.orphan_ports[key] = names
            except HookError as exc:
                report.errors.append(str(exc))
    stray = [name for name, owner in veth_owned.items() if _veth_key(owner, config.switch.scope) not in (known | {None})]
    if stray:
        try:
            from hook.host import veth

            veth.remove(stray)
            report.orphan_ports.setdefault("(kernel links)", []).extend(stray)
        except HookError as exc:
            report.errors.append(str(exc))
    for key in run_keys:
        if key not in known:
            try:
                run_dirs.remove(config.state_dir, key)
                report.orphan_records.append(f"run/{key}")
            except HookError as exc:
                report.errors.append(str(exc))
    for key in record_keys:
        if key not in known:
            owner_records.remove_any(config.state_dir, key)
            report.orphan_records.append(key)
    # Link directories: judged under the lock, which every start and release takes to mount
    # or remove one, so a directory no entry holds at that moment belongs to no instance.
    from hook.host import link_dirs

    with ledger.locked() as data:
        removed, failures = link_dirs.remove_unheld(config.state_dir, link_dirs.held_ids(data.entries.values()))
    report.orphan_links += removed
    report.errors += failures
    if config.switch.anti_spoofing and (switch_owned or known):
        # ovs-vswitchd forgets OpenFlow rules when it restarts; the periodic gc puts them back.
        try:
            report.rules_restored = len(make_switch(config.switch).restore_rules())
        except HookError as exc:
            report.errors.append(str(exc))
    log.info("gc done", released=report.released, orphan_ports=report.orphan_ports, orphan_records=report.orphan_records,
             orphan_links=report.orphan_links, rules_restored=report.rules_restored, errors=report.errors)
    return report


def _veth_key(owner: str, scope: str) -> str | None:
    """The instance key in a veth's owner tag if the tag is this installation's, else None.

    Tags are ``<scope>/<key>``; an untagged link is ours to judge (it has our name prefix),
    a tag of another scope is never ours, and a tag of an earlier release (a bare container
    id) maps to the key that release's ledger entries were given.
    """
    if "/" in owner:
        tag_scope, _, key = owner.partition("/")
        return key if tag_scope == scope else None
    if not owner:
        return ""
    from hook.decide.names import legacy_key

    return legacy_key(owner)


def rebuild(config: Config, log: Log) -> tuple[dict[str, Reservation], str | None]:
    """Rebuild a corrupt ledger from the owner records of instances that still run.

    Holds the ledger lock throughout: no start or release interleaves.
    """
    ledger = Ledger(config.ledger_path)
    with ledger.locked_for_rebuild():
        records, unreadable = owner_records.read_all(config.state_dir)
        for item in unreadable:
            log.warning("unreadable owner record", record=item)
        entries: dict[str, Reservation] = {}
        for res in records:
            if process_alive(res.pid, res.pid_start):
                res.state = STATE_ACTIVE
                entries[res.key] = res
        aside = ledger.reset_locked(entries)
    log.info("ledger rebuilt", kept=sorted(entries), old=aside)
    return entries, aside


def watch(config: Config, log: Log, interval_s: float, say: object = None) -> int:
    """``gc --watch``: a pass every ``interval_s`` seconds until SIGTERM/SIGINT; logs what it freed."""
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        try:
            report = gc(config, log)
            if report.freed_anything or report.errors:
                sys.stdout.write(summary(report) + "\n")
                sys.stdout.flush()
        except HookError as exc:  # e.g. a corrupt ledger: say so, keep watching
            sys.stdout.write(f"gc: {exc}\n")
            sys.stdout.flush()
        deadline = time.monotonic() + interval_s
        while not stop and time.monotonic() < deadline:
            time.sleep(min(0.2, interval_s))
    return 0


def summary(report: GcReport) -> str:
    text = (
        f"released {len(report.released)} reservation(s) of gone containers, "
        f"{sum(len(v) for v in report.orphan_ports.values())} orphan switch port(s), "
        f"{len(report.orphan_records)} orphan owner record(s), "
        f"{len(report.orphan_links)} orphan link directory(ies)"
    )
    return text + "".join(f"\n  error: {e}" for e in report.errors)
