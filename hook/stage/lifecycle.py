"""The hook stages: createRuntime (reserve, plan, apply with rollback) and poststop (release).

This is the one module that sequences side effects.  Each side effect lives in its own
module (ledger, owner records, mounts, veth, switch, cgroups, hugepages); the decisions
before them are pure.  The order is what makes a crash at any point recoverable:

* a reservation (and any pool growth it needs) is recorded in the ledger before anything
  exists on the host, and its owner record before any resource; every resource is tagged
  with the instance key;
* a release undoes the resources first and drops the ledger entry last;
* so ``gc`` may remove any tagged resource whose key the ledger does not hold (keys are
  random and never reused), and release any entry whose process is provably gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hook.config import Config
from hook.decide.allocate import allocate
from hook.decide.names import new_key
from hook.decide.plan import make_plan
from hook.errors import ResourceExhausted, StateError
from hook.host import owner_records, run_dirs
from hook.host.ledger import REWRITE_AFTER_AT_START, Ledger
from hook.host.proc import id_maps, pid_start_time, process_alive
from hook.model import STATE_ACTIVE, STATE_RELEASING, Instance, Request, Reservation
from hook.request import annotations as annotations_mod
from hook.request.image_requirements import check_image_env
from hook.stage import faults
from hook.stage.budget import Budget
from hook.stage.eventlog import Log
from hook.stage.oci import State, map_id, process_user, read_bundle_config, rootfs_path
from hook.switch.base import Switch
from hook.switch.factory import make_switch

# containerd's CRI and CRI-O mark a pod's application containers so (hook.request.kubernetes)
KUBE_CONTAINER_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
SWITCH_WAIT_CAP_S = 8.0  # one switch transaction, at most
MOUNT_WAIT_CAP_S = 10.0  # one mount helper, at most


def _switch_for(config: Config, backend: str, budget: Budget | None = None) -> Switch:
    timeout = budget.wait_for(min(config.switch.timeout_s, SWITCH_WAIT_CAP_S)) if budget else config.switch.timeout_s
    return make_switch(replace(config.switch, backend=backend, timeout_s=timeout))


def alive(res: Reservation) -> bool:
    """Whether the instance's init process still runs (pid and start time both match)."""
    return process_alive(res.pid, res.pid_start)


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


def _instance(state: State, bundle_config: dict[str, object]) -> tuple[Instance, int, int]:
    """Who the container is on this host, and the host uid/gid its files belong to."""
    assert state.pid is not None
    start = pid_start_time(state.pid)
    if start is None:
        raise StateError(reason=f"the container's process {state.pid} is gone")
    uid, gid = process_user(bundle_config)
    try:
        uid_map, gid_map = id_maps(state.pid)
    except OSError as exc:
        raise StateError(reason=f"cannot read the user namespace maps of process {state.pid}: {exc.strerror}") from exc
    return Instance(state.container_id, state.bundle, state.pid, start), map_id(uid, uid_map, "uid"), map_id(gid, gid_map, "gid")


def _request(bundle_config: dict[str, Any], annotations: dict[str, Any], config: Config) -> Request:
    """The annotations as a Request; for a Kubernetes container, with kubelet's cores and memory."""
    if not any(annotations.get(key) == "container" for key in KUBE_CONTAINER_KEYS):
        return annotations_mod.parse(annotations, config.limits, config.hugepage_size_kib)
    from hook.request.kubernetes import kubelet_request, request_with_kubelet

    kube = kubelet_request(bundle_config, annotations)
    if kube is None:
        return annotations_mod.parse(annotations, config.limits, config.hugepage_size_kib)
    request = request_with_kubelet(annotations, kube, config.limits, config.hugepage_size_kib)
    return replace(request, kubelet=True, kubelet_cpus=kube.cpus if kube.exclusive else (), sandbox=kube.context.sandbox_id)


def _reserve(request: Request, config: Config, ledger: Ledger, instance: Instance, uid: int, gid: int,
             log: Log, stale: list[str] | None = None) -> Reservation | None:
    """Record the reservation (and any pool growth, before it happens), then grow the pool.

    With ``stale``: if an earlier instance of this container (same id and bundle) holds an
    entry and its process is gone, reserve nothing, put their keys there and return None
    (checked in the same hold, so a start takes the lock once).
    """
    from hook.host import cgroups, hugepages
    from hook.host.topology import read_topology

    key = new_key(os.urandom(8))
    cgroup_dirs = cgroups.cgroup_dirs(instance.pid) if instance.pid is not None else []
    sizes = (request.hugepage_size_kib or config.hugepage_size_kib,) if request.hugepages_mib else ()
    with ledger.locked() as data:
        if stale is not None:
            stale += [res.key for res in data.by_container(instance.container_id, instance.bundle) if not alive(res)]
            if stale:
                return None
        # Pools are read under the lock: what another start reserved a moment ago is visible.
        decision = allocate(request, config, read_topology(sizes=sizes), data.entries, instance, key, time.time())
        res = decision.reservation
        res.uid, res.gid, res.cgroups = uid, gid, cgroup_dirs
        cgroups.check_own_cgroups(res, data.entries.values(), alive)
        if res.links:
            from hook.decide.links import check_link_users

            check_link_users(res, data.entries)
        if decision.grow_pages:
            res.grow_from = hugepages.pool_size(res.numa_node, res.hugepage_size_kib)
        data.put(res)
        lock_wait = data.lock_wait_s
        if decision.grow_pages:  # the record is durable before the pool grows, under the lock
            data.commit()
            faults.point("reserved")
            hugepages.grow(res.numa_node, res.hugepage_size_kib, decision.grow_pages)
            res.grow_done = True
            data.put(res)
            data.commit()
            faults.point("pool-grown")
    # leaving the block flushed the record (after letting go of the lock): durable before any effect
    faults.point("reserved")
    # read, decide, write: up to the release, not the flush after it, nor the moments at
    # normal priority after it, when a busy host's other hooks get the CPU first
    lock_held = data.released_at - data.locked_at
    lock_cpu = data.lock_cpu_s
    log.info("reserved", key=res.key, cpus=res.cpus, hugepages_mib=res.hugepages_mib, ports=[p.name for p in res.ports],
             grown_pages=res.grown_pages, lock_wait_ms=round(lock_wait * 1000, 2), lock_held_ms=round(lock_held * 1000, 2),
             lock_cpu_ms=round(lock_cpu * 1000, 2))
    return res


def _reclaim_dead(config: Config, log: Log, budget: Budget | None = None) -> list[str]:
    """Release entries whose process is provably gone; their keys."""
    ledger = Ledger(config.ledger_path, budget.wait_for(5.0) if budget else None)
    with ledger.locked() as data:
        dead = [res.key for res in data.entries.values() if not alive(res)]
    freed = []
    for key in dead:
        if release_key(key, config, log, budget):
            freed.append(key)
    return freed


def prestart(state: State, config: Config, log: Log, budget: Budget | None = None) -> Reservation:
    """Reserve, plan and apply for one container; on any failure leave nothing behind."""
    from hook.host import cgroups, mounts

    budget = budget or Budget()
    if state.pid is None:
        raise StateError(reason="prestart needs the container's pid")
    bundle_config = read_bundle_config(state.bundle)
    annotations = state.annotations if state.has_annotations else bundle_config.get("annotations", {}) or {}
    request = _request(bundle_config, annotations, config)
    check_image_env(bundle_config, request)
    rootfs = rootfs_path(state.bundle, bundle_config)
    instance, uid, gid = _instance(state, bundle_config)
    ledger = Ledger(config.ledger_path, budget.wait_for(10.0))
    ledger.rewrite_after = REWRITE_AFTER_AT_START  # a start leaves folding the journal to releases and gc
    started = time.monotonic()

    try:
        # An earlier instance of this container (same id and bundle) whose process is gone and
        # whose poststop never ran (podman restart, a crash): release it first.
        stale: list[str] = []
        reserved = _reserve(request, config, ledger, instance, uid, gid, log, stale)
        if reserved is None:
            released = [key for key in stale if release_key(key, config, log, budget)]
            log.warning("released stale reservations of an earlier instance", keys=released)
            reserved = _reserve(request, config, ledger, instance, uid, gid, log)
    except ResourceExhausted:
        freed = _reclaim_dead(config, log, budget)  # self-healing: only provably dead instances
        if not freed:
            raise
        log.warning("reclaimed reservations of containers that are gone", keys=freed)
        reserved = _reserve(request, config, ledger, instance, uid, gid, log)
    assert reserved is not None  # without ``stale`` it reserves or raises
    res = reserved

    plan = make_plan(res)
    undo = Rollback()
    undo.push("ledger entry", lambda: _drop_entry(ledger, config, res))
    # Each step is all-or-nothing by itself, so its undo is registered only once it succeeded:
    # undoing a step that did nothing could remove what the runtime mounted at the same path.
    try:
        budget.check("the reservation")
        owner_records.write(config.state_dir, res)
        undo.push("owner record", lambda: owner_records.remove_any(config.state_dir, res.key))
        run_dirs.create(config.state_dir, res.key, res.uid, res.gid, plan.files)
        undo.push("run dir", lambda: run_dirs.remove(config.state_dir, res.key))
        if res.links:
            # Under the ledger lock: the link's other side may be starting or stopping now.
            # Undone with the ledger entry (_drop_entry removes a directory no one holds).
            from hook.host import link_dirs

            with ledger.locked():
                link_dirs.prepare(config.state_dir, res.links, res.uid, res.gid)
            faults.point("link-dirs")
        faults.point("socket-dir")
        mounts.apply_mounts(state.pid, rootfs, plan.mounts, budget.wait_for(MOUNT_WAIT_CAP_S))
        undo.push("mounts", lambda: mounts.remove_mounts(state.pid or 0, rootfs, [m.target for m in plan.mounts]))
        faults.point("mounts")
        if res.kernel_ports:
            from hook.host import veth  # pyroute2: only for containers that ask for kernel ports

            budget.check("the mounts")
            veth.create(state.pid, res.kernel_ports, owner=f"{config.switch.scope}/{res.key}")
            undo.push("kernel ports", lambda: veth.remove([k.host_name for k in res.kernel_ports]))
            faults.point("kernel-ports")
        if res.ports or res.kernel_ports:
            budget.check("the kernel ports")
            switch = _switch_for(config, res.backend, budget)
            switch.add_ports(res.key, res.ports, res.kernel_ports)
            undo.push("switch ports", lambda: _switch_for(config, res.backend).remove_ports(res.key, res.ports, res.kernel_ports))
            faults.point("switch")
        if plan.socket_mounts:
            budget.check("the switch")
            mounts.apply_mounts(state.pid, rootfs, plan.socket_mounts, budget.wait_for(MOUNT_WAIT_CAP_S))
            undo.push("socket mounts", lambda: mounts.remove_mounts(state.pid or 0, rootfs, [m.target for m in plan.socket_mounts]))
            faults.point("socket-mounts")
        cgroups.pin(state.pid, plan.cpus, plan.mems)
        faults.point("pinned")
        budget.check("the container's setup")
        with ledger.locked() as data:
            if res.key not in data.entries:
                raise StateError(reason="the reservation was released while the container was being set up (by gc?)")
            res.state = STATE_ACTIVE
            data.put(res)
        faults.point("active")
    except BaseException as exc:
        log.error("prestart failed, rolling back", error=str(exc), error_type=type(exc).__name__)
        undo.run(log)
        raise
    log.info("prestart done", key=res.key, ms=round((time.monotonic() - started) * 1000, 2))
    return res


def _give_back_pages(res: Reservation, log: Log) -> None:
    """Shrink the node's pool by what this reservation grew it by (under the ledger lock)."""
    from hook.host import hugepages

    if not res.grown_pages or res.grow_from is None:
        return
    if not res.grow_done:
        # Killed between recording the growth and confirming it: shrink only when the pool
        # shows exactly that growth; anything else would take pages that are not ours.
        current = hugepages.pool_size(res.numa_node, res.hugepage_size_kib)
        if current != res.grow_from + res.grown_pages:
            log.warning("pool growth of a killed start not confirmed: left as is", key=res.key, pool=current,
                        expected=res.grow_from + res.grown_pages)
            return
    hugepages.shrink(res.numa_node, res.hugepage_size_kib, res.grown_pages)


def _drop_entry(ledger: Ledger, config: Config, res: Reservation, log: Log | None = None) -> None:
    with ledger.locked() as data:
        held = data.entries.get(res.key)
        if held is not None:
            from hook.stage.eventlog import EventLog

            _give_back_pages(held, log or EventLog(None))
            data.drop(res.key)
            if held.links:
                # The last side of a link to go takes its directory along (under the lock: a
                # side that starts now either holds the link already or mounts it afresh).
                from hook.host import link_dirs

                for failure in link_dirs.release(held.links, data.entries.values()):
                    (log or EventLog(None)).warning("link directory not removed (gc retries)", key=res.key, error=failure)


def release_key(key: str, config: Config, log: Log, budget: Budget | None = None) -> bool:
    """Free everything the instance ``key`` holds; idempotent.  True if it held anything.

    Trusts the ledger (and owner tags), never the container's annotations.  The entry is
    marked ``releasing`` first and dropped last, so a release killed half-way is finished by
    the next poststop or gc.
    """
    ledger = Ledger(config.ledger_path, budget.wait_for(10.0) if budget else None)
    with ledger.locked() as data:
        res = data.entries.get(key)
        if res is None:
            return False
        if res.state != STATE_RELEASING:
            res.state = STATE_RELEASING
            data.put(res)
    faults.point("releasing")
    if res.ports or res.kernel_ports:
        _switch_for(config, res.backend, budget).remove_ports(key, res.ports, res.kernel_ports)
    faults.point("switch-removed")
    if res.kernel_ports:  # usually gone with the container's network namespace already
        from hook.host import veth

        veth.remove([k.host_name for k in res.kernel_ports])
    faults.point("kernel-ports-removed")
    # The container's own mounts (its hugetlbfs, its binds) went with its mount namespace;
    # its run directory is the host's to remove.
    run_dirs.remove(config.state_dir, key)
    owner_records.remove_any(config.state_dir, key)
    faults.point("socket-dir-removed")
    _drop_entry(ledger, config, res, log)
    faults.point("released")
    log.info("released", key=key, container=res.container_id, cpus=res.cpus, hugepages_mib=res.hugepages_mib,
             ports=[p.name for p in res.ports])
    return True


def release(state: State, config: Config, log: Log, budget: Budget | None = None) -> int:
    """poststop: free the instances of this container (id and bundle) whose process is gone.

    A live instance with the same id (another runtime root) is never touched; neither is a
    live namesake after a refused start.  Returns how many instances were released.
    """
    budget = budget or Budget()
    ledger = Ledger(config.ledger_path, budget.wait_for(10.0))
    with ledger.locked() as data:
        mine = data.by_container(state.container_id, state.bundle or None)
    released = 0
    for res in mine:
        if state.pid and res.pid and res.pid != state.pid:
            continue  # the runtime told us which process: another instance's entry
        if alive(res):
            continue
        if release_key(res.key, config, log, budget):
            released += 1
    return released
