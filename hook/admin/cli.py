"""The ``dpdk-oci-hook`` command line: the admin subcommands, and the hook stages handed on.

A stage goes to :mod:`hook.stage.run` without parsing anything else; errors become exit
statuses through :func:`hook.errors.exit_code`, as in the stages.
"""

from __future__ import annotations

import os
import sys

from hook.constants import PREFIX, STAGES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
    from hook.admin.status import cmd_status as run

    return run(args)


def cmd_metrics(args: Any) -> int:
    from hook.admin.metrics import cmd_metrics as run

    return run(args)


def cmd_gc(args: Any) -> int:
    from hook import config as config_mod
    from hook.admin import gc as gc_mod
    from hook.admin.log import admin_log

    config = config_mod.load(args.config)
    log = admin_log(config.log_file, stage="gc")
    if args.rebuild:
        entries, aside = gc_mod.rebuild(config, log)
        sys.stdout.write(f"ledger rebuilt with {len(entries)} live container(s); old ledger kept at {aside}\n")
    if args.watch:
        sys.stdout.write(f"gc: a pass every {args.interval:g}s until stopped (SIGTERM or Ctrl-C); passes that free nothing stay quiet\n")
        sys.stdout.flush()
        return gc_mod.watch(config, log, args.interval)
    report = gc_mod.gc(config, log)
    _print(report.__dict__, args.json, gc_mod.summary(report))
    return 1 if report.errors else 0


def cmd_config_check(args: Any) -> int:
    from hook import config as config_mod
    from hook.errors import ConfigError
    from hook.host.topology import read_topology
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

    from hook import config as config_mod
    from hook.decide.allocate import allocate
    from hook.decide.names import new_key
    from hook.decide.plan import make_plan
    from hook.host.ledger import Ledger
    from hook.host.topology import read_topology
    from hook.model import Instance
    from hook.request import annotations as annotations_mod

    config = config_mod.load(args.config)
    annotations = _parse_annotation_args(args.annotation)
    request = annotations_mod.parse(annotations, config.limits, config.hugepage_size_kib)
    entries = Ledger(config.ledger_path).snapshot()
    # The container's pid is not known yet: this process's own pid stands in for it.
    instance = Instance(args.container_id, "", os.getpid(), None)
    decision = allocate(request, config, read_topology(), entries, instance, new_key(os.urandom(8)), time.time())
    plan = make_plan(decision.reservation)
    out = {
        "request": request,
        "reservation": decision.reservation.to_dict(),
        "grow_pages": decision.grow_pages,
        "mounts": [m.__dict__ for m in plan.mounts + plan.socket_mounts],
        "eal_args": " ".join(plan.eal_args),
        "config.json": __import__("json").loads(plan.files["config.json"]),
    }
    res = decision.reservation
    stand_in = f"/proc/{os.getpid()}/"
    text = "\n".join(
        [
            f"would reserve: cpus {res.cpus or '-'} on NUMA node {res.numa_node}, "
            f"{res.hugepages_mib} MiB of {res.hugepage_size_kib // 1024} MiB pages"
            + (f" (growing the pool by {decision.grow_pages} pages)" if decision.grow_pages else ""),
            *(f"would add port {p.name} ({p.mode}) on {p.bridge}: {p.socket_host_path.replace(stand_in, '/proc/<pid>/')} -> {p.container_path}"
              for p in res.ports),
            *(f"would {'join' if link.peer else 'open'} link {link.name} ({link.mode}, {link.role} side"
              + (f", other side held by {link.peer}" if link.peer else "") + f"): port net{link.index}, "
              f"{link.host_dir} -> {link.container_dir}" for link in res.links),
            *(f"would mount {m.kind} {m.source or m.options} at {m.target}" for m in plan.mounts + plan.socket_mounts),
            f"eal.args: {' '.join(plan.eal_args)}",
            "nothing was changed",
        ]
    )
    _print(out, args.json, text)
    return 0


def cmd_demo(args: Any) -> int:
    from hook import config as config_mod
    from hook.admin import demo

    config = config_mod.load(args.config)
    return demo.main(config.path)


def cmd_oci_hooks(args: Any) -> int:
    """The ``hooks`` object of a bundle's config.json that runs this installed hook."""
    import json

    from hook.config import ENV_PATH, config_path
    from hook.entry import hook_entry

    environ = {ENV_PATH: os.path.abspath(args.config or config_path())}
    hooks = {stage: [hook_entry(stage, sys.executable, environ)] for stage in ("createRuntime", "poststop")}
    sys.stdout.write(json.dumps({"hooks": hooks}, indent=2) + "\n")
    return 0


def cmd_agent(args: Any) -> int:
    from hook.agent.server import serve

    return serve(args.socket)


def cmd_doctor(args: Any) -> int:
    from hook.admin.doctor import cmd_doctor as run

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
    p = sub.add_parser("status", help="what is reserved, per container, and each port's switch counters")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true")
    shown.add_argument("--watch", action="store_true", help="redraw once a second until Ctrl-C")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("metrics", help="the same in Prometheus text format (node_exporter textfile collector)")
    p.add_argument("--output", metavar="FILE", help="write FILE atomically instead of stdout (e.g. a textfile collector's *.prom)")
    p.set_defaults(func=cmd_metrics)
    p = sub.add_parser("gc", help="free what belongs to containers that no longer exist")
    p.add_argument("--rebuild", action="store_true", help="rebuild a corrupt ledger from the owner records first")
    p.add_argument("--watch", action="store_true", help="keep running: a pass every --interval seconds (for hosts without systemd)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between --watch passes (default 30)")
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
    p = sub.add_parser("agent", help="run the resident agent: hook stages run in its forked children, with everything imported")
    p.add_argument("--socket", help="unix socket to listen on (default: $DPDK_OCI_HOOK_AGENT_SOCKET or /run/dpdk-oci-hook-agent.sock)")
    p.set_defaults(func=cmd_agent)
    p = sub.add_parser("demo", help="run two runc containers wired by the hook and pass packets between them")
    p.set_defaults(func=cmd_demo)
    from hook.admin.images import add_image_parser

    add_image_parser(sub)
    from hook.kubernetes.cli import add_device_plugin_parser

    add_device_plugin_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0] in STAGES:
        from hook.stage.run import main as stage_main

        return stage_main(argv[0])
    from hook.errors import HookError
    from hook.stage.run import fail

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
        return fail(exc)
