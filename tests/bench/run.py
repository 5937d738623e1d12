"""The benchmark runner: ``sudo ./tests/bench/run [--quick] [--only SCENARIO[,SCENARIO]]``.

Runs the scenarios (each interleaves its variants), then writes
``bench-results/<timestamp>/results.json`` (raw numbers), ``table.md`` (also printed) and
``chart.png``.  Everything a scenario starts is stopped and removed when it ends; the run
ends with a check that the host holds nothing of it.

A switch the host already runs (install.sh's embedded OVS-DPDK) is paused for the run, which
starts its own (one OVS-DPDK per host, and its PMD would share the measured cores), and is
restarted with its database and bridges at the end.  A scenario that fails is one line on
stderr (its traceback goes to ``errors.txt`` in the results) and the run exits non-zero.

Scenarios: start (1-3), phases (4), concurrency (5), ports (6), memory (7), datapath (8-11),
links (12).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from tests.bench.common import (
    REPO,
    Bench,
    Section,
    clean_json,
    hugepages_free,
    leftover_cgroups,
    mounts_under,
    netns_names,
    processes_mentioning,
    tool_version,
)
from tests.helpers.ovs_instance import RESTORE_COMMAND, OvsError, PausedSwitch, pause_host_switch, restore_host_switch

SCENARIOS = ("start", "phases", "concurrency", "ports", "memory", "datapath", "links")


def scenario_fn(name: str) -> Callable[[Bench], Section]:
    if name == "start":
        from tests.bench.start import run_start

        return run_start
    if name == "phases":
        from tests.bench.start import run_phases

        return run_phases
    if name == "concurrency":
        from tests.bench.scale import run_concurrency

        return run_concurrency
    if name == "ports":
        from tests.bench.scale import run_ports

        return run_ports
    if name == "memory":
        from tests.bench.memory import run_memory

        return run_memory
    if name == "datapath":
        from tests.bench.datapath import run_datapath

        return run_datapath
    if name == "links":
        from tests.bench.links import run_links

        return run_links
    raise ValueError(name)


def other_pollers() -> list[str]:
    """DPDK processes already running (someone else's): they may busy-poll the cores we measure on."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("dpdk-oci-"):  # the hook's own commands (status --watch...) poll no NIC
                continue
            if comm in ("ovs-vswitchd", "dpdk-testpmd") or comm.startswith(("dpdk-", "vpp")):
                found.append(f"{entry} {comm}")
    return found


def host_facts() -> dict[str, object]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "?"

    return {
        "kernel": platform.release(),
        "debian": read("/etc/debian_version"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "runc": tool_version(["runc", "--version"]),
        "dpdk": tool_version(["dpkg-query", "-W", "-f=${Version}", "dpdk"]),
        "ovs": tool_version(["ovs-vswitchd", "--version"]),
        "iperf3": tool_version(["iperf3", "--version"]),
        "loadavg_start": read("/proc/loadavg"),
        "other_pollers_at_start": other_pollers(),
        "hugepages_free_start": hugepages_free(),
    }


def leftovers(b: Bench, netns_before: set[str]) -> list[str]:
    """What of this run is still on the host (should be nothing)."""
    found = list(b.leftovers)
    found += [f"process: {p}" for p in processes_mentioning(str(b.work))]
    found += [f"process: {p}" for p in processes_mentioning(f"bench{b.tag}")]
    found += [f"mount: {m}" for m in mounts_under(str(b.work))]
    found += [f"netns: {n}" for n in set(netns_names()) - netns_before if n.startswith("bench")]
    for base in ("/dev/hugepages", "/var/run/dpdk"):
        try:
            found += [f"file: {base}/{n}" for n in os.listdir(base) if f"bench{b.tag}" in n]
        except OSError:
            pass
    if b.work.exists():
        found.append(f"directory: {b.work}")
    found += [f"cgroup: {c}" for c in leftover_cgroups()]
    cache = os.environ.get("DPDK_OCI_HOOK_CACHE_DIR") or "/run/dpdk-oci-hook-cache"
    for path in b.config_paths:  # the hooks' config cache goes to the work dir; never to the host's
        digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
        if os.path.exists(os.path.join(cache, f"config-{digest}.json")):
            found.append(f"file: {cache}/config-{digest}.json")
    return found


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and the first line of its message, shortened."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_error(out_dir: Path, what: str, exc: BaseException) -> Path:
    """Append the full traceback of ``exc`` to ``errors.txt`` in the results."""
    path = out_dir / "errors.txt"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"=== {what}\n{''.join(traceback.format_exception(exc))}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/bench/run",
        description="Benchmark dpdk-oci-hook on this machine; writes bench-results/<timestamp>/{results.json,table.md,chart.png}.",
        epilog="scenarios: start (container start, issue #5 items 1-3), phases (4), concurrency (5), ports (6), memory (7), "
               "datapath (8-11). Run as root; everything started is removed again.")
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter traffic (a few minutes in all)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", default=str(REPO / "bench-results"), help="parent directory of the results (default: bench-results/)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tests/bench/run: run as root (sudo ./tests/bench/run)", file=sys.stderr)
        return 1
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r} (choose from {', '.join(SCENARIOS)})")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    b = Bench(args.quick, out_dir)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        paused: PausedSwitch | None = pause_host_switch(lambda text: b.say(f"note: {text}"))
    except (OvsError, KeyboardInterrupt) as exc:
        print(f"bench: cannot start: {one_line(exc)}", file=sys.stderr)
        b.close()
        return 1
    netns_before = set(netns_names())
    pollers = other_pollers()
    if pollers:
        b.say("note: DPDK processes of others are running (" + ", ".join(pollers) + "): if they poll, numbers suffer")
    meta: dict[str, object] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "scenarios": chosen,
                               "host": host_facts(), "work_dir": str(b.work)}
    sections: list[Section] = []
    status = 0
    try:
        for name in chosen:
            b.say(f"=== {name}")
            mark = b.mark()
            t = time.monotonic()
            try:
                sec = scenario_fn(name)(b)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                where = record_error(out_dir, f"scenario {name}", exc)
                print(f"bench: scenario {name} failed: {one_line(exc)} (traceback in {where})", file=sys.stderr)
                sec = Section(name, name, error=one_line(exc))
                status = 1
            finally:
                b.cleanup(keep=mark)
            sec.seconds = time.monotonic() - t
            sections.append(sec)
            b.say(f"=== {name} {'failed' if sec.error else 'done'} in {sec.seconds:.0f} s")
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        status = 130
    finally:
        b.close()
        if paused is not None:
            try:
                restore_host_switch(paused, lambda text: b.say(f"note: {text}"))
            except OvsError as exc:
                print(f"bench: {one_line(exc, limit=600)}", file=sys.stderr)
                status = status or 1
            except KeyboardInterrupt:
                print(f"bench: interrupted while restarting the host's switch: run {RESTORE_COMMAND}", file=sys.stderr)
                status = 130
    left = leftovers(b, netns_before)
    meta["seconds"] = round(time.monotonic() - b.t0, 1)
    meta["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    meta["hugepages_free_end"] = hugepages_free()
    meta["host_clean"] = not left
    meta["leftovers"] = left

    from tests.bench.report import write_chart, write_table

    results = {"meta": meta, "sections": {s.name: {"title": s.title, "seconds": s.seconds, "error": s.error, "data": s.data,
                                                   "notes": s.notes, "targets": [t.to_dict() for t in s.targets]} for s in sections}}
    (out_dir / "results.json").write_text(json.dumps(clean_json(results), indent=1))
    table = write_table(out_dir / "table.md", meta, sections)
    chart = write_chart(out_dir / "chart.png", sections)
    print()
    print(table)
    print(f"results: {out_dir}/results.json, table.md" + (", chart.png" if chart else " (no chart: matplotlib missing or no data)"))
    if left:
        print("bench: NOT CLEAN: " + "; ".join(left), file=sys.stderr)
        status = status or 1
    return status


def cli() -> int:
    """main(), and anything it did not expect as one line (it has cleaned up by then)."""
    try:
        return main()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(cli())
