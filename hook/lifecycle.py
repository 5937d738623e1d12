"""The hook stages: prestart (reserve, plan, apply with rollback), poststop (release) and gc.

This is the one module that sequences side effects.  Each side effect lives in its own
module (ledger, switch, mounts, cgroups, hugepages); the decisions before them are pure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hook import annotations as annotations_mod
from hook.allocate import allocate, container_key
from hook.config import Config
from hook.errors import HookError, StateError
from hook.ledger import Ledger
from hook.log import Log
from hook.model import STATE_ACTIVE, STATE_RELEASING, Request, Reservation
from hook.oci import State, pid_start_time, process_alive, process_user, read_bundle_config, rootfs_path
from hook.plan import ContainerUser, make_plan
from hook.switch import Switch, make_switch


def marker_path(config: Config, container_id: str) -> str:
    """The owner record beside (not inside) a container's socket directory."""
    return os.path.join(config.socket_root, container_key(container_id)[:16] + ".owner")


def _switch_for(config: Config, backend: str) -> Switch:
    return make_switch(replace(config.switch, backend=backend))


@dataclass
class Rollback:
    """Undo steps recorded as work is done, run in reverse on failure."""

    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self.steps.append((what, undo))

    def run(self, log: Log) -> None:
        for what, undo in reversed(self.steps):
            try:
                undo()
                log.info("rolled back", step=what)
            except Exception as exc:  # keep undoing the rest; the gc will retry
                log.error("rollback step failed", step=what, error=str(exc))
        self.steps.clear()


def _write_socket_dir(config: Config, res: Reservation, files: dict[str, str], user: ContainerUser) -> None:
    os.makedirs(config.socket_root, mode=0o711, exist_ok=True)
    with open(marker_path(config, res.container_id), "w", encoding="utf-8") as fh:
        json.dump(res.to_dict(), fh)
    os.mkdir(res.socket_dir, 0o750)
    for name, content in files.items():
        path = os.path.join(res.socket_dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.chmod(path, 0o644)
    # the app (maybe not root) creates server-mode sockets here
    os.chown(res.socket_dir, user.uid, user.gid)


def _remove_socket_dir(config: Config, container_id: str, socket_dir: str) -> None:
    shutil.rmtree(socket_dir, ignore_errors=True)
    try:
        os.unlink(marker_path(config, container_id))
    except FileNotFoundError:
        pass


IMAGE_ENV_PREFIX = "DPDK_OCI_HOOK_MIN_"  # images from our templates repeat their labels here


def _check_image_requirements(bundle_config: dict[str, object], request: Request) -> None:
    """Refuse, before reserving anything, a container whose image needs more than it asked for."""
    process = bundle_config.get("process")
    env = process.get("env", []) if isinstance(process, dict) else []
    labels = {}
    for item in env if isinstance(env, list) else []:
        name, sep, value = str(item).partition("=")
        if sep and name.startswith(IMAGE_ENV_PREFIX) and value.strip():
            labels["dpdk-oci-hook.min-" + name[len(IMAGE_ENV_PREFIX):].lower()] = value
    if labels:
        from hook.images import check_requirements  # only for images that declare requirements

        check_requirements(labels, request)


def prestart(state: State, config: Config, log: Log) -> Reservation:
    """Reserve, plan and apply for one container; on any failure leave nothing behind."""
    from hook import cgroups, hugepages, mounts
    from hook.topology import read_topology

    if state.pid is None:
        raise StateError(reason="prestart needs the container's pid")
    bundle_config = read_bundle_config(state.bundle)
    annotations = state.annotations if state.has_annotations else bundle_config.get("annotations", {}) or {}
    request = annotations_mod.parse(annotations, config.limits, config.hugepage_size_kib)
    _check_image_requirements(bundle_config, request)
    rootfs = rootfs_path(state.bundle, bundle_config)
    user = ContainerUser(*process_user(bundle_config))
    ledger = Ledger(config.ledger_path)
    topo = read_topology()  # outside the lock: pending reservations cover what it cannot see

    started = time.monotonic()
    for _attempt in range(2):
        with ledger.locked() as data:
            stale = state.container_id in data.entries  # e.g. podman restart without a poststop
            if not stale:
                decision = allocate(request, config, topo, data.entries, state.container_id, time.time())
                res = decision.reservation
                res.pid, res.pid_start = state.pid, pid_start_time(state.pid)
                hugepages.grow(res.numa_node, res.hugepage_size_kib, decision.grow_pages)
                data.put(res)
                lock_wait = data.lock_wait_s
        if not stale:
            break
        log.warning("stale reservation for a reused container id: releasing it first")
        release(state.container_id, config, log)
        topo = read_topology()
    else:
        raise StateError(reason=f"container id {state.container_id!r} keeps a reservation that cannot be released")
    log.info("reserved", cpus=res.cpus, hugepages_mib=res.hugepages_mib, ports=[p.name for p in res.ports],
             grown_pages=res.grown_pages, lock_wait_ms=round(lock_wait * 1000, 2),
             lock_held_ms=round((time.monotonic() - started - lock_wait) * 1000, 2))

    plan = make_plan(res, user)
    undo = Rollback()
    undo.push("ledger entry", lambda: _drop_entry(ledger, config, res))
    # Each step is all-or-nothing by itself, so its undo is registered only once it succeeded:
    # undoing a step that did nothing could remove what the runtime mounted at the same path.
    try:
        undo.push("socket dir", lambda: _remove_socket_dir(config, res.container_id, res.socket_dir))
        _write_socket_dir(config, res, plan.files, user)
        mounts.apply_mounts(state.pid, rootfs, plan.mounts)
        undo.push("mounts", lambda: mounts.remove_mounts(state.pid or 0, rootfs, [m.target for m in plan.mounts]))
        if res.kernel_ports:
            from hook import kernelports  # pyroute2: only for containers that ask for kernel ports

            kernelports.create(state.pid, res.kernel_ports, owner=res.container_id)
            undo.push("kernel ports", lambda: kernelports.remove([k.host_name for k in res.kernel_ports]))
        if res.ports or res.kernel_ports:
            switch = _switch_for(config, res.backend)
            switch.add_ports(res.container_id, res.ports, res.kernel_ports)
            undo.push("switch ports", lambda: switch.remove_ports(res.container_id, res.ports, res.kernel_ports))
        if plan.socket_mounts:
            mounts.apply_mounts(state.pid, rootfs, plan.socket_mounts)
            undo.push("socket mounts", lambda: mounts.remove_mounts(state.pid or 0, rootfs, [m.target for m in plan.socket_mounts]))
        cgroups.pin(state.pid, plan.cpus, plan.mems)
        with ledger.locked() as data:
            res.state = STATE_ACTIVE
            data.put(res)
    except BaseException as exc:
        log.error("prestart failed, rolling back", error=str(exc), error_type=type(exc).__name__)
        undo.run(log)
        raise
    log.info("prestart done", ms=round((time.monotonic() - started) * 1000, 2))
    return res


def _drop_entry(ledger: Ledger, config: Config, res: Reservation) -> None:
    from hook import hugepages

    with ledger.locked() as data:
        if data.drop(res.container_id) is not None:
            hugepages.shrink(res.numa_node, res.hugepage_size_kib, res.grown_pages)


def release(container_id: str, config: Config, log: Log) -> bool:
    """Free everything a container holds; idempotent.  True if it held anything.

    Trusts the ledger (and owner tags), never the container's annotations.
    """
    ledger = Ledger(config.ledger_path)
    with ledger.locked() as data:
        res = data.entries.get(container_id)
        if res is not None and res.state != STATE_RELEASING:
            res.state = STATE_RELEASING
            data.put(res)
    if res is None:
        return _release_leftovers(container_id, config, log)
    if res.ports or res.kernel_ports:
        _switch_for(config, res.backend).remove_ports(container_id, res.ports, res.kernel_ports)
    if res.kernel_ports:  # usually gone with the container's network namespace already
        from hook import kernelports

        kernelports.remove([k.host_name for k in res.kernel_ports])
    # Our mounts live only in the container's mount namespace and went with it.
    _remove_socket_dir(config, container_id, res.socket_dir)
    _drop_entry(ledger, config, res)
    log.info("released", cpus=res.cpus, hugepages_mib=res.hugepages_mib, ports=[p.name for p in res.ports])
    return True


def _release_leftovers(container_id: str, config: Config, log: Log) -> bool:
    """No ledger entry (refused at prestart, or released already): remove a stray socket dir.

    Switch ports without an entry are left to ``gc``: asking the switch here would make every
    refused container's poststop pay for (and depend on) a switch round trip.
    """
    key_dir = os.path.join(config.socket_root, container_key(container_id)[:16])
    if os.path.exists(key_dir) or os.path.exists(marker_path(config, container_id)):
        _remove_socket_dir(config, container_id, key_dir)
        log.warning("removed a socket dir without a ledger entry")
        return True
    return False


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
    if config.switch.backend == "ovs":
        from hook.switch.ovs import OvsSwitch

        try:
            switch = make_switch(config.switch)
            for cid, names in switch.owned_ports().items():
                if cid not in known:
                    assert isinstance(switch, OvsSwitch)
                    switch.remove_port_names(names)
                    report.orphan_ports[cid] = names
        except HookError as exc:
            report.errors.append(str(exc))
    try:
        from hook import kernelports

        stray = [name for name, owner in kernelports.existing_owners().items() if owner not in known]
        if stray:
            kernelports.remove(stray)
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
