"""The ``dpdk-oci-hook`` command: hook stages on the hot path, admin subcommands beside them.

This is the one place that maps errors to exit codes.  A container that carries none of our
annotations costs one JSON parse: nothing else is imported for it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing (and the re and enum it pulls in) costs ~10 ms per container start
if TYPE_CHECKING:
    from typing import Any

PREFIX = "dpdk-oci-hook/"
SETUP_STAGES = ("prestart", "createRuntime")
STAGES = (*SETUP_STAGES, "poststop")

# Exit codes by error class name; 1 for any other HookError.  Anything else is a bug and
# keeps its traceback (Python exits 1).
EXIT_CODES = {
    "AnnotationError": 2,
    "ConfigError": 3,
    "StateError": 4,
    "LedgerCorrupt": 5,
    "ResourceExhausted": 6,
    "SwitchError": 7,
    "MountError": 8,
    "CgroupError": 9,
    "HugepageError": 10,
    "ImageRequirementError": 11,
    "EngineError": 12,
}


def exit_code(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls.__name__ in EXIT_CODES:
            return EXIT_CODES[cls.__name__]
    return 1


def _fail(exc: BaseException, log: Any = None) -> int:
    sys.stderr.write(f"dpdk-oci-hook: {exc}\n")
    if log is not None:
        log.error("failed", error=str(exc), error_type=type(exc).__name__, **getattr(exc, "fields", {}))
    return exit_code(exc)


# Kubernetes copies pod annotations onto the pod's sandbox (pause) container too: never ours.
SANDBOX_MARKERS = (("io.kubernetes.cri.container-type", "sandbox"), ("io.kubernetes.cri-o.ContainerType", "sandbox"))


def wants_us(annotations: dict[str, Any]) -> bool:
    """Whether a container with these annotations is ours to set up."""
    if any(annotations.get(key) == value for key, value in SANDBOX_MARKERS):
        return False
    return any(isinstance(k, str) and k.startswith(PREFIX) for k in annotations)


def _not_ours(raw: bytes) -> bool:
    """True when the container is certainly not ours: the fast path, before any heavy import."""
    if PREFIX.encode() not in raw:
        if b'"annotations"' in raw:
            # not even the prefix's bytes: no need to pay for importing json.  (A key spelled with
            # JSON escapes lands here too; it only means the container gets nothing from us.)
            return True
        # runc leaves "annotations" out of the state when there are none: look at the bundle's
        # config.json the same cheap way (it is where the state's annotations come from)
        import json

        try:
            bundle = json.loads(raw).get("bundle")
            with open(os.path.join(bundle, "config.json"), "rb") as fh:
                config = fh.read()
        except (ValueError, AttributeError, TypeError, OSError):
            return False  # let the full path report it (or ask the ledger at poststop)
        return PREFIX.encode() not in config
    import json

    try:
        annotations = json.loads(raw).get("annotations")
    except (ValueError, AttributeError):
        return False  # let the full parser report it
    return isinstance(annotations, dict) and not wants_us(annotations)


def run_stage(stage: str, raw: bytes) -> int:
    """Run one hook stage on the state JSON ``raw``."""
    if _not_ours(raw):
        return 0
    from hook.errors import HookError
    from hook.oci import parse_state, read_bundle_config

    log = None
    try:
        state = parse_state(raw)
        if not state.has_annotations:
            try:
                annotations = read_bundle_config(state.bundle).get("annotations") or {}
            except HookError:
                if stage in SETUP_STAGES:
                    raise
                annotations = {PREFIX: "unknown"}  # bundle gone at poststop: ask the ledger
            if not wants_us(annotations):
                return 0
        from hook import config as config_mod
        from hook import lifecycle
        from hook.log import EventLog

        config = config_mod.load()
        log = EventLog(config.log_file, container_id=state.container_id, stage=stage)
        if stage in SETUP_STAGES:
            lifecycle.prestart(state, config, log)
        else:
            lifecycle.release(state.container_id, config, log)
    except HookError as exc:
        return _fail(exc, log)
    return 0


def _parse_annotation_args(pairs: list[str]) -> dict[str, str]:
    from hook.errors import AnnotationError

    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise AnnotationError(key=pair, reason="expected KEY=VALUE")
        if not key.startswith(PREFIX):
            key = PREFIX + key
        result[key] = value
    return result


def _print(obj: Any, as_json: bool, text: str) -> None:
    import json

    sys.stdout.write((json.dumps(obj, indent=2, default=str) if as_json else text) + "\n")


def cmd_status(args: Any) -> int:
    from hook import config as config_mod
    from hook.ledger import Ledger
    from hook.oci import process_alive
    from hook.units import format_cpulist

    config = config_mod.load(args.config)
    entries = Ledger(config.ledger_path).snapshot()
    rows = []
    for _cid, res in sorted(entries.items()):
        row = res.to_dict()
        row["alive"] = process_alive(res.pid, res.pid_start)
        rows.append(row)
    lines = [f"{len(rows)} container(s) hold reservations (pool {format_cpulist(config.cpu_pool)}, "
             f"hugepage budget {config.hugepage_budget_kib // 1024} MiB)"]
    for row in rows:
        ports = ", ".join(f"{p['name']}({p['mode']})" for p in row["ports"]) or "-"
        lines.append(
            f"  {row['container_id'][:24]:24} {row['state']:9} cpus={format_cpulist(row['cpus']) or '-':8} "
            f"hugepages={row['hugepages_mib']}Mi node={row['numa_node']} ports={ports}"
            + ("" if row["alive"] else "  [container gone: run gc]")
        )
    _print({"config": config.path, "entries": rows}, args.json, "\n".join(lines))
    return 0


def cmd_gc(args: Any) -> int:
    from hook import config as config_mod
    from hook import lifecycle
    from hook.log import admin_log

    config = config_mod.load(args.config)
    log = admin_log(config.log_file, stage="gc")
    if args.rebuild:
        entries, aside = lifecycle.rebuild(config, log)
        sys.stdout.write(f"ledger rebuilt with {len(entries)} live container(s); old ledger kept at {aside}\n")
    report = lifecycle.gc(config, log)
    text = (
        f"released {len(report.released)} reservation(s) of gone containers, "
        f"{sum(len(v) for v in report.orphan_ports.values())} orphan switch port(s), "
        f"{len(report.orphan_dirs)} orphan socket dir(s)"
    )
    text += "".join(f"\n  error: {e}" for e in report.errors)
    _print(report.__dict__, args.json, text)
    return 1 if report.errors else 0


def cmd_config_check(args: Any) -> int:
    from hook import config as config_mod
    from hook.errors import ConfigError
    from hook.topology import read_topology
    from hook.units import format_cpulist

    config = config_mod.load(args.path or args.config, use_cache=False)
    topo = read_topology()
    missing = config.cpu_pool - topo.cpus
    if missing:
        raise ConfigError(path=config.path, reason=f"cpus.pool names CPUs that are not online: {format_cpulist(missing)}")
    config_mod.load(config.path)  # refresh the hot path's cache
    _print(config.to_json(), args.json, f"{config.path}: OK (backend {config.switch.backend}, "
           f"pool {format_cpulist(config.cpu_pool)}, budget {config.hugepage_budget_kib // 1024} MiB)")
    return 0


def cmd_explain(args: Any) -> int:
    import time

    from hook import annotations as annotations_mod
    from hook import config as config_mod
    from hook.allocate import allocate
    from hook.ledger import Ledger
    from hook.plan import ContainerUser, make_plan
    from hook.topology import read_topology

    config = config_mod.load(args.config)
    annotations = _parse_annotation_args(args.annotation)
    request = annotations_mod.parse(annotations, config.limits, config.hugepage_size_kib)
    entries = Ledger(config.ledger_path).snapshot()
    decision = allocate(request, config, read_topology(), entries, args.container_id, time.time())
    plan = make_plan(decision.reservation, ContainerUser())
    out = {
        "request": request,
        "reservation": decision.reservation.to_dict(),
        "grow_pages": decision.grow_pages,
        "mounts": [m.__dict__ for m in plan.mounts + plan.socket_mounts],
        "eal_args": " ".join(plan.eal_args),
        "config.json": __import__("json").loads(plan.files["config.json"]),
    }
    res = decision.reservation
    text = "\n".join(
        [
            f"would reserve: cpus {res.cpus or '-'} on NUMA node {res.numa_node}, "
            f"{res.hugepages_mib} MiB of {res.hugepage_size_kib // 1024} MiB pages"
            + (f" (growing the pool by {decision.grow_pages} pages)" if decision.grow_pages else ""),
            *(f"would add port {p.name} ({p.mode}) on {p.bridge}: {p.socket_host_path} -> {p.container_path}" for p in res.ports),
            *(f"would mount {m.kind} {m.source or m.options} at {m.target}" for m in plan.mounts + plan.socket_mounts),
            f"eal.args: {' '.join(plan.eal_args)}",
            "nothing was changed",
        ]
    )
    _print(out, args.json, text)
    return 0


def cmd_demo(args: Any) -> int:
    from hook import config as config_mod
    from hook import demo

    config = config_mod.load(args.config)
    return demo.main(config.path)


def cmd_doctor(args: Any) -> int:
    from hook.doctor import cmd_doctor as run

    return int(run(args))


def build_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="dpdk-oci-hook",
        description="OCI hook that gives DPDK containers cores, hugepages and vhost-user ports.",
        epilog="Hook stages (state JSON on stdin): prestart, createRuntime, poststop.",
    )
    parser.add_argument("--config", help="host config (default: $DPDK_OCI_HOOK_CONFIG or /etc/dpdk-oci-hook/config.hcl)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in STAGES:
        sub.add_parser(stage, help=f"hook stage {stage} (reads the OCI state on stdin)")
    p = sub.add_parser("status", help="what is reserved, per container")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("gc", help="free what belongs to containers that no longer exist")
    p.add_argument("--rebuild", action="store_true", help="rebuild a corrupt ledger from the owner records first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("config", help="host configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("check", help="validate the config and refresh its cache")
    c.add_argument("path", nargs="?")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_config_check)
    p = sub.add_parser("explain", help="dry run: the plan for a set of annotations; nothing is changed")
    p.add_argument("annotation", nargs="*", help="KEY=VALUE, e.g. vhost-user=2 cpus=1 hugepages=512Mi")
    p.add_argument("--container-id", default="explain", help="id to plan for (names and paths derive from it)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("doctor", help="is this host ready for DPDK containers? one line per finding")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("demo", help="run two runc containers wired by the hook and pass packets between them")
    p.set_defaults(func=cmd_demo)
    from hook.images import add_image_parser

    add_image_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0] in STAGES:
        os.chdir("/")
        return run_stage(argv[0], sys.stdin.buffer.read((1 << 20) + 1))
    from hook.errors import HookError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        os.environ["DPDK_OCI_HOOK_CONFIG"] = args.config
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.func(args))
    except HookError as exc:
        return _fail(exc)
