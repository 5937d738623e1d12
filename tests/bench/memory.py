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
from collections.abc import Callable
from pathlib import Path

from tests.bench.common import MEMWRAP, PYTHON, Bench, Section, bundle, fmt, hook_entry, hook_script, interleave, runc, summary
from tests.bench.start import FULL, start_ovs


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

    def wrapped(label: str, pre: tuple[str, ...] = ("-I",)) -> dict[str, list[dict[str, object]]]:
        hooks = {}
        for stage in ("createRuntime", "poststop"):
            inner = [PYTHON, *pre, hook_script(PYTHON), stage]
            hooks[stage] = [hook_entry(stage, env.config_path, cache, pre=("-I",),
                                       program=(MEMWRAP, out, f"{label} {stage}", "--", *inner[:-1]))]
        return hooks

    bundles = {
        "fast path": bundle(bdir / "fast", ["/bin/true"], {}, wrapped("fast path")),
        "full path": bundle(bdir / "full", ["/bin/true"], FULL, wrapped("full path")),
        "full path, cold bytecode": bundle(bdir / "cold", ["/bin/true"], FULL,
                                           wrapped("full path, cold bytecode", ("-I", "-B", "-X", f"pycache_prefix={empty}"))),
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
    sec.table("Peak resident set (ru_maxrss via wait4, MiB)", ["process", "median", "max", "over the interpreter", "n"], rows)
    return sec
