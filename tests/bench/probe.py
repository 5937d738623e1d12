"""Phase probe: the hook stage run in-process, with a timer around each side-effect module.

Registered in a bench bundle instead of the hook's script (``hook.entry``), as
``python3 -I [-B -X pycache_prefix=EMPTY] tests/bench/probe.py STAGE``; the OCI state is on
stdin as usual.  It imports the modules the full path imports (timed: "imports"), wraps
the functions that do the work (parse, ledger, allocate, socket dir, mounts, switch,
cgroups, log) with timers that record exclusive time (a wrapped call inside another, e.g.
allocate under the ledger lock, is not counted twice), runs the unchanged
``hook.stage.run.run_stage`` and appends one JSON line to ``$BENCH_PROBE_OUT``.

Nothing of the hook is changed on disk; only this process's module attributes are wrapped.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import os  # noqa: E402  (loaded by the interpreter already, like sys)
import sys  # noqa: E402

# Nothing else is imported before the hook's modules, so "imports" holds all the hook needs
# (json, typing, ...); the probe's own helpers are imported after them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

# The modules the full path imports, in the order the hook imports them.
HOT_MODULES = (
    "hook.stage.run", "hook.errors", "hook.stage.oci", "hook.config", "hook.stage.lifecycle", "hook.stage.eventlog",
    "hook.host.cgroups", "hook.host.hugepages", "hook.host.mounts", "hook.host.topology", "hook.switch.ovs",
)


class PhaseTimer:
    """Exclusive wall time per phase, with nesting."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []  # [phase, start, time spent in nested phases]

    def _enter(self, phase: str) -> None:
        self._stack.append([phase, time.perf_counter(), 0.0])

    def _exit(self) -> None:
        phase, start, nested = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.ms[phase] = self.ms.get(phase, 0.0) + (elapsed - nested) * 1000.0
        self.calls[phase] = self.calls.get(phase, 0) + 1
        if self._stack:
            self._stack[-1][2] += elapsed

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._enter(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._exit()

        return timed

    def wrap_cm(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        from contextlib import contextmanager

        @contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            self._enter(phase)
            try:
                with fn(*args, **kwargs) as value:
                    yield value
            finally:
                self._exit()

        return timed


def patch(timer: PhaseTimer, modules: dict[str, Any]) -> None:
    """Wrap the work functions where the hook looks them up (module or class attributes)."""
    plan: tuple[tuple[str, str, str], ...] = (
        # (module, attribute, phase)
        ("hook.stage.oci", "parse_state", "parse"),
        ("hook.stage.oci", "read_bundle_config", "parse"),
        ("hook.stage.lifecycle", "read_bundle_config", "parse"),
        ("hook.stage.lifecycle", "rootfs_path", "parse"),
        ("hook.stage.lifecycle", "process_user", "parse"),
        ("hook.config", "load", "config"),
        ("hook.request.annotations", "parse", "parse"),
        ("hook.stage.lifecycle", "allocate", "allocate+plan"),
        ("hook.host.topology", "read_topology", "allocate+plan"),
        ("hook.stage.lifecycle", "make_plan", "allocate+plan"),
        ("hook.host.hugepages", "grow", "hugepages"),
        ("hook.host.hugepages", "shrink", "hugepages"),
        ("hook.stage.lifecycle", "write_socket_dir", "socket dir"),
        ("hook.stage.lifecycle", "remove_socket_dir", "socket dir"),
        ("hook.host.mounts", "apply_mounts", "mounts"),
        ("hook.host.mounts", "remove_mounts", "mounts"),
        ("hook.stage.lifecycle", "_switch_for", "switch"),
        ("hook.stage.lifecycle", "make_switch", "switch"),
        ("hook.host.cgroups", "pin", "cgroups"),
    )
    for module, attr, phase in plan:
        mod = modules[module]
        if hasattr(mod, attr):
            setattr(mod, attr, timer.wrap(phase, getattr(mod, attr)))
    ledger = modules["hook.host.ledger"].Ledger
    ledger.locked = timer.wrap_cm("ledger", ledger.locked)
    ledger._append = timer.wrap("ledger write+fsync", ledger._append)  # the journal line, under the lock
    ledger._flush = timer.wrap("ledger write+fsync", ledger._flush)  # its fdatasync, after the lock
    ovs = modules["hook.switch.ovs"].OvsSwitch
    ovs.add_ports = timer.wrap("switch", ovs.add_ports)
    ovs.remove_ports = timer.wrap("switch", ovs.remove_ports)
    log_cls = modules["hook.stage.eventlog"].EventLog
    log_cls._write = timer.wrap("log", log_cls._write)


def main() -> int:
    stage = sys.argv[1]
    out = os.environ["BENCH_PROBE_OUT"]
    os.chdir("/")
    t0 = time.perf_counter()
    for name in HOT_MODULES:
        __import__(name)
    modules = {name: sys.modules[name] for name in (*HOT_MODULES, "hook.host.ledger", "hook.request.annotations")}
    imports_ms = (time.perf_counter() - t0) * 1000.0
    import json
    import resource

    timer = PhaseTimer()
    patch(timer, modules)
    raw = sys.stdin.buffer.read((1 << 20) + 1)
    t1 = time.perf_counter()
    rc = int(modules["hook.stage.run"].run_stage(stage, raw))
    stage_ms = (time.perf_counter() - t1) * 1000.0
    try:
        cid = json.loads(raw).get("id")
    except ValueError:
        cid = None
    phases = dict(timer.ms)
    phases["other"] = max(stage_ms - sum(phases.values()), 0.0)
    record = {
        "stage": stage,
        "container_id": cid,
        "rc": rc,
        "label": os.environ.get("BENCH_PROBE_LABEL", ""),
        "cold": bool(sys.flags.dont_write_bytecode and getattr(sys, "pycache_prefix", None)),
        "imports_ms": imports_ms,
        "stage_ms": stage_ms,
        "phases_ms": phases,
        "calls": timer.calls,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "in_process_ms": (time.perf_counter() - T_START) * 1000.0,
    }
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
