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


def _bundle_path(raw: bytes) -> str | None:
    """The state's ``"bundle"`` when it is a plain string, found without importing json.

    ``import json`` pulls in ``re`` and ``enum``: ~17 ms, more than the rest of the fast path.
    An unescaped ``"bundle"`` followed by ``:`` can only be a key; None (parse it properly)
    for anything less plain.
    """
    at = raw.find(b'"bundle"')
    while at != -1:
        rest = raw[at + 8:].lstrip()
        if rest[:1] == b":" and raw[at - 1:at] != b"\\":
            value = rest[1:].lstrip()
            end = value.find(b'"', 1)
            if value[:1] != b'"' or end == -1 or b"\\" in value[1:end]:
                return None
            try:
                return value[1:end].decode()
            except UnicodeDecodeError:
                return None
        at = raw.find(b'"bundle"', at + 1)
    return None


def _not_ours(raw: bytes) -> bool:
    """True when the container is certainly not ours: the fast path, before any heavy import."""
    # where a key of ours starts; our name elsewhere (an install path, a foreign key's middle)
    # does not count.  A key spelled with JSON escapes is missed too: it only means the
    # container gets nothing from us.
    key = b'"' + PREFIX.encode()
    if key not in raw:
        if b'"annotations"' in raw:
            return True
        # runc leaves "annotations" out of the state when there are none: look at the
        # bundle's config.json, where they come from
        bundle = _bundle_path(raw)
        if bundle is not None:
            try:
                with open(os.path.join(bundle, "config.json"), "rb") as fh:
                    if key not in fh.read():
                        return True
            except OSError:
                return False  # let the full path report it (or ask the ledger at poststop)
    import json

    try:
        state = json.loads(raw)
        if "annotations" in state:
            annotations = state["annotations"]
        else:
            with open(os.path.join(state["bundle"], "config.json"), "rb") as fh:
                annotations = json.loads(fh.read()).get("annotations")
    except (ValueError, AttributeError, TypeError, KeyError, OSError):
        return False  # let the full path report it (or ask the ledger at poststop)
    if annotations is None:
        return True
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


def cmd_oci_hooks(args: Any) -> int:
    """The ``hooks`` object of a bundle's config.json that runs this installed hook."""
    import json

    from hook.config import ENV_PATH, config_path
    from hook.shim import hook_entry

    environ = {ENV_PATH: os.path.abspath(args.config or config_path())}
    hooks = {stage: [hook_entry(stage, sys.executable, environ)] for stage in ("createRuntime", "poststop")}
    sys.stdout.write(json.dumps({"hooks": hooks}, indent=2) + "\n")
    return 0


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
    p = sub.add_parser("oci-hooks", help="print the hooks object for a bundle's config.json (runc, hand-written bundles)")
    p.set_defaults(func=cmd_oci_hooks)
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
