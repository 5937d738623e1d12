"""Scenarios 1-4: what the hook adds to a container start, and where that time goes.

``start``: ``runc run`` of ``/bin/true`` (host /usr bound into an empty rootfs) with no hook,
with the hook but no annotations of ours (the fast path), and with 1 port + 1 core + 64Mi
hugepages on a private OVS-DPDK (the full path), the latter with the hook running the stages
in-process and handing them to a resident ``dpdk-oci-hook agent`` on a private socket; beside them, the bare interpreter start
and the hook's fast path spawned directly.  ``runc run`` runs both hook stages
(createRuntime when creating, poststop when it deletes the exited container), so a
container's time holds two hook processes.  Each variant also runs from a regular
(non-editable) install of the same code, since an editable install's import finder adds
its own cost to every interpreter start.

``phases``: the full path's stages run by ``probe.py`` (the unchanged hook with timers around
each side-effect module), warm and with a cold bytecode cache; interpreter start measured
beside them; and ``python -X importtime`` of the hot path's modules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.bench.common import (
    PROBE,
    PYTHON,
    REPO,
    Bench,
    P,
    Section,
    Target,
    bundle,
    fmt,
    fs_type,
    hook_entry,
    hook_script,
    interleave,
    median,
    ms_since,
    paired_diff,
    runc,
    summary,
)
from tests.helpers.hook_client import build_client
from tests.helpers.hook_env import make_env
from tests.helpers.ovs_instance import OvsInstance

FULL = {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "64Mi"}
FOREIGN = {"org.example/team": "bench"}
HOT_IMPORTS = ("hook.stage.run", "hook.errors", "hook.stage.oci", "hook.config", "hook.stage.lifecycle", "hook.stage.eventlog", "hook.host.cgroups",
               "hook.host.hugepages", "hook.host.mounts", "hook.host.topology", "hook.switch.ovs")


def start_ovs(b: Bench) -> OvsInstance:
    ovs = OvsInstance()
    b.on_cleanup("OVS instance", ovs.stop)
    ovs.start()
    return ovs


AGENT_ENV = "DPDK_OCI_HOOK_AGENT_SOCKET"


def start_agent(b: Bench, name: str) -> str:
    """``dpdk-oci-hook agent`` on a private socket for this scenario; the socket's path.

    Hook entries reach it with ``DPDK_OCI_HOOK_AGENT_SOCKET=<path>`` in their env; entries
    meant to run in-process get :func:`no_agent_env` instead, so an agent the host runs
    (install.sh's service on the default socket) never serves them.
    """
    path = str(b.dir("agents") / f"{name}.sock")
    log = open(b.dir("agents") / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
    b.on_cleanup(f"agent log {name}", log.close)
    b.popen([os.path.join(os.path.dirname(PYTHON), "dpdk-oci-hook"), "agent", "--socket", path], f"agent {name}",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/")
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not listen on {path} within 30 s (log: {log.name})")
        time.sleep(0.05)
    return path


def agent_env(path: str) -> tuple[str]:
    return (f"{AGENT_ENV}={path}",)


def no_agent_env(b: Bench) -> tuple[str]:
    """An agent socket that does not exist: the hook runs the stage itself."""
    return (f"{AGENT_ENV}={b.work}/no-agent.sock",)


def regular_install(b: Bench) -> str:
    """A throw-away venv holding a plain (non-editable) compiled copy of hook/, as install.sh makes it.

    The hot path needs no third-party package (the config is read from its JSON cache), so
    the copy is enough for the hook stages.  Returns its interpreter.
    """
    venv = b.work / "regular-venv"
    python = str(venv / "bin" / "python3")
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if (site / "hook").is_dir():
        return python  # made by an earlier scenario of this run
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    shutil.copytree(REPO / "hook", site / "hook", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([python, "-m", "compileall", "-q", str(site)], check=True, timeout=120)
    return python


def spawn_timer(argv: Sequence[str], stdin: bytes, env: dict[str, str], failures: list[str]) -> Callable[[], float]:
    def run() -> float:
        t = time.perf_counter()
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, env=env, cwd="/", timeout=60)
        ms = ms_since(t)
        if proc.returncode != 0:
            failures.append(f"{' '.join(argv[-3:])}: exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
        return ms

    return run


class RuncTimer:
    """``runc run`` of one bundle to its end, timed; the exited container is deleted untimed."""

    def __init__(self, root: str, bundle_path: str, prefix: str, failures: list[str]) -> None:
        self.root, self.bundle, self.prefix, self.failures = root, bundle_path, prefix, failures
        self.count = 0
        self.ids: list[str] = []

    def __call__(self) -> float:
        self.count += 1
        cid = f"{self.prefix}{self.count}"
        self.ids.append(cid)
        t = time.perf_counter()
        proc = runc(self.root, "run", "--bundle", self.bundle, cid)
        ms = ms_since(t)
        if proc.returncode != 0:
            self.failures.append(f"{cid}: runc exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        runc(self.root, "delete", "--force", cid)
        return ms


TMPFS_VARIANT = "full path, agent, native client, state on tmpfs"


def run_start(b: Bench) -> Section:
    sec = Section("start", "Container start: runc run /bin/true (scenarios 1-3)")
    runs = 10 if b.quick else 40
    ovs = start_ovs(b)
    env = b.hook_env("start", ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-bench", pool="0", reserved="1", budget="512Mi")
    # install.sh puts the default state dir on its own tmpfs: the same full path with the state there
    tmpfs = b.dir("start-tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(tmpfs)], check=True, timeout=30)
    b.on_cleanup(f"tmpfs {tmpfs}", lambda: subprocess.run(["umount", "-l", str(tmpfs)], check=True, timeout=30))
    env_tmpfs = make_env(tmpfs, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-bench", pool="0", reserved="1", budget="512Mi")
    b.config_paths.append(env_tmpfs.config_path)
    state_fs = fs_type(env.root)
    cache = str(env.root / "cache")
    regular = regular_install(b)
    root = b.runc_root("runc-start")
    failures: list[str] = []

    agent = start_agent(b, "start")
    in_process, via_agent = no_agent_env(b), agent_env(agent)

    client = build_client(b.dir("client"))

    def hooks(python: str, extra_env: tuple[str, ...] = in_process, native: bool = False,
              config_path: str = env.config_path) -> dict[str, list[dict[str, Any]]]:
        return {stage: [hook_entry(stage, config_path, cache, python=python, extra_env=extra_env, client=client if native else None)]
                for stage in ("createRuntime", "poststop")}

    bdir = b.dir("bundles-start")
    bundles = {
        "no hook": bundle(bdir / "bare", ["/bin/true"], {}, {}),
        "fast path (no annotations)": bundle(bdir / "fast", ["/bin/true"], {}, hooks(PYTHON)),
        "fast path (foreign annotations)": bundle(bdir / "foreign", ["/bin/true"], FOREIGN, hooks(PYTHON)),
        "full path, in-process": bundle(bdir / "full", ["/bin/true"], FULL, hooks(PYTHON)),
        "full path, agent": bundle(bdir / "full-agent", ["/bin/true"], FULL, hooks(PYTHON, via_agent)),
        "fast path (no annotations), regular install": bundle(bdir / "fast-reg", ["/bin/true"], {}, hooks(regular)),
        "full path, in-process, regular install": bundle(bdir / "full-reg", ["/bin/true"], FULL, hooks(regular)),
        "full path, agent, regular install": bundle(bdir / "full-agent-reg", ["/bin/true"], FULL, hooks(regular, via_agent)),
        "fast path (no annotations), native client": bundle(bdir / "fast-native", ["/bin/true"], {}, hooks(regular, native=True)),
        "full path, in-process, native client": bundle(bdir / "full-native", ["/bin/true"], FULL, hooks(regular, native=True)),
        "full path, agent, native client": bundle(bdir / "full-agent-native", ["/bin/true"], FULL, hooks(regular, via_agent, native=True)),
        TMPFS_VARIANT: bundle(bdir / "full-agent-native-tmpfs", ["/bin/true"], FULL,
                              hooks(regular, via_agent, native=True, config_path=env_tmpfs.config_path)),
    }
    variants: dict[str, Callable[[], float]] = {}
    for i, (name, path) in enumerate(bundles.items()):
        variants["runc: " + name] = RuncTimer(root, path, f"st{i}-", failures)
    spawn_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG": env.config_path, "DPDK_OCI_HOOK_CACHE_DIR": cache,
                 AGENT_ENV: in_process[0].split("=", 1)[1]}
    no_ann = json.dumps({"ociVersion": "1.0.2-dev", "id": "fast", "status": "creating", "pid": 1,
                         "bundle": bundles["fast path (no annotations)"]}).encode()
    foreign = json.dumps({"ociVersion": "1.0.2-dev", "id": "fast", "status": "creating", "pid": 1,
                          "bundle": bundles["fast path (foreign annotations)"], "annotations": FOREIGN}).encode()
    for label, python in (("", PYTHON), (", regular install", regular)):
        variants["spawn: python -I -c pass" + label] = spawn_timer([python, "-I", "-c", "pass"], b"", spawn_env, failures)
        variants["spawn: hook fast path (no annotations)" + label] = spawn_timer(
            [python, "-I", hook_script(python), "createRuntime"], no_ann, spawn_env, failures)
        variants["spawn: hook fast path (foreign annotations)" + label] = spawn_timer(
            [python, "-I", hook_script(python), "createRuntime"], foreign, spawn_env, failures)
    variants["spawn: native client fast path (foreign annotations), regular install"] = spawn_timer(
        [client, regular, "-I", hook_script(regular), "createRuntime"], foreign, spawn_env, failures)
    # the baseline: the form registered before (python3 -I -m hook STAGE), which pays for runpy
    variants["spawn: hook fast path (foreign annotations), regular install, -m hook"] = spawn_timer(
        [regular, "-I", "-m", "hook", "createRuntime"], foreign, spawn_env, failures)

    b.say(f"start: {len(variants)} variants x {runs} runs, interleaved")
    samples = interleave(variants, runs, warmup=3)
    stats = {name: summary(vals) for name, vals in samples.items()}
    bare = samples["runc: no hook"]
    added = {name: summary(paired_diff(vals, bare)) for name, vals in samples.items() if name.startswith("runc: ")}
    for name in samples:
        if name.startswith(("spawn: hook", "spawn: native")):
            ref = "spawn: python -I -c pass" + (", regular install" if "regular install" in name else "")
            added[name] = summary(paired_diff(samples[name], samples[ref]))
    sec.data = {"runs": runs, "samples_ms": samples, "stats_ms": stats, "added_ms": added, "failures": failures[:20],
                "failure_count": len(failures), "ovs_rundir": ovs.rundir}
    # the hook's own account of createRuntime (reserve, mounts, switch, cgroups: its "prestart done" ms),
    # in-process and in the agent's child, to tell the stage's work from the process around it
    prefix_of = {timer.prefix: name for name, timer in variants.items() if isinstance(timer, RuncTimer)}
    prestart: dict[str, list[float]] = {}
    for ev in [*env.events(), *env_tmpfs.events()]:
        cid = str(ev.get("container_id", ""))
        if ev.get("event") == "prestart done" and "-" in cid:
            variant = prefix_of.get(cid.split("-", 1)[0] + "-")
            if variant is not None:
                prestart.setdefault(variant, []).append(float(ev["ms"]))  # type: ignore[arg-type]
    sec.data["prestart_done_ms"] = {name: summary(vals) for name, vals in prestart.items()}
    if prestart:
        sec.table("createRuntime as the hook logs it ('prestart done' ms: reserve, mounts, switch, cgroups; without the "
                  "interpreter, imports and the agent round trip), all runs", ["variant", "median", "p95", "n"],
                  [[name, fmt(st["median"]), fmt(st["p95"]), str(st["n"])] for name, st in sec.data["prestart_done_ms"].items()])
    rows = []
    for name in samples:
        ref = "runc: no hook" if name.startswith("runc: ") else (
            "spawn: python -I -c pass" + (", regular install" if "regular install" in name else ""))
        add = "" if name == ref else fmt(added[name]["median"], 1)
        ratio = fmt(added[name]["median"] / stats[ref]["median"], 2) + "x" if add and stats[ref]["median"] else "-"
        rows.append([name, fmt(stats[name]["median"]), fmt(stats[name]["p95"]), fmt(stats[name]["min"]), add or "-", ratio,
                     ref.split(": ", 1)[1]])
    sec.table("Container start and hook process (ms; 'added' = median of per-round differences to the reference, same round; "
              "'/ ref' = added over the reference's own median; 'in-process' = no agent socket, 'agent' = through "
              "`dpdk-oci-hook agent` on a private socket)",
              ["variant", "median", "p95", "min", "added", "/ ref", "reference"], rows)

    runc_bare = stats["runc: no hook"]["median"]
    # judged on the regular install, what install.sh gives users: an editable install's
    # interpreter already imports re (its import finder), which hides what the hook imports
    fast_worst = max(added["spawn: hook fast path (no annotations), regular install"]["median"],
                     added["spawn: hook fast path (foreign annotations), regular install"]["median"])
    sec.targets.append(Target(
        "fast_path_over_interpreter",
        "fast path: hook process minus bare `python -I -c pass`, regular install (worse of no/foreign annotations)",
        fast_worst, 3.0, "ms", "<=",
        note=(f"regular install: no annotations {fmt(added['spawn: hook fast path (no annotations), regular install']['median'])} ms, "
              f"foreign {fmt(added['spawn: hook fast path (foreign annotations), regular install']['median'])} ms; foreign via the "
              f"earlier `-m hook` form {fmt(added['spawn: hook fast path (foreign annotations), regular install, -m hook']['median'])} ms; "
              f"editable: no annotations {fmt(added['spawn: hook fast path (no annotations)']['median'])} ms, foreign "
              f"{fmt(added['spawn: hook fast path (foreign annotations)']['median'])} ms")))
    ratios: dict[str, float | None] = {}
    for how in ("in-process", "agent"):
        reg = added[f"runc: full path, {how}, regular install"]["median"]
        edit = added[f"runc: full path, {how}"]["median"]
        ratios[how] = reg / runc_bare if runc_bare else None
        ratios[how + ", editable"] = edit / runc_bare if runc_bare else None
        sec.targets.append(Target(
            f"full_path_ratio_{how.replace('-', '_')}",
            f"full path, {'hook in-process' if how == 'in-process' else 'hook through the agent'}: hook-added time / plain "
            "`runc run /bin/true` (1 port, 1 core, 64Mi; createRuntime + poststop; median of per-round differences; regular install)",
            ratios[how], 1.0, "x", "<=",
            note=(f"added {fmt(reg)} ms on runc's own {fmt(runc_bare)} ms; editable install: added {fmt(edit)} ms "
                  f"= {fmt(ratios[how + ', editable'], 2)}x")))
    native = added["runc: full path, agent, native client"]["median"]
    ratios["agent, native client"] = native / runc_bare if runc_bare else None
    sec.targets.append(Target(
        "full_path_ratio_native_agent",
        "full path through the native client and the agent (install.sh's default where systemd runs the agent): hook-added "
        "time / plain `runc run /bin/true` (regular install)",
        ratios["agent, native client"], 1.0, "x", "<=",
        note=(f"added {fmt(native)} ms on runc's own {fmt(runc_bare)} ms; without the agent (the client runs the Python hook): "
              f"added {fmt(added['runc: full path, in-process, native client']['median'])} ms; not ours: "
              f"{fmt(added['runc: fast path (no annotations), native client']['median'])} ms")))
    on_tmpfs = added["runc: " + TMPFS_VARIANT]["median"]
    ratios["agent, native client, state on tmpfs"] = on_tmpfs / runc_bare if runc_bare else None
    sec.targets.append(Target(
        "full_path_ratio_native_agent_tmpfs",
        "the same, the state dir on its own tmpfs as install.sh sets up the default one (regular install)",
        ratios["agent, native client, state on tmpfs"], 1.0, "x", "<=",
        note=f"added {fmt(on_tmpfs)} ms on runc's own {fmt(runc_bare)} ms; the row above has the state dir on {state_fs}"))
    sec.data["full_path_ratio"] = ratios
    sec.data["state_fs"] = state_fs
    sec.data["agent_socket"] = agent
    if failures:
        sec.notes.append(f"{len(failures)} run(s) failed; first: {failures[0]}")
    return sec


# --- scenario 4: the breakdown ----------------------------------------------------------------

PHASE_ORDER = ("interpreter start", "imports", "parse", "config", "ledger", "ledger write+fsync", "allocate+plan", "hugepages",
               "socket dir", "mounts", "switch", "cgroups", "log", "other")


def parse_importtime(text: str) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) per line of ``-X importtime`` output."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
    return rows


def importtime(b: Bench, python: str, argv_tail: Sequence[str], stdin: bytes, env: dict[str, str], runs: int, cold: bool) -> dict[str, Any]:
    """Median self and cumulative import time per module over ``runs`` runs."""
    pre = ["-I", "-X", "importtime"]
    if cold:
        pre += ["-B", "-X", f"pycache_prefix={b.dir('phases/empty-pycache')}"]
    selfs: dict[str, list[int]] = {}
    cums: dict[str, list[int]] = {}
    depth: dict[str, int] = {}
    for _ in range(runs):
        proc = subprocess.run([python, *pre, *argv_tail], input=stdin, capture_output=True, env=env, cwd="/", timeout=60)
        for name, s, c, d in parse_importtime(proc.stderr.decode(errors="replace")):
            selfs.setdefault(name, []).append(s)
            cums.setdefault(name, []).append(c)
            depth[name] = d
    mods = {n: {"self_ms": median(selfs[n]) / 1000, "cumulative_ms": median(cums[n]) / 1000, "depth": depth[n]} for n in selfs}
    return {"runs": runs, "cold": cold, "modules": mods}


def run_phases(b: Bench) -> Section:
    sec = Section("phases", "Full path by phase, warm and cold bytecode (scenario 4)")
    runs = 8 if b.quick else 24
    ovs = start_ovs(b)
    env = b.hook_env("phases", ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-bench", pool="0", reserved="1", budget="512Mi")
    cache = str(env.root / "cache")
    out = str(env.root / "probe.jsonl")
    empty = b.dir("phases/empty-pycache")
    cold_pre = ("-I", "-B", "-X", f"pycache_prefix={empty}")
    regular = regular_install(b)
    root = b.runc_root("runc-phases")
    failures: list[str] = []
    bdir = b.dir("bundles-phases")

    def hooks(python: str, pre: Sequence[str], label: str) -> dict[str, list[dict[str, Any]]]:
        return {stage: [hook_entry(stage, env.config_path, cache, python=python, pre=pre, program=(PROBE,),
                                   extra_env=(f"BENCH_PROBE_OUT={out}", f"BENCH_PROBE_LABEL={label}"))]
                for stage in ("createRuntime", "poststop")}

    kinds = {  # label -> (interpreter, flags)
        "warm": (PYTHON, ("-I",)),
        "cold": (PYTHON, cold_pre),
        "warm, regular install": (regular, ("-I",)),
    }
    timers: dict[str, RuncTimer] = {}
    variants: dict[str, Callable[[], float]] = {}
    spawn_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for i, (label, (python, pre)) in enumerate(kinds.items()):
        timers[label] = RuncTimer(root, bundle(bdir / f"k{i}", ["/bin/true"], FULL, hooks(python, pre, label)), f"ph{i}-", failures)
        variants[f"container, {label}"] = timers[label]
        variants[f"interpreter start, {label}"] = spawn_timer([python, *pre, "-c", "pass"], b"", spawn_env, failures)
    b.say(f"phases: {len(variants)} variants x {runs} runs, interleaved")


    warmup = 2
    samples = interleave(variants, runs, warmup=warmup)
    if os.listdir(empty):
        sec.notes.append("the empty pycache prefix was written to: cold runs may not all be cold")
    keep = {cid for t in timers.values() for cid in t.ids[warmup:]}
    records = [json.loads(line) for line in Path(out).read_text().splitlines()] if os.path.exists(out) else []
    records = [r for r in records if r.get("container_id") in keep]
    bad = [r for r in records if r.get("rc")]
    breakdown: dict[str, dict[str, float]] = {}
    for stage in ("createRuntime", "poststop"):
        for label in kinds:
            rs = [r for r in records if r["stage"] == stage and r.get("label") == label]
            if not rs:
                continue
            col: dict[str, float] = {
                "interpreter start": median(samples[f"interpreter start, {label}"]),
                "imports": median([r["imports_ms"] for r in rs]),
            }
            for name in {k for r in rs for k in r["phases_ms"]}:
                col[name] = median([r["phases_ms"].get(name, 0.0) for r in rs])
            col["total (sum of medians)"] = sum(col.values())
            col["stage_ms median"] = median([r["stage_ms"] for r in rs])
            col["maxrss_kib median"] = median([r["maxrss_kib"] for r in rs])
            breakdown[f"{stage}, {label}"] = col
    sec.data = {"runs": runs, "samples_ms": samples, "stats_ms": {k: summary(v) for k, v in samples.items()},
                "breakdown_ms": breakdown, "probe_records": records, "failures": failures[:20], "failed_stages": len(bad)}
    cols = list(breakdown)
    order = [p for p in PHASE_ORDER if any(p in breakdown[c] for c in cols)]
    extra = sorted({k for c in cols for k in breakdown[c]} - set(order) - {"total (sum of medians)", "stage_ms median", "maxrss_kib median"})
    rows = [[phase, *(fmt(breakdown[c].get(phase), 2) for c in cols)] for phase in [*order, *extra]]
    rows.append(["**total**", *(f"**{fmt(breakdown[c]['total (sum of medians)'], 1)}**" for c in cols)])
    sec.table("One hook process by phase (ms, medians; each phase exclusive of the phases it calls; "
              "'regular install' = the same code installed without --editable)", ["phase", *cols], rows)
    stats = sec.data["stats_ms"]
    sec.notes.append("whole container with the probe as both hooks (median): " + ", ".join(
        f"{label} {fmt(stats[f'container, {label}']['median'])} ms" for label in kinds))
    if bad:
        sec.notes.append(f"{len(bad)} probed stage(s) returned an error")

    # import-time evidence for the hot path
    b.say("phases: -X importtime")
    it_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG": env.config_path, "DPDK_OCI_HOOK_CACHE_DIR": cache}
    plain = bdir / "plain"  # a bundle whose config.json has no annotations of ours
    plain.mkdir(exist_ok=True)
    (plain / "config.json").write_text(json.dumps({"ociVersion": "1.0.2-dev", "annotations": {}}))
    no_ann = json.dumps({"id": "it", "bundle": str(plain), "pid": 1}).encode()
    foreign = json.dumps({"id": "it", "bundle": str(plain), "pid": 1, "annotations": FOREIGN}).encode()
    n = 3 if b.quick else 7
    hot = ["-c", "import " + ", ".join(HOT_IMPORTS)]
    fast = [hook_script(regular), "createRuntime"]
    imports = {
        "interpreter, regular install": importtime(b, regular, ["-c", "pass"], b"", it_env, n, cold=False),
        "fast path, foreign annotations, regular install": importtime(b, regular, fast, foreign, it_env, n, cold=False),
        "fast path, no annotations, regular install": importtime(b, regular, fast, no_ann, it_env, n, cold=False),
        "full-path modules, regular install": importtime(b, regular, hot, b"", it_env, n, cold=False),
        "interpreter, editable (as installed here)": importtime(b, PYTHON, ["-c", "pass"], b"", it_env, n, cold=False),
        "full-path modules, editable": importtime(b, PYTHON, hot, b"", it_env, n, cold=False),
        "full-path modules, editable, cold": importtime(b, PYTHON, hot, b"", it_env, max(2, n // 2), cold=True),
    }
    sec.data["importtime"] = imports
    for label in ("fast path, no annotations, regular install", "full-path modules, regular install"):
        mods = imports[label]["modules"]
        top = sorted(mods.items(), key=lambda kv: -kv[1]["cumulative_ms"] if kv[1]["depth"] <= 1 else 0)[:14]
        sec.table(f"-X importtime, {label}: imports at depth 0-1 by cumulative time (ms, median of {imports[label]['runs']})",
                  ["module", "cumulative", "self", "depth"],
                  [[name, fmt(v["cumulative_ms"], 2), fmt(v["self_ms"], 2), str(v["depth"])] for name, v in top])
    tops = []
    heads = ("site", "hook.stage.run", "hook.stage.oci", "hook.config", "hook.stage.lifecycle", "hook.host.mounts", "hook.switch.ovs")
    for label, res in imports.items():
        roots = {k: v for k, v in res["modules"].items() if v["depth"] == 0}
        total = sum(v["cumulative_ms"] for v in roots.values())
        tops.append([label, *(fmt(roots.get(m, {}).get("cumulative_ms"), 2) for m in heads), fmt(total, 1)])
    sec.table("-X importtime: cumulative ms of top-level imports", ["run", *heads, "all"], tops)
    if failures:
        sec.notes.append(f"{len(failures)} run(s) failed; first: {failures[0]}")
    return sec
