"""Shared plumbing of the benchmark: statistics, interleaving, bundles, processes, cleanup.

Everything a scenario starts is registered with :class:`Bench` (process by pid, runc
container by its private root, OVS instance, network namespace, mount, directory) and is
undone in reverse order when the scenario ends, also on an error or Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hook.admin.runc_bundle import RUNC, make_bundle
from tests.helpers.hook_env import HookEnv, make_env

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable  # the project's venv interpreter (the wrapper runs us with it)
PROBE = str(BENCH_DIR / "probe.py")
MEMWRAP = str(BENCH_DIR / "memwrap.py")
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
P = "dpdk-oci-hook/"
HUGEPAGES_SYS = "/sys/kernel/mm/hugepages/hugepages-2048kB"


# --- statistics ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return float(ordered[rank - 1])


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, median, p95, p99, min, max, mean of a sample."""
    vals = [float(v) for v in values if not math.isnan(v)]
    return {
        "n": len(vals),
        "median": median(vals),
        "p95": percentile(vals, 95),
        "p99": percentile(vals, 99),
        "min": min(vals) if vals else math.nan,
        "max": max(vals) if vals else math.nan,
        "mean": sum(vals) / len(vals) if vals else math.nan,
    }


def paired_diff(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round differences a[i] - b[i] of two interleaved samples."""
    return [x - y for x, y in zip(a, b, strict=False)]


def interleave(variants: dict[str, Callable[[], float]], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    """Run each variant ``runs`` times, round-robin (A B C, B C A, ...); warm-up rounds are dropped.

    Each callable returns one measurement.  Rotating the order inside a round keeps any
    position effect (a cache warmed by the previous variant) from favouring one variant.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(warmup + runs):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            value = variants[name]()
            if rnd >= warmup:
                samples[name].append(value)
    return samples


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def clean_json(obj: Any) -> Any:
    """nan/inf as None so the JSON is standard."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else round(obj, 4)
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    return obj


# --- results ------------------------------------------------------------------------


@dataclass
class Target:
    """One of the issue's targets, judged on this run's numbers."""

    id: str
    what: str
    value: float | None
    limit: float
    unit: str
    op: str  # "<=" or ">="
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "what": self.what, "value": self.value, "limit": self.limit, "unit": self.unit, "op": self.op,
                "met": self.met, "note": self.note}


@dataclass
class Section:
    """A scenario's output: raw data for results.json, markdown tables, targets, chart data."""

    name: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (caption, header, rows)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def table(self, caption: str, header: list[str], rows: list[list[str]]) -> None:
        self.tables.append((caption, header, rows))


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


# --- the run context and its cleanup --------------------------------------------------


class Bench:
    """One benchmark run: options, a private work directory, and everything to undo."""

    def __init__(self, quick: bool, out_dir: Path, verbose: bool = True) -> None:
        self.quick = quick
        self.out_dir = out_dir
        self.verbose = verbose
        self.work = Path(tempfile.mkdtemp(prefix="dpdk-oci-bench-", dir="/tmp"))
        self.tag = self.work.name.rsplit("-", 1)[-1][:6].lower().replace("_", "x")
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self.leftovers: list[str] = []
        self.config_paths: list[str] = []
        self.t0 = time.monotonic()

    # -- logging
    def say(self, text: str) -> None:
        if self.verbose:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    # -- undo stack
    def on_cleanup(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def cleanup(self, keep: int = 0) -> None:
        """Undo (in reverse) everything registered after the first ``keep`` entries."""
        while len(self._undo) > keep:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep going: the rest must still be undone
                self.leftovers.append(f"{what}: {exc}")
                print(f"bench: cleanup of {what} failed: {exc}", file=sys.stderr)

    def mark(self) -> int:
        return len(self._undo)

    def close(self) -> None:
        self.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- directories
    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- processes
    def popen(self, argv: Sequence[str], what: str, **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(argv), **kw)
        self.on_cleanup(f"process {what} ({proc.pid})", lambda: stop_process(proc))
        return proc

    # -- runc
    def runc_root(self, name: str) -> str:
        root = str(self.dir(name))
        self.on_cleanup(f"runc containers in {root}", lambda: delete_all(root))
        return root

    def hook_env(self, name: str, **kw: Any) -> HookEnv:
        """A hook config (tests' make_env) whose state, log and config cache are in the work dir."""
        root = self.dir(name)
        env = make_env(root, **kw)
        self.config_paths.append(env.config_path)
        return env


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """Terminate a process we started (by its pid), then kill it."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# --- runc ---------------------------------------------------------------------------


_SCRIPTS: dict[str, str] = {}


def hook_script(python: str) -> str:
    """The hook's ``__main__.py`` as installed for ``python``: what install.sh registers (``hook.entry``)."""
    if python not in _SCRIPTS:
        _SCRIPTS[python] = subprocess.run([python, "-I", "-c", "from hook.entry import MAIN_SCRIPT; print(MAIN_SCRIPT)"],
                                          capture_output=True, text=True, check=True, timeout=60, cwd="/").stdout.strip()
    return _SCRIPTS[python]


def hook_entry(stage: str, config_path: str, cache_dir: str, python: str = PYTHON, pre: Sequence[str] = ("-I",),
               program: Sequence[str] | None = None, extra_env: Iterable[str] = (), timeout_s: int = 60,
               client: str | None = None) -> dict[str, Any]:
    """An OCI hook entry running ``python <pre> <program> <stage>`` with the bench's config.

    ``program`` defaults to the hook's script, as registered by install.sh.  ``client``: the
    native hook client in front, as install.sh registers it when it built one.
    """
    argv = [python, *pre, *(program if program is not None else (hook_script(python),)), stage]
    return {
        "path": client or python,
        "args": [client, *argv] if client else argv,
        "env": [f"DPDK_OCI_HOOK_CONFIG={config_path}", f"DPDK_OCI_HOOK_CACHE_DIR={cache_dir}", PATH_ENV, *extra_env],
        "timeout": timeout_s,
    }


def bundle(path: Path, args: Sequence[str], annotations: dict[str, str], hooks: dict[str, list[dict[str, Any]]],
           extra_mounts: Sequence[dict[str, Any]] = ()) -> str:
    """A runc bundle (host /usr bound read-only) with exactly these hook entries."""
    make_bundle(str(path), args, annotations, "/nonexistent", hook_stages=())
    config = path / "config.json"
    spec = json.loads(config.read_text())
    spec["hooks"] = hooks
    spec["mounts"].extend(extra_mounts)
    config.write_text(json.dumps(spec, indent=1))
    return str(path)


CONTAINER_IDS: set[str] = set()  # every container id the run used (the end checks their cgroups are gone)


def runc(root: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``runc --root ROOT ARGS``; output captured.  ``run -d`` hands runc's stdio to the
    container, so there stdout is /dev/null and stderr a file (a pipe would stay open)."""
    if args and args[0] in ("run", "create"):
        CONTAINER_IDS.add(args[-1])
    return run_detachable([RUNC, "--root", root, *args], timeout)


def leftover_cgroups() -> list[str]:
    """cgroup directories (v1 controllers and the v2 tree) named after a container of this run."""
    found = []
    for top in Path("/sys/fs/cgroup").iterdir():
        for cid in CONTAINER_IDS:
            if (top / cid).is_dir():
                found.append(str(top / cid))
    return found


def run_detachable(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if "-d" not in argv and "--detach" not in argv:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", err.read().decode(errors="replace"))


def delete_all(root: str) -> None:
    """Force-delete every container of a private runc root (runs their poststop hooks)."""
    if not os.path.isdir(root):
        return
    proc = runc(root, "list", "-q")
    for cid in proc.stdout.split():
        runc(root, "delete", "--force", cid)


def container_pid(root: str, cid: str) -> int | None:
    proc = runc(root, "state", cid)
    if proc.returncode != 0:
        return None
    pid = json.loads(proc.stdout).get("pid")
    return int(pid) if pid else None


# --- host probes --------------------------------------------------------------------


def hugepages_free() -> int:
    return int(Path(HUGEPAGES_SYS, "free_hugepages").read_text())


def hugetlb_kib(pid: int) -> int:
    """HugetlbPages of a process (kB), from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("HugetlbPages:"):
            return int(line.split()[1])
    return 0


def processes_mentioning(needle: str) -> list[str]:
    """'pid cmdline' of live processes whose command line contains ``needle``."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if needle in cmdline:
            found.append(f"{entry} {cmdline[:160]}")
    return found


def mounts_under(prefix: str) -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(prefix):
            points.append(point)
    return points


def netns_names() -> list[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def tool_version(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "?"


def fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path``."""
    best, fstype = "", "?"
    real = os.path.realpath(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point, kind = line.split()[1], line.split()[2]
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fstype = point, kind
    return fstype
