"""Scenarios 5 and 6: many containers at once, and many ports one after another.

``concurrency``: K = 1, 4, 16 containers started at once (``runc run -d`` each, all launched
together), the hook's state dir on a disk file system (under /var/tmp) or on a tmpfs, the
stages in-process or through the agent, in two kinds, interleaved: "ports" (1 vhost-user
port + 16Mi hugepages: every container gets what it asks, so time to running is comparable
across K) and "cores"
(1 exclusive core each from a pool of both CPUs: more containers than cores, so the
ledger must refuse the extra ones and never give a core twice).  While all are running,
the ledger and the kernel (each container's ``Cpus_allowed_list``) are checked for a core
held twice.  The ledger lock hold time is what the hook logs in its ``reserved`` event
(``lock_held_ms``: from taking the lock to releasing it).

``ports``: N containers (1 port + 2Mi each, ``sleep``) started one after another while all
earlier ones keep running; per add: the OVS transaction time measured inside the hook (the
phase probe), the createRuntime stage, the container start, and a bare ``ovs-vsctl
add-port`` of a scratch port beside it as the control.  OVS's hugepage memory is read from
``/proc/<ovs-vswitchd>/status`` as ports are added, and again as DPDK apps connect to them
(a vhost-user port's mempool is made when its virtio side connects).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hook.admin.demo import testpmd_command
from hook.admin.runc_bundle import RUNC, Container
from tests.bench.common import (
    CONTAINER_IDS,
    PROBE,
    Bench,
    P,
    Section,
    Target,
    bundle,
    container_pid,
    fmt,
    fs_type,
    hook_entry,
    hugepages_free,
    hugetlb_kib,
    median,
    ms_since,
    run_detachable,
    runc,
    summary,
)
from tests.bench.start import agent_env, no_agent_env, start_agent, start_ovs
from tests.helpers.hook_client import build_client
from tests.helpers.hook_env import make_env

PORTS = {P + "vhost-user": "1", P + "hugepages": "16Mi"}
CORES = {P + "cpus": "1"}


def _exit_status(stderr: str) -> int | None:
    m = re.search(r"exit status (\d+)", stderr)
    return int(m.group(1)) if m else None


def _cpus_allowed(pid: int) -> list[int]:
    from hook.units import parse_cpulist

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return sorted(parse_cpulist(line.split(":", 1)[1].strip()))
    return []


def _parallel(argvs: list[list[str]]) -> list[tuple[float, int, str]]:
    """Run the commands at once; (ms from the common start to its exit, exit code, stderr) each."""
    results: list[tuple[float, int, str]] = [(0.0, -1, "")] * len(argvs)
    start = time.perf_counter()

    def one(i: int) -> None:
        proc = run_detachable(argvs[i], timeout=120)
        results[i] = (ms_since(start), proc.returncode, proc.stderr)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(argvs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run_concurrency(b: Bench) -> Section:
    sec = Section("concurrency", "K containers started at once (scenario 5)")
    ks = [1, 4, 16]
    rounds = 2 if b.quick else 5
    ovs = start_ovs(b)
    agent = start_agent(b, "concurrency")
    common = {"ovs_db": ovs.db, "ovs_rundir": ovs.rundir, "bridge": "br-bench", "pool": "0-1", "reserved": "", "budget": "1Gi"}
    # the state dir on a disk file system (ext4 here: a directory under /var/tmp) and on a tmpfs
    disk_root = Path(tempfile.mkdtemp(prefix=f"dpdk-oci-bench{b.tag}-", dir="/var/tmp"))
    b.on_cleanup(f"directory {disk_root}", lambda: shutil.rmtree(disk_root))
    disk_env = make_env(disk_root, **common)  # type: ignore[arg-type]
    b.config_paths.append(disk_env.config_path)
    tmpfs = b.dir("conc-tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(tmpfs)], check=True, timeout=30)
    b.on_cleanup(f"tmpfs {tmpfs}", lambda: subprocess.run(["umount", "-l", str(tmpfs)], check=True, timeout=30))
    tmpfs_env = make_env(tmpfs, **common)  # type: ignore[arg-type]
    b.config_paths.append(tmpfs_env.config_path)
    disk_fs = fs_type(disk_root)
    in_process, via_agent = no_agent_env(b), agent_env(agent)
    # kind -> (annotations, hook config, hook entry env); "agent": the stages go through the agent
    kinds = {
        f"ports, {disk_fs}": (PORTS, disk_env, in_process),
        f"ports, {disk_fs}, agent": (PORTS, disk_env, via_agent),
        "ports, tmpfs": (PORTS, tmpfs_env, in_process),
        "ports, tmpfs, agent": (PORTS, tmpfs_env, via_agent),
        f"cores, {disk_fs}": (CORES, disk_env, in_process),
        f"cores, {disk_fs}, agent": (CORES, disk_env, via_agent),
    }
    fs_of = {kind: "tmpfs" if env is tmpfs_env else disk_fs for kind, (_, env, _) in kinds.items()}
    root = b.runc_root("runc-conc")
    bdir = b.dir("bundles-conc")
    bundles: dict[str, list[str]] = {}
    client = build_client(b.dir("client-conc"))
    for n_kind, (kind, (ann, env, extra)) in enumerate(kinds.items()):
        # through the agent as install.sh registers it: the native client in front
        hooks = {stage: [hook_entry(stage, env.config_path, str(env.root / "cache"), extra_env=extra,
                                    client=client if extra is via_agent else None)]
                 for stage in ("createRuntime", "poststop")}
        bundles[kind] = [bundle(bdir / f"k{n_kind}-{i}", ["/bin/sleep", "300"], ann, hooks) for i in range(max(ks))]
    pool_size = 2
    batches: dict[str, dict[str, Any]] = {}
    violations: list[str] = []
    batch_of: dict[str, str] = {}
    # warm-up: one container of each kind (config cache, bridge creation)
    for n_kind, kind in enumerate(kinds):
        runc(root, "run", "-d", "--bundle", bundles[kind][0], f"warm{n_kind}")
        runc(root, "delete", "--force", f"warm{n_kind}")
    b.say(f"concurrency: K in {ks} x kinds {list(kinds)} x {rounds} rounds")
    for rnd in range(rounds):
        order = [(k, kind) for k in ks for kind in kinds]
        if rnd % 2:
            order.reverse()
        for k, kind in order:
            key = f"{kind} K={k}"
            env = kinds[kind][1]
            ids = [f"k{list(kinds).index(kind)}x{k}r{rnd}n{i}" for i in range(k)]
            for cid in ids:
                batch_of[cid] = key
            CONTAINER_IDS.update(ids)
            argvs = [[RUNC, "--root", root, "run", "-d", "--bundle", bundles[kind][i], ids[i]] for i in range(k)]
            res = _parallel(argvs)
            ok = [i for i, r in enumerate(res) if r[1] == 0]
            refused = [i for i, r in enumerate(res) if r[1] != 0]
            # what the ledger and the kernel say while all of them run
            entries = env.ledger()
            held: dict[int, str] = {}
            for cid, entry in entries.items():
                assert isinstance(entry, dict)
                for cpu in entry.get("cpus", []):
                    if cpu in held:
                        violations.append(f"{key} round {rnd}: ledger gives core {cpu} to {held[cpu]} and {cid}")
                    held[cpu] = cid
            kernel: dict[int, str] = {}
            for i in ok:
                pid = container_pid(root, ids[i])
                entry = entries.get(ids[i])
                want = sorted(entry.get("cpus", [])) if isinstance(entry, dict) else []
                if pid and want:
                    got = _cpus_allowed(pid)
                    if got != want:
                        violations.append(f"{key} round {rnd}: {ids[i]} runs on {got}, ledger says {want}")
                    for cpu in got:
                        if cpu in kernel:
                            violations.append(f"{key} round {rnd}: kernel lets {kernel[cpu]} and {ids[i]} both own core {cpu}")
                        kernel[cpu] = ids[i]
            if kind.startswith("cores") and len(ok) != min(k, pool_size):
                violations.append(f"{key} round {rnd}: {len(ok)} containers got a core from a pool of {pool_size}")
            statuses = sorted({_exit_status(res[i][2]) for i in refused}, key=str)
            t = time.perf_counter()
            _parallel([[RUNC, "--root", root, "delete", "--force", cid] for cid in ids])
            teardown = ms_since(t)
            left = env.ledger()
            if left:
                violations.append(f"{key} round {rnd}: ledger not empty after delete: {sorted(left)}")
            rec = batches.setdefault(key, {"kind": kind, "fs": fs_of[kind], "k": k, "running": [], "makespan": [], "teardown": [], "ok": 0, "refused": 0,
                                           "refusal_status": [], "errors": []})
            rec["running"] += [res[i][0] for i in ok]
            rec["makespan"].append(max((res[i][0] for i in ok), default=float("nan")))
            rec["teardown"].append(teardown)
            rec["ok"] += len(ok)
            rec["refused"] += len(refused)
            rec["refusal_status"] = sorted(set(rec["refusal_status"]) | {s for s in statuses if s is not None})
            if not kind.startswith("cores") and refused:
                rec["errors"].append(res[refused[0]][2].strip()[-300:])
    # the ledger lock, as the hook logged it
    held_ms: dict[str, list[float]] = {}
    cpu_ms: dict[str, list[float]] = {}  # of each hold, the CPU time the holder used (the rest: preempted, or waiting for I/O)
    wait_ms: dict[str, list[float]] = {}
    for env in (disk_env, tmpfs_env):
        for ev in env.events():
            if ev.get("event") == "reserved" and ev.get("container_id") in batch_of:
                key = batch_of[str(ev["container_id"])]
                held_ms.setdefault(key, []).append(float(ev["lock_held_ms"]))  # type: ignore[arg-type]
                cpu_ms.setdefault(key, []).append(float(ev.get("lock_cpu_ms", "nan")))  # type: ignore[arg-type]
                wait_ms.setdefault(key, []).append(float(ev["lock_wait_ms"]))  # type: ignore[arg-type]

    def held_where(fs: str, agent: bool) -> list[float]:
        return [v for key, vals in held_ms.items() for v in vals
                if fs_of[batches[key]["kind"]] == fs and batches[key]["kind"].endswith(", agent") == agent]

    all_held = [v for vals in held_ms.values() for v in vals]
    out: dict[str, Any] = {}
    rows = []
    for key, rec in batches.items():
        out[key] = {
            "kind": rec["kind"], "ledger_fs": rec["fs"], "k": rec["k"], "ok": rec["ok"], "refused": rec["refused"],
            "refusal_exit_status": rec["refusal_status"],
            "running_ms": summary(rec["running"]), "makespan_ms": summary(rec["makespan"]), "teardown_ms": summary(rec["teardown"]),
            "lock_held_ms": summary(held_ms.get(key, [])), "lock_wait_ms": summary(wait_ms.get(key, [])),
            "lock_cpu_ms": summary(cpu_ms.get(key, [])),
            "longest_holds_ms": sorted(zip(held_ms.get(key, []), cpu_ms.get(key, []), strict=True), reverse=True)[:3],
            "running_samples_ms": rec["running"], "errors": rec["errors"][:3],
        }
        o = out[key]
        rows.append([key, f"{rec['ok']}/{rec['ok'] + rec['refused']}", fmt(o["running_ms"]["median"]), fmt(o["running_ms"]["p95"]),
                     fmt(o["makespan_ms"]["median"]), fmt(o["teardown_ms"]["median"]), fmt(o["lock_held_ms"]["median"], 2),
                     fmt(o["lock_held_ms"]["p99"], 2), fmt(o["lock_wait_ms"]["median"], 1), fmt(o["lock_wait_ms"]["max"], 1)])
    rows.sort(key=lambda r: (r[0].rsplit(" K=", 1)[0], int(r[0].rsplit("=", 1)[1])))
    sec.data = {"ks": ks, "rounds": rounds, "pool": "0-1", "kinds": list(kinds), "batches": out, "lock_held_ms": summary(all_held),
                "lock_held_samples_ms": all_held, "violations": violations, "state_fs": fs_of, "agent_socket": agent,
                "lock_held_by_fs_ms": {f"{fs}{', agent' if a else ''}": summary(held_where(fs, a))
                                       for fs in (disk_fs, "tmpfs") for a in (False, True)}}
    sec.table(f"K containers launched together, {rounds} rounds each, interleaved (ms; 'running' = from the common launch "
              "until that container's `runc run -d` returned; lock from the hook's `reserved` events)",
              ["batch", "started", "running median", "running p95", "all K running (median)", "delete all", "lock held median",
               "lock held p99", "lock wait median", "lock wait max"], rows)
    sec.notes.append("'cores': 1 exclusive core each from a pool of 2 CPUs; the containers beyond 2 are refused "
                     f"(exit status {sorted({s for r in out.values() for s in r['refusal_exit_status']}) or '-'} = not enough cores) "
                     "and leave nothing behind.")
    sec.notes.append("lock held (as the hook logs it in its `reserved` event) = from taking the ledger lock to releasing it: "
                     "read the ledger and its journal, check, allocate, append the change (its fdatasync follows the release); "
                     "the wait for the lock is 'lock wait'. A target's note gives the longest hold with the CPU time the "
                     "holder used in it (the rest it waited: preempted, or for I/O).")
    sec.notes.append(f"state dir on {disk_fs} (a directory under /var/tmp) or on a private tmpfs; 'agent' = the stages go "
                     "through the native client to `dpdk-oci-hook agent` (forked children, everything imported), as install.sh "
                     "registers the hook; else the Python hook runs them in-process.")

    def by_k(fs: str, agent: bool) -> str:
        return ", ".join(f"{k}: " + fmt(summary([v for key, vals in held_ms.items() if batches[key]["k"] == k
                                                  and fs_of[batches[key]["kind"]] == fs
                                                  and batches[key]["kind"].endswith(", agent") == agent for v in vals])["p99"], 1)
                         for k in ks)

    for fs in (disk_fs, "tmpfs"):
        for agent_used in (False, True):
            vals = held_where(fs, agent_used)
            st = summary(vals)
            pairs = [pair for key, rec in out.items() if rec["ledger_fs"] == fs and rec["kind"].endswith(", agent") == agent_used
                     for pair in rec["longest_holds_ms"]]
            longest = max(pairs, default=(float("nan"), float("nan")))
            how = "through the agent" if agent_used else "in-process"
            sec.targets.append(Target(
                f"lock_p99_{fs}_{'agent' if agent_used else 'in_process'}",
                f"ledger lock hold p99, K = {', '.join(map(str, ks))} at once, state dir on {fs}, hook {how}",
                st["p99"], 10.0, "ms", "<=",
                note=f"{len(vals)} reservations, median {fmt(st['median'], 2)} ms, max {fmt(st['max'], 2)} ms; "
                     f"p99 by K: {by_k(fs, agent_used)} ms; longest {fmt(longest[0], 2)} ms with {fmt(longest[1], 2)} ms of CPU"))
    sec.targets.append(Target("no_double_core", "cores handed out twice (ledger or kernel affinity), or refusals that left state",
                              float(len(violations)), 0, "cases", "<=", note="; ".join(violations[:3])))
    return sec


# --- scenario 6 ---------------------------------------------------------------------------


def _link_up(ovs: Any, name: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ovs.vsctl("get", "Interface", name, "link_state", wait=False).strip() == "up":
                return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def run_ports(b: Bench) -> Section:
    sec = Section("ports", "Ports added one after another (scenario 6)")
    n = 16 if b.quick else 64
    edge = 4 if b.quick else 8
    ovs = start_ovs(b)
    vswitchd = ovs.pid("ovs-vswitchd")
    assert vswitchd is not None
    env = b.hook_env("ports", ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-bench", pool="0", reserved="1", budget="1Gi")
    cache = str(env.root / "cache")
    out = str(env.root / "probe.jsonl")
    root = b.runc_root("runc-ports")
    probe_env = (f"BENCH_PROBE_OUT={out}",)
    hooks = {stage: [hook_entry(stage, env.config_path, cache, program=(PROBE,), extra_env=probe_env)] for stage in ("createRuntime", "poststop")}
    bdir = b.dir("bundles-ports")
    ann = {P + "vhost-user": "1", P + "hugepages": "2Mi"}
    bundles = [bundle(bdir / f"p{i}", ["/bin/sleep", "600"], ann, hooks) for i in range(n)]
    # warm-up (config cache, bridge)
    runc(root, "run", "-d", "--bundle", bundles[0], "pwarm")
    runc(root, "delete", "--force", "pwarm")
    checkpoints = {1, 2, 4, 8, 16, 32, 64, n}
    memory = [{"ports": 0, "ovs_hugetlb_mib": hugetlb_kib(vswitchd) / 1024}]
    run_ms: list[float] = []
    vsctl_ms: list[float] = []
    failures: list[str] = []
    ids = [f"port{i}" for i in range(n)]
    b.say(f"ports: {n} containers one after another")

    def control() -> float:
        t = time.perf_counter()
        ovs.vsctl("add-port", "br-bench", "scratch", "--", "set", "Interface", "scratch", "type=dpdkvhostuserclient",
                  f"options:vhost-server-path={b.work}/scratch.sock", wait=False)
        ms = ms_since(t)
        ovs.vsctl("del-port", "br-bench", "scratch", wait=False)
        return ms

    for i in range(n):
        if i % 2:
            vsctl_ms.append(control())
        t = time.perf_counter()
        proc = runc(root, "run", "-d", "--bundle", bundles[i], ids[i])
        run_ms.append(ms_since(t))
        if proc.returncode != 0:
            failures.append(f"{ids[i]}: {proc.stderr.strip()[-300:]}")
        if not i % 2:
            vsctl_ms.append(control())
        if i + 1 in checkpoints:
            memory.append({"ports": i + 1, "ovs_hugetlb_mib": hugetlb_kib(vswitchd) / 1024})
    owned = ovs.vsctl("--bare", "--columns=name", "find", "Interface", 'external_ids:dpdk-oci-hook-owner!=""', wait=False).split()
    remove_ms: list[float] = []
    for cid in reversed(ids):
        t = time.perf_counter()
        runc(root, "delete", "--force", cid)
        remove_ms.append(ms_since(t))
    remove_ms.reverse()
    records = [json.loads(line) for line in Path(out).read_text().splitlines()] if os.path.exists(out) else []
    by_id = {(r["container_id"], r["stage"]): r for r in records}
    per_add = []
    for i, cid in enumerate(ids):
        rec = by_id.get((cid, "createRuntime"), {})
        rem = by_id.get((cid, "poststop"), {})
        phases = rec.get("phases_ms", {})
        ledger = sum(phases.get(k, 0.0) for k in ("ledger", "ledger write+fsync", "allocate+plan")) if phases else None
        per_add.append({"port": i + 1, "run_ms": run_ms[i], "vsctl_ms": vsctl_ms[i] if i < len(vsctl_ms) else None,
                        "switch_ms": phases.get("switch"), "ledger_ms": ledger, "ledger_fsync_ms": phases.get("ledger write+fsync"),
                        "stage_ms": rec.get("stage_ms"),
                        "delete_ms": remove_ms[i], "remove_switch_ms": rem.get("phases_ms", {}).get("switch")})

    def growth(key: str) -> tuple[float, float, float]:
        vals = [r[key] for r in per_add if r[key] is not None]
        first, last = median(vals[:edge]), median(vals[-edge:])
        return first, last, last / first if first else float("nan")

    rows = []
    growths: dict[str, tuple[float, float, float]] = {}
    for key, label in (("switch_ms", "hook's OVS transaction (in the hook)"), ("ledger_ms", "ledger: lock, read, allocate, write, fsync (in the hook)"),
                       ("ledger_fsync_ms", "of which JSON write + fsync (in the hook)"),
                       ("stage_ms", "createRuntime stage (in the hook)"),
                       ("run_ms", "`runc run -d` of the container"), ("vsctl_ms", "control: bare `ovs-vsctl add-port`"),
                       ("remove_switch_ms", "poststop OVS removal (in the hook)"), ("delete_ms", "`runc delete` (poststop)")):
        growths[key] = growth(key)
        f, la, g = growths[key]
        rows.append([label, fmt(f, 2), fmt(la, 2), fmt(g, 2)])
    sec.table(f"{n} ports, one container each, added one after another (ms; median of the first {edge} and last {edge})",
              ["per add", f"first {edge}", f"last {edge}", "last/first"], rows)

    # hugepage memory of OVS as DPDK apps connect (the mempool is made on connection)
    connected: list[dict[str, Any]] = []
    mempool_lines: list[str] = []
    apps = 2
    need_pages = 400 + apps * 32
    if hugepages_free() < need_pages:
        sec.notes.append(f"connected-port memory skipped: {hugepages_free()} free 2 MiB pages, want {need_pages}")
    else:
        b.say("ports: OVS hugepage memory as DPDK apps connect")
        conn_hooks = {stage: [hook_entry(stage, env.config_path, cache)] for stage in ("createRuntime", "poststop")}
        app_ann = {P + "vhost-user": "1", P + "hugepages": "64Mi"}
        connected.append({"connected": 0, "ovs_hugetlb_mib": hugetlb_kib(vswitchd) / 1024})
        ctrs: list[Container] = []
        try:
            for j in range(apps):
                path = bundle(bdir / f"app{j}", testpmd_command(), app_ann, conn_hooks)
                CONTAINER_IDS.add(f"app{j}")
                ctr = Container(root, path, f"app{j}")
                ctrs.append(ctr)
                ctr.wait_for("testpmd> ", timeout_s=60)
                entry = env.ledger().get(f"app{j}")
                name = entry["ports"][0]["name"] if isinstance(entry, dict) else ""
                up = _link_up(ovs, name)
                time.sleep(1.0)
                connected.append({"connected": j + 1, "link_up": up, "ovs_hugetlb_mib": hugetlb_kib(vswitchd) / 1024})
        finally:
            for ctr in ctrs:
                try:
                    ctr.send("quit")
                except OSError:
                    pass
                ctr.finish(timeout_s=30)
        try:
            mempool_lines = [line.split("|")[-1] for line in Path(ovs.vswitchd_log).read_text().splitlines() if "mempool" in line.lower()][:10]
        except OSError:
            pass
    doc_first_mib = 262144 * 3008 / 2**20
    sec.data = {"n": n, "per_add": per_add, "growth": {k: {"first": v[0], "last": v[1], "ratio": v[2]} for k, v in growths.items()},
                "ovs_memory_unconnected": memory, "ovs_memory_connected": connected, "ovs_mempool_log": mempool_lines,
                "owned_ports_seen": len(owned), "failures": failures[:10], "failure_count": len(failures),
                "ovs_doc": {"shared_mempool_mbufs_mtu1500": 262144, "mbuf_size_bytes": 3008, "first_port_mib": doc_first_mib,
                            "further_ports_same_mtu_mib": 0.0,
                            "per_port_model_mib": 22560 * 3008 / 2**20}}
    mrows = [[str(m["ports"]), fmt(m["ovs_hugetlb_mib"], 0), fmt(m["ovs_hugetlb_mib"] - memory[0]["ovs_hugetlb_mib"], 0)] for m in memory]
    sec.table("OVS hugepage memory (HugetlbPages of ovs-vswitchd, MiB) with N ports whose apps are not connected",
              ["ports", "OVS MiB", "added"], mrows)
    if connected:
        base = connected[0]["ovs_hugetlb_mib"]
        crows = []
        for c in connected:
            k = c["connected"]
            doc = 0.0 if k == 0 else doc_first_mib
            crows.append([str(k), fmt(c["ovs_hugetlb_mib"], 0), fmt(c["ovs_hugetlb_mib"] - base, 0), fmt(doc, 0),
                          "-" if k == 0 else ("yes" if c.get("link_up") else "no")])
        sec.table("OVS hugepage memory as DPDK apps (testpmd in hook-wired containers) connect to their ports, MTU 1500 (MiB); "
                  "documented: OVS's shared memory model makes one mempool per MTU and NUMA node on first use, "
                  "262144 mbufs x 3008 B = 788 MB (751 MiB), shared by every later port of the same MTU (0 more)",
                  ["apps connected", "OVS MiB", "added", "documented added", "link up"], crows)
        if len(connected) >= 3:
            second = connected[2]["ovs_hugetlb_mib"] - connected[1]["ovs_hugetlb_mib"]
            sec.notes.append(f"per further connected port: {fmt(second, 1)} MiB (documented: 0, the mempool is shared)")
    if mempool_lines:
        sec.notes.append("ovs-vswitchd: " + " / ".join(m.strip() for m in mempool_lines[:3]))
    sec.notes.append("the hook's own hugepage memory per port is the container's request (here 2Mi per container, "
                     "64Mi for the connected apps): a private hugetlbfs, min_size-reserved; OVS's is on top of it. "
                     "The hook's budget does not count OVS's mempool.")
    if failures:
        sec.notes.append(f"{len(failures)} container(s) failed to start; first: {failures[0]}")
    sec.targets.append(Target("port_add_growth_switch", f"per-add latency of the OVS transaction, last {edge} / first {edge} of {n}",
                              growths["switch_ms"][2], 2.0, "x", "<=",
                              note=f"{fmt(growths['switch_ms'][0], 1)} -> {fmt(growths['switch_ms'][1], 1)} ms; the bare ovs-vsctl "
                                   f"control beside it {fmt(growths['vsctl_ms'][2], 2)}x"))
    sec.targets.append(Target("port_add_growth_hook",
                              f"per-add latency of the hook's whole createRuntime stage, last {edge} / first {edge} of {n}",
                              growths["stage_ms"][2], 2.0, "x", "<=",
                              note=f"{fmt(growths['stage_ms'][0], 1)} -> {fmt(growths['stage_ms'][1], 1)} ms; its ledger part "
                                   f"{fmt(growths['ledger_ms'][2], 2)}x ({fmt(growths['ledger_ms'][0], 1)} -> "
                                   f"{fmt(growths['ledger_ms'][1], 1)} ms); container start {fmt(growths['run_ms'][2], 2)}x"))
    return sec
