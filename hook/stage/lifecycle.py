"""The hook stages: prestart (reserve, plan, apply with rollback), poststop (release) and gc.

This is the one module that sequences side effects.  Each side effect lives in its own
module (ledger, switch, mounts, cgroups, hugepages); the decisions before them are pure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hook.config import Config
from hook.decide.allocate import allocate
from hook.decide.names import container_key
from hook.decide.plan import ContainerUser, make_plan
from hook.errors import StateError
from hook.host.ledger import Ledger
from hook.host.proc import pid_start_time
from hook.host.socket_dir import marker_path, remove_socket_dir, write_socket_dir
from hook.model import STATE_ACTIVE, STATE_RELEASING, Reservation
from hook.request import annotations as annotations_mod
from hook.request.image_requirements import check_image_env
from hook.stage.eventlog import Log
from hook.stage.oci import State, process_user, read_bundle_config, rootfs_path
from hook.switch.base import Switch
from hook.switch.factory import make_switch


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


def prestart(state: State, config: Config, log: Log) -> Reservation:
    """Reserve, plan and apply for one container; on any failure leave nothing behind."""
    from hook.host import cgroups, hugepages, mounts
    from hook.host.topology import read_topology

    if state.pid is None:
        raise StateError(reason="prestart needs the container's pid")
    bundle_config = read_bundle_config(state.bundle)
    annotations = state.annotations if state.has_annotations else bundle_config.get("annotations", {}) or {}
    request = annotations_mod.parse(annotations, config.limits, config.hugepage_size_kib)
    check_image_env(bundle_config, request)
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
        undo.push("socket dir", lambda: remove_socket_dir(config, res.container_id, res.socket_dir))
        write_socket_dir(config, res, plan.files, user)
        mounts.apply_mounts(state.pid, rootfs, plan.mounts)
        undo.push("mounts", lambda: mounts.remove_mounts(state.pid or 0, rootfs, [m.target for m in plan.mounts]))
        if res.kernel_ports:
            from hook.host import veth  # pyroute2: only for containers that ask for kernel ports

            veth.create(state.pid, res.kernel_ports, owner=res.container_id)
            undo.push("kernel ports", lambda: veth.remove([k.host_name for k in res.kernel_ports]))
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
    from hook.host import hugepages

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
        from hook.host import veth

        veth.remove([k.host_name for k in res.kernel_ports])
    # Our mounts live only in the container's mount namespace and went with it.
    remove_socket_dir(config, container_id, res.socket_dir)
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
        remove_socket_dir(config, container_id, key_dir)
        log.warning("removed a socket dir without a ledger entry")
        return True
    return False
