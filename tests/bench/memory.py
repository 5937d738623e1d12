"""Scenario 7: peak memory of the hook process.

The hook is registered through ``memwrap.py``, which runs the unchanged
hook as registered (``python3 -I .../hook/__main__.py STAGE``) and reads its peak resident set from ``wait4`` (the hook's own,
or that of a child it reaped, e.g. its forked mount helper, if larger).  Variants,
interleaved: the bare interpreter, the fast path, the full path's createRuntime and
poststop, and the full path with a cold bytecode cache.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.common import MEMWRAP, PYTHON, Bench, Section, Target, bundle, fmt, hook_entry, hook_script, interleave, runc, summary
from tests.bench.start import FULL, agent_env, no_agent_env, start_agent, start_ovs

RSS_LIMIT_MIB = 20.0


def _vm_kib(pid: int, field: str) -> float:
    """VmHWM / VmRSS of a process, kB (nan when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def _agent_pid(socket_path: str) -> int:
    """The pid of the agent listening on ``socket_path`` (its first log line names it)."""
    log = Path(socket_path).with_suffix(".log")
    for _ in range(100):
        for line in log.read_text().splitlines():
            if "listening on" in line and "(pid " in line:
                return int(line.rsplit("(pid ", 1)[1].rstrip(")"))
        time.sleep(0.05)
    raise RuntimeError(f"the agent's pid is not in {log}")


def run_memory(b: Bench) -> Section:
    sec = Section("memory", "Peak memory of the hook process (scenario 7)")
    runs = 4 if b.quick else 10
    ovs = start_ovs(b)
    env = b.hook_env("memory", ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-bench", pool="0", reserved="1", budget="512Mi")
    cache = str(env.root / "cache")
    out = str(env.root / "rss.jsonl")
    empty = b.dir("memory/empty-pycache")
    root = b.runc_root("runc-memory")
    bdir = b.dir("bundles-memory")

    agent = start_agent(b, "memory")
    agent_pid = _agent_pid(agent)
    in_process = no_agent_env(b)

    def wrapped(label: str, pre: tuple[str, ...] = ("-I",), extra_env: tuple[str, ...] = in_process) -> dict[str, list[dict[str, object]]]:
        hooks = {}
        for stage in ("createRuntime", "poststop"):
            inner = [PYTHON, *pre, hook_script(PYTHON), stage]
            hooks[stage] = [hook_entry(stage, env.config_path, cache, pre=("-I",), extra_env=extra_env,
                                       program=(MEMWRAP, out, f"{label} {stage}", "--", *inner[:-1]))]
        return hooks

    bundles = {
        "fast path": bundle(bdir / "fast", ["/bin/true"], {}, wrapped("fast path")),
        "full path": bundle(bdir / "full", ["/bin/true"], FULL, wrapped("full path")),
        "full path, cold bytecode": bundle(bdir / "cold", ["/bin/true"], FULL,
                                           wrapped("full path, cold bytecode", ("-I", "-B", "-X", f"pycache_prefix={empty}"))),
        "full path, through the agent (the hook process only)": bundle(
            bdir / "agent", ["/bin/true"], FULL, wrapped("full path, through the agent (the hook process only)",
                                                         extra_env=agent_env(agent))),
    }
    counter = [0]

    def container(path: str) -> float:
        counter[0] += 1
        runc(root, "run", "--bundle", path, f"mem{counter[0]}")
        runc(root, "delete", "--force", f"mem{counter[0]}")
        return 0.0

    def interpreter() -> float:
        subprocess.run([PYTHON, "-I", MEMWRAP, out, "interpreter (python -I -c pass)", "--", PYTHON, "-I", "-c", "pass"],
                       check=False, timeout=60, cwd="/")
        return 0.0

    variants: dict[str, Callable[[], float]] = {name: functools.partial(container, path) for name, path in bundles.items()}
    variants["interpreter"] = interpreter
    b.say(f"memory: {len(variants)} variants x {runs} runs, interleaved")
    # warm-up rounds are recorded too: drop the first record of each label
    interleave(variants, runs, warmup=1)
    records = [json.loads(line) for line in Path(out).read_text().splitlines()] if os.path.exists(out) else []
    by: dict[str, list[float]] = {}
    seen: set[str] = set()
    for r in records:
        if r["label"] not in seen:
            seen.add(r["label"])
            continue
        by.setdefault(r["label"], []).append(float(r["maxrss_kib"]))
    stats = {label: summary(vals) for label, vals in by.items()}
    order = sorted(stats, key=lambda k: (not k.startswith("interp"), k))
    sec.data = {"runs": runs, "stats_kib": {k: stats[k] for k in order}, "samples_kib": by,
                "failed": [r for r in records if r.get("rc")][:5]}
    base = stats.get("interpreter (python -I -c pass)", {}).get("median")
    rows = [[k, fmt(stats[k]["median"] / 1024, 1), fmt(stats[k]["max"] / 1024, 1),
             fmt((stats[k]["median"] - base) / 1024 if base else None, 1), str(stats[k]["n"])] for k in order]
    agent_hwm, agent_rss = _vm_kib(agent_pid, "VmHWM"), _vm_kib(agent_pid, "VmRSS")
    rows.append(["the agent itself (resident; VmHWM, VmRSS at the end)", fmt(agent_hwm / 1024, 1), fmt(agent_rss / 1024, 1), "-", "1"])
    sec.data["agent_kib"] = {"vm_hwm": agent_hwm, "vm_rss": agent_rss}
    sec.table("Peak resident set (ru_maxrss via wait4, MiB; the hook as installed here, editable)",
              ["process", "median", "max", "over the interpreter", "n"], rows)
    judged = {k: v["max"] for k, v in stats.items() if k.startswith(("fast path", "full path createRuntime", "full path poststop"))}
    worst = max(judged, key=lambda k: judged[k]) if judged else None
    sec.targets.append(Target(
        "hook_peak_rss", "peak RSS of the hook process (worst run of the fast path and the full path's stages, in-process, warm bytecode)",
        judged[worst] / 1024 if worst else None, RSS_LIMIT_MIB, "MiB", "<=",
        note=(f"worst: {worst}; " if worst else "") + ", ".join(
            f"{k} {fmt(stats[k]['max'] / 1024, 1)}" for k in order if k not in judged) + " MiB (max)"))
    return sec
