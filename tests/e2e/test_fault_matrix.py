"""The fault matrix: each fault injected on real runc and a private OVS-DPDK, each case ending
with the same check: the host holds exactly what live containers hold.

Faults: the hook SIGKILLed at each named point of createRuntime, poststop and gc
(``DPDK_OCI_HOOK_FAULT=<point>`` in the hook entry's environment, see hook/stage/faults.py);
a start that finds resources held by a dead container; the ledger truncated, emptied,
zeroed or replaced by garbage; ENOSPC on the state directory; ovsdb-server unreachable,
silent or stopped during a start; poststop run twice, never, and for a reused id; gc in a
loop during 20 starts and stops; ``gc --rebuild`` racing a start; ``gc --watch``;
ovs-vswitchd restarted under traffic for server- and client-mode ports; containerd killed
while a container runs, then restarted.

"Exactly what live containers hold" is :class:`tests.helpers.host_state.HostState`: ledger
entries, owner-tagged OVS rows, ``dpv*`` links, hugetlbfs mounts, owner records and socket
directories, free/reserved hugepages (OVS's own heap counted apart) and the pool size.

At the end of the session a markdown table (fault | what happens | what the operator does |
result) is printed in pytest's terminal summary, for CI logs and the README.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hook.admin import demo
from hook.admin.runc_bundle import Container, forward_stats, make_bundle
from hook.stage.faults import ENV as FAULT_ENV
from hook.stage.faults import RELEASE_POINTS, SETUP_POINTS
from tests.helpers.hook_env import HookEnv, make_env
from tests.helpers.host_state import HostState, assert_holds_only, capture, differences_after_settling
from tests.helpers.ovs_instance import OvsInstance
from tests.helpers.runc_util import add_hook_env

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc, OVS-DPDK, hugepages, mounts)"),
    pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed"),
]

P = "dpdk-oci-hook/"
BRIDGE = "br-fm"
RUNC = "/usr/sbin/runc"
# One of everything the hook sets up: a vhost-user port, a kernel port, a core, hugepages.
FULL = {P + "vhost-user": "1", P + "kernel-ports": "1", P + "cpus": "1", P + "hugepages": "32Mi"}
# The runtime kills a hook at 30 s; the hook must give up well before, on its own.
BUDGET_S = 20.0
NR_HUGEPAGES = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
REBUILD_HINT = "dpdk-oci-hook gc --rebuild"


# --- the table printed at the end of the session --------------------------------------------


@dataclass
class Row:
    """One line of the fault matrix; ``happens`` is filled in by the test from what it saw."""

    fault: str
    happens: str
    operator: str
    result: str = "not run"


@dataclass
class FaultMatrixReport:
    """A pytest plugin registered by this module: collects rows, prints them as a markdown table."""

    rows: dict[str, Row] = field(default_factory=dict)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = self.rows.get(report.nodeid)
        if row is None:
            return
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = (crash.message if crash is not None else str(report.longrepr)).splitlines()[0][:160]
            row.result = f"FAIL ({report.when}): {reason}"
        elif report.skipped and row.result == "not run":
            row.result = "skipped"
        elif report.when == "call" and report.passed:
            row.result = "pass"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        terminalreporter.section("fault matrix")
        terminalreporter.write_line("| fault | what happens | what the operator does | result |")
        terminalreporter.write_line("|---|---|---|---|")
        for row in self.rows.values():
            cells = [c.replace("|", "\\|").replace("\n", " ") for c in (row.fault, row.happens, row.operator, row.result)]
            terminalreporter.write_line("| " + " | ".join(cells) + " |")


PLUGIN_NAME = "dpdk-oci-hook-fault-matrix"


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> FaultMatrixReport:
    manager = request.config.pluginmanager
    plugin = manager.get_plugin(PLUGIN_NAME)
    if plugin is None:
        plugin = FaultMatrixReport()
        manager.register(plugin, PLUGIN_NAME)
    assert isinstance(plugin, FaultMatrixReport)
    return plugin


def row_for(request: pytest.FixtureRequest, matrix: FaultMatrixReport, fault: str, happens: str, operator: str) -> Row:
    """This test's row of the table, with the expected behaviour until the test says what it saw."""
    row = Row(fault, happens, operator)
    matrix.rows[request.node.nodeid] = row
    return row


# --- containers ---------------------------------------------------------------------------


@dataclass
class Started:
    returncode: int
    stderr: str
    seconds: float


class Runc:
    """runc under a private root; every container it made is force-deleted at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.ids: list[str] = []

    def _argv(self, *args: str) -> list[str]:
        return [RUNC, "--root", str(self.root), *args]

    def run(self, bundle: str, cid: str, timeout: float = 60) -> Started:
        """Run to the end in the foreground (runc runs poststop when the container exits)."""
        self.ids.append(cid)
        started = time.monotonic()
        proc = subprocess.run(self._argv("run", "--bundle", bundle, cid), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        return Started(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)

    def start(self, bundle: str, cid: str, timeout: float = 60) -> Started:
        """``runc run --detach``; the container inherits stdio, so its stderr goes to a file, not a pipe."""
        self.ids.append(cid)
        err_path = Path(bundle, "runc-stderr")
        started = time.monotonic()
        with open(err_path, "w") as err:
            proc = subprocess.run(self._argv("run", "--detach", "--bundle", bundle, cid), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
        return Started(proc.returncode, err_path.read_text(), time.monotonic() - started)

    def exec(self, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._argv("exec", cid, *argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)

    def running(self, cid: str) -> bool:
        proc = subprocess.run(self._argv("state", cid), capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and json.loads(proc.stdout)["status"] == "running"

    def kill(self, cid: str) -> None:
        subprocess.run(self._argv("kill", cid, "KILL"), capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while self.running(cid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def delete(self, cid: str) -> str:
        """``runc delete --force`` (runs poststop if registered); its output."""
        proc = subprocess.run(self._argv("delete", "--force", cid), capture_output=True, text=True, timeout=90)
        return proc.stdout + proc.stderr

    def close(self) -> None:
        for cid in reversed(self.ids):
            self.delete(cid)


@pytest.fixture
def env(tmp_path: Path, ovs: OvsInstance) -> HookEnv:
    return make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge=BRIDGE)


@pytest.fixture
def runc(tmp_path: Path) -> Iterator[Runc]:
    instance = Runc(tmp_path / "runc")
    try:
        yield instance
    finally:
        instance.close()


def new_id(tag: str) -> str:
    return f"fm-{tag}-{uuid.uuid4().hex[:6]}"


def bundle(env: HookEnv, workdir: Path, name: str, annotations: dict[str, str], args: tuple[str, ...] = ("/bin/true",),
           stages: tuple[str, ...] = ("createRuntime", "poststop"), fault: tuple[str, str] | None = None) -> str:
    """A runc bundle registering the hook for ``stages``; ``fault`` = (stage, point) switches a fault point on."""
    path = make_bundle(str(workdir / name), list(args), annotations, env.config_path, hook_stages=stages)
    if fault is not None:
        add_hook_env(path, (fault[0],), {FAULT_ENV: fault[1]})
    return path


def killed(text: str) -> bool:
    """runc's words for a hook that died of SIGKILL."""
    return "signal: killed" in text or "killed" in text.lower()


def hook_said(runc_stderr: str) -> str:
    """The hook's exit status and its message, out of runc's report of a failed hook."""
    match = re.search(r"exit status (\d+)", runc_stderr)
    status = f"exit {match.group(1)}" if match else "no exit status"
    start = runc_stderr.find("dpdk-oci-hook:")
    line = runc_stderr[start:].split("\\n", 1)[0].split("\n", 1)[0].rstrip('"') if start >= 0 else "(no message)"
    return f"{status}: {line[:160]}"


def gc(env: HookEnv, *args: str) -> subprocess.CompletedProcess[str]:
    proc = env.run("gc", *args)
    assert proc.returncode == 0, f"gc {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc


def left_behind(before: HostState, env: HookEnv, ovs: OvsInstance | None) -> str:
    """Which kinds of thing a fault left (names of the HostState fields that differ), for the table."""
    now = capture(env.state_dir, ovs)
    changed = [f.name for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(now, f.name)]
    return ", ".join(changed) if changed else "nothing"


@contextlib.contextmanager
def lowered_pool(free_pages: int) -> Iterator[int]:
    """The 2 MiB pool shrunk to what is in use plus ``free_pages`` (so a start must grow it); restored after."""
    original = int(NR_HUGEPAGES.read_text())
    base = NR_HUGEPAGES.parent
    free, reserved = int((base / "free_hugepages").read_text()), int((base / "resv_hugepages").read_text())
    in_use = original - free + reserved
    try:
        NR_HUGEPAGES.write_text(str(in_use + free_pages))
        yield int(NR_HUGEPAGES.read_text())
    finally:
        NR_HUGEPAGES.write_text(str(original))


# --- SIGKILL at each point of createRuntime, poststop and gc --------------------------------


@pytest.mark.parametrize("stages", [("createRuntime", "poststop"), ("createRuntime",)], ids=["then-poststop", "no-poststop"])
@pytest.mark.parametrize("point", SETUP_POINTS)
def test_hook_killed_during_create_runtime(point: str, stages: tuple[str, ...], tmp_path: Path, ovs: OvsInstance, runc: Runc,
                                           request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """SIGKILL of createRuntime at ``point``: the start fails; runc delete -f and one gc leave the host as before.

    runc runs poststop after a failed createRuntime; other runtimes (crun) do not: both are covered.
    """
    after = "runc then runs poststop" if "poststop" in stages else "no poststop follows (as with crun)"
    row = row_for(request, matrix, f"hook SIGKILLed in createRuntime at `{point}`; {after}", "the start fails",
                  "nothing (or `runc delete -f` if the runtime kept the container); `dpdk-oci-hook gc` frees the rest")
    grow = point == "pool-grown"
    annotations = {P + "kernel-ports": "1", P + "cpus": "1", P + "hugepages": "64Mi"} if grow else FULL
    if point == "socket-mounts":  # only a client-mode port's socket is bound in on its own
        annotations = {**FULL, P + "vhost-user": json.dumps([{"mode": "client"}])}
    with lowered_pool(16) if grow else contextlib.nullcontext(0):
        env = make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge=BRIDGE, grow_pool=grow, budget="1Gi")
        baseline = capture(env.state_dir, ovs)
        cid = new_id("c")
        path = bundle(env, tmp_path, "b", annotations, stages=stages, fault=("createRuntime", point))
        started = runc.run(path, cid)
        runc.delete(cid)
        left = left_behind(baseline, env, ovs)
        gc(env)
        diff = differences_after_settling(baseline, env.state_dir, ovs)
    fired = started.returncode != 0 and killed(started.stderr)
    row.happens = f"the start fails; left before gc: {left}; after `runc delete -f` + gc: " + ("nothing" if not diff else "; ".join(diff))
    assert fired, f"fault point {point!r} never fired: runc run exited {started.returncode}:\n{started.stderr[-1500:]}"
    assert not diff, "after runc delete -f and gc:\n  " + "\n  ".join(diff)


@pytest.mark.parametrize("point", RELEASE_POINTS)
def test_hook_killed_during_poststop(point: str, env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                     request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """SIGKILL of poststop at ``point``: the container is gone; one gc frees what poststop did not."""
    row = row_for(request, matrix, f"hook SIGKILLed in poststop at `{point}`", "runc warns; part of the release is left",
                  "`dpdk-oci-hook gc` (or wait for the periodic gc)")
    baseline = capture(env.state_dir, ovs)
    cid = new_id("p")
    path = bundle(env, tmp_path, "b", FULL, fault=("poststop", point))
    started = runc.run(path, cid)  # runc runs poststop as the container exits
    deleted = runc.delete(cid)
    left = left_behind(baseline, env, ovs)
    gc(env)
    diff = differences_after_settling(baseline, env.state_dir, ovs)
    row.happens = f"runc reports the killed hook; left before gc: {left}; after gc: " + ("nothing" if not diff else "; ".join(diff))
    assert killed(started.stderr + deleted), f"fault point {point!r} never fired (runc said nothing of a killed poststop):\n{started.stderr[-1500:]}"
    assert not diff, "after runc delete -f and gc:\n  " + "\n  ".join(diff)


@pytest.mark.parametrize("point", RELEASE_POINTS)
def test_gc_killed_while_releasing(point: str, env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                   request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """gc SIGKILLed at ``point`` while freeing a dead container: the next gc finishes the job."""
    row = row_for(request, matrix, f"gc SIGKILLed at `{point}`", "the dead container is partly freed", "run `dpdk-oci-hook gc` again")
    baseline = capture(env.state_dir, ovs)
    cid = new_id("g")
    started = runc.run(bundle(env, tmp_path, "b", FULL, stages=("createRuntime",)), cid)  # no poststop: an orphan
    assert started.returncode == 0, started.stderr
    runc.delete(cid)
    assert capture(env.state_dir, ovs).ledger == (cid,)
    first = env.run("gc", extra_env={FAULT_ENV: point})
    left = left_behind(baseline, env, ovs)
    gc(env)
    diff = differences_after_settling(baseline, env.state_dir, ovs)
    row.happens = f"gc dies (status {first.returncode}); left: {left}; the next gc: " + ("frees all" if not diff else "; ".join(diff))
    assert first.returncode == -signal.SIGKILL, f"fault point {point!r} never fired in gc (exit {first.returncode}): {first.stderr}"
    assert not diff, "after the second gc:\n  " + "\n  ".join(diff)


# --- poststop twice, never, and for a reused id ------------------------------------------------


def test_poststop_twice(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path, request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """poststop run a second time for a container already released succeeds and frees nothing else."""
    row = row_for(request, matrix, "poststop run twice", "the second run finds nothing and exits 0", "nothing")
    baseline = capture(env.state_dir, ovs)
    cid = new_id("twice")
    path = bundle(env, tmp_path, "b", FULL)
    started = runc.run(path, cid)
    assert started.returncode == 0, started.stderr
    runc.delete(cid)
    state = json.dumps({"ociVersion": "1.0.2", "id": cid, "status": "stopped", "bundle": path, "annotations": FULL})
    again = env.run("poststop", stdin=state)
    assert again.returncode == 0, again.stderr
    assert_holds_only(baseline, env.state_dir, ovs, "after poststop ran twice")
    gc(env)
    assert_holds_only(baseline, env.state_dir, ovs, "after gc")
    row.happens = "the second poststop exits 0 and changes nothing; nothing is left"


def test_poststop_never_then_gc(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path, request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """A container killed and deleted without poststop keeps its entry until gc, which frees everything."""
    row = row_for(request, matrix, "poststop never runs (engine or shim crash)", "the dead container's entry holds its budget until gc",
                  "`dpdk-oci-hook gc` (periodic: timer / `gc --watch`); a start that finds resources short reclaims it itself")
    baseline = capture(env.state_dir, ovs)
    cid = new_id("never")
    started = runc.start(bundle(env, tmp_path, "b", FULL, args=("/bin/sleep", "60"), stages=("createRuntime",)), cid)
    assert started.returncode == 0, started.stderr
    runc.kill(cid)
    runc.delete(cid)
    assert capture(env.state_dir, ovs).ledger == (cid,), "without poststop the entry stays until gc"
    left = left_behind(baseline, env, ovs)
    gc(env)
    assert_holds_only(baseline, env.state_dir, ovs, "after gc")
    row.happens = f"left until gc: {left}; gc frees all"


def test_reused_id_after_death_without_poststop(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                                request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """A new container with the id of one that died without poststop starts, is wired, and survives gc."""
    row = row_for(request, matrix, "container id reused after a death without poststop", "the stale entry is released first; the new one starts",
                  "nothing")
    baseline = capture(env.state_dir, ovs)
    cid = new_id("reuse")
    old = bundle(env, tmp_path, "old", FULL, args=("/bin/sleep", "60"), stages=("createRuntime",))
    assert runc.start(old, cid).returncode == 0
    runc.kill(cid)
    runc.delete(cid)
    new = bundle(env, tmp_path, "new", FULL, args=("/bin/sleep", "60"))
    started = runc.start(new, cid)
    assert started.returncode == 0, started.stderr
    live = capture(env.state_dir, ovs)
    assert live.ledger == (cid,)
    assert_wired(runc, env, cid, live)
    gc(env)
    assert_holds_only(live, env.state_dir, ovs, "gc while the new container runs")
    assert_wired(runc, env, cid, capture(env.state_dir, ovs))
    runc.kill(cid)
    runc.delete(cid)
    gc(env)
    assert_holds_only(baseline, env.state_dir, ovs, "after the new container stopped")
    row.happens = "the new container starts and is wired; gc keeps it; after it stops nothing is left"


def port_names(env: HookEnv, cid: str) -> list[str]:
    """The switch-side names of a container's vhost-user ports, from its ledger entry."""
    for entry in env.ledger().values():
        if isinstance(entry, dict) and entry.get("container_id") == cid:
            return [str(port["name"]) for port in entry.get("ports", [])]
    return []


def assert_wired(runc: Runc, env: HookEnv, cid: str, state: HostState) -> None:
    """Inside the running container: /run/dpdk/eal.args; on the switch: its ports, with our owner tag."""
    inside = runc.exec(cid, "/bin/sh", "-c", "test -s /run/dpdk/eal.args && ls /run/dpdk")
    assert inside.returncode == 0, f"{cid}: /run/dpdk/eal.args is gone inside the running container: {inside.stdout}{inside.stderr}"
    names = port_names(env, cid)
    tagged = {name for table, name, _ in state.ovs_rows if table == "Interface"}
    assert names and set(names) <= tagged, f"{cid}: its OVS ports {names} are not all on the switch: {sorted(tagged)}"


# --- self-healing: a start short of resources reclaims dead entries ----------------------------


def test_start_reclaims_dead_entries_when_short(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                                request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """The pool's only core is held by a dead container's entry: a new start reclaims it and runs."""
    row = row_for(request, matrix, "resources held by a dead container (no poststop, no gc)",
                  "the next start that finds them short reclaims the dead entries first", "nothing")
    baseline = capture(env.state_dir, ovs)
    dead = new_id("dead")
    assert runc.run(bundle(env, tmp_path, "dead", FULL, stages=("createRuntime",)), dead).returncode == 0
    runc.delete(dead)
    assert capture(env.state_dir, ovs).ledger == (dead,)
    cid = new_id("short")
    started = runc.start(bundle(env, tmp_path, "new", FULL, args=("/bin/sleep", "60")), cid)
    row.happens = "the start reclaims the dead entry and runs" if started.returncode == 0 else f"the start is refused: {started.stderr.strip()[-200:]}"
    assert started.returncode == 0, f"a start short of cores did not reclaim the dead container's entry:\n{started.stderr[-1500:]}"
    assert capture(env.state_dir, ovs).ledger == (cid,)
    runc.kill(cid)
    runc.delete(cid)
    assert_holds_only(baseline, env.state_dir, ovs, "after the new container stopped (no gc)")


# --- the ledger: corrupt, rebuilt under the lock --------------------------------------------------


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "zeroed":
        path.write_bytes(b"\0" * len(data))
    else:
        path.write_bytes(os.urandom(len(data)))


@pytest.mark.parametrize("how", ["truncated", "empty", "zeroed", "garbage"])
def test_corrupt_ledger_fails_closed_until_rebuild(how: str, env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                                   request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """A corrupt ledger refuses starts (exit 5, naming gc --rebuild); after it, starts work and the live container keeps its entry."""
    row = row_for(request, matrix, f"ledger {how}", "starts are refused (exit 5) naming `dpdk-oci-hook gc --rebuild`; running containers go on",
                  "inspect the ledger, then `dpdk-oci-hook gc --rebuild` (the old file is kept beside it)")
    baseline = capture(env.state_dir, ovs)
    live_id = new_id("live")
    assert runc.start(bundle(env, tmp_path, "live", FULL, args=("/bin/sleep", "120")), live_id).returncode == 0
    live = capture(env.state_dir, ovs)
    corrupt(env.state_dir / "ledger.json", how)
    refused_id = new_id("refused")
    refused = runc.start(bundle(env, tmp_path, "refused", {P + "vhost-user": "1", P + "hugepages": "32Mi"}, args=("/bin/sleep", "60")), refused_id)
    runc.delete(refused_id)
    assert refused.returncode != 0, "a start went ahead on a corrupt ledger"
    assert "exit status 5" in refused.stderr and REBUILD_HINT in refused.stderr, refused.stderr[-1500:]
    now = capture(env.state_dir, ovs)
    assert dataclasses.replace(now, ledger=live.ledger) == live, "the refused start changed the host: " + "; ".join(live.differences(now))
    gc(env, "--rebuild")
    assert_holds_only(live, env.state_dir, ovs, "after gc --rebuild")
    again = runc.start(bundle(env, tmp_path, "again", {P + "vhost-user": "1", P + "hugepages": "32Mi"}, args=("/bin/sleep", "60")), new_id("again"))
    assert again.returncode == 0, f"starts still refused after gc --rebuild:\n{again.stderr[-1500:]}"
    runc.close()
    gc(env)
    assert_holds_only(baseline, env.state_dir, ovs, "after every container stopped")
    row.happens = f"the start is refused ({hook_said(refused.stderr)}); `gc --rebuild` keeps the live container's entry; starts work again"


def test_gc_rebuild_holds_the_lock_throughout(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                              request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """gc --rebuild reads the owner records under the ledger lock: a start that holds the lock is not lost."""
    import fcntl

    from hook.host import owner_records

    row = row_for(request, matrix, "`gc --rebuild` while a start holds the ledger lock", "rebuild waits for the lock, then sees the new container",
                  "nothing")
    cid = new_id("rb")
    assert runc.start(bundle(env, tmp_path, "b", FULL, args=("/bin/sleep", "60")), cid).returncode == 0
    live = capture(env.state_dir, ovs)
    records = [p for p in Path(owner_records.records_dir(str(env.state_dir))).iterdir() if p.is_file()]
    assert records, "no owner record for the running container"
    aside = tmp_path / "records"
    aside.mkdir()
    corrupt(env.state_dir / "ledger.json", "garbage")  # so the rebuild has to rebuild
    lock_fd = os.open(env.state_dir / "ledger.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        # a start in progress, as gc --rebuild would see it: its record not yet written
        for record in records:
            shutil.move(record, aside / record.name)
        rebuild = env.popen("gc", "--rebuild")
        time.sleep(1.5)
        assert rebuild.poll() is None, f"gc --rebuild did not wait for the ledger lock: {rebuild.communicate()}"
        for record in records:
            shutil.move(aside / record.name, record)
    finally:
        os.close(lock_fd)
    out, err = rebuild.communicate(timeout=60)
    assert rebuild.returncode == 0, err
    assert_holds_only(live, env.state_dir, ovs, "gc --rebuild racing a start")
    row.happens = "rebuild waited for the lock and kept the container that started meanwhile"


# --- full disk -----------------------------------------------------------------------------


def test_enospc_on_the_state_dir(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path, request: pytest.FixtureRequest,
                                 matrix: FaultMatrixReport) -> None:
    """The state directory is full: a start is refused with one line naming the path and ENOSPC, and leaves nothing."""
    row = row_for(request, matrix, "state directory full (ENOSPC)", "the start is refused (exit 13) with the path and errno; nothing is left",
                  "free space on the state directory's filesystem")
    env.state_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "fm-state", str(env.state_dir)], check=True, timeout=30)
    filler = env.state_dir / "filler"
    try:
        baseline = capture(env.state_dir, ovs)
        live_id = new_id("live")
        assert runc.start(bundle(env, tmp_path, "live", FULL, args=("/bin/sleep", "60")), live_id).returncode == 0
        live = capture(env.state_dir, ovs)
        with open(filler, "wb", buffering=0) as fh:
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        cid = new_id("full")
        refused = runc.start(bundle(env, tmp_path, "full", {P + "vhost-user": "1", P + "hugepages": "32Mi"}, args=("/bin/sleep", "60")), cid)
        runc.delete(cid)
        filler.unlink()
        assert refused.returncode != 0, "a start went ahead on a full state directory"
        row.happens = f"the start is refused ({hook_said(refused.stderr)})"
        assert "exit status 13" in refused.stderr and "ENOSPC" in refused.stderr and str(env.state_dir) in refused.stderr, refused.stderr[-1500:]
        assert_holds_only(live, env.state_dir, ovs, "after the refused start")
        runc.close()
        gc(env)
        assert_holds_only(baseline, env.state_dir, ovs, "after every container stopped")
    finally:
        runc.close()
        filler.unlink(missing_ok=True)
        subprocess.run(["umount", "-l", str(env.state_dir)], capture_output=True, timeout=30)


# --- the switch's database unavailable --------------------------------------------------------


@contextlib.contextmanager
def silent_socket(path: Path) -> Iterator[None]:
    """A unix socket that accepts connections (into its backlog) and never answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    try:
        yield
    finally:
        sock.close()
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def stopped(pid: int | None) -> Iterator[None]:
    assert pid is not None, "ovsdb-server of the private OVS is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def with_db(env: HookEnv, db: str) -> HookEnv:
    """The same hook config (state dir, log) with another ovsdb address."""
    path = env.root / "config-real-db.hcl"
    lines = [f'  ovsdb          = "{db}"' if line.strip().startswith("ovsdb ") else line for line in Path(env.config_path).read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return HookEnv(env.root, str(path), env.state_dir, env.log_file)


@pytest.mark.parametrize("how", ["no-socket", "silent-socket", "ovsdb-stopped"])
def test_ovsdb_unavailable_during_a_start(how: str, tmp_path: Path, ovs: OvsInstance, runc: Runc, request: pytest.FixtureRequest,
                                          matrix: FaultMatrixReport) -> None:
    """The switch's database does not answer: the start is refused within the budget with a switch error and leaves nothing."""
    row = row_for(request, matrix, f"ovsdb unavailable during a start ({how})", f"the start is refused within {BUDGET_S:.0f} s with a switch error",
                  "restart / fix ovsdb-server, then retry the container")
    db = {"no-socket": f"unix:{tmp_path}/nowhere.sock", "silent-socket": f"unix:{tmp_path}/silent.sock", "ovsdb-stopped": ovs.db}[how]
    env = make_env(tmp_path, ovs_db=db, ovs_rundir=ovs.rundir, bridge=BRIDGE)
    baseline = capture(env.state_dir, ovs)
    baseline_off_switch = capture(env.state_dir, None)
    cid = new_id("db")
    # createRuntime only: the time measured is the start's, and no poststop tidies up after it
    path = bundle(env, tmp_path, "b", FULL, stages=("createRuntime",))
    late = "no"
    if how == "silent-socket":
        situation: contextlib.AbstractContextManager[None] = silent_socket(tmp_path / "silent.sock")
    elif how == "ovsdb-stopped":
        situation = stopped(ovs.pid("ovsdb-server"))
    else:
        situation = contextlib.nullcontext()
    with situation:
        started = runc.run(path, cid, timeout=90)
        runc.delete(cid)
        right_after = differences_after_settling(baseline_off_switch, env.state_dir, None)
    # a transaction the stopped server had queued may commit once it runs again: gc is the net
    time.sleep(0.5)
    if capture(env.state_dir, ovs).ovs_rows != baseline.ovs_rows:
        late = "yes (a port committed after the server resumed; gc removed it)"
        gc(with_db(env, ovs.db))
    row.happens = (f"refused after {started.seconds:.1f} s ({hook_said(started.stderr)}); left right after: "
                   f"{'nothing' if not right_after else '; '.join(right_after)}; late OVS rows: {late}")
    assert started.returncode != 0, "the container started without its switch"
    assert started.seconds < BUDGET_S, f"the start took {started.seconds:.1f} s, over the {BUDGET_S} s budget:\n{started.stderr[-1500:]}"
    assert "switch ovs" in started.stderr, started.stderr[-1500:]
    assert not right_after, "the refused start left:\n  " + "\n  ".join(right_after)
    assert_holds_only(baseline, env.state_dir, ovs, "after ovsdb came back")


# --- gc against a moving host ------------------------------------------------------------------


class GcLoop:
    """``dpdk-oci-hook gc`` run back to back in a thread, counting runs and keeping failures."""

    def __init__(self, env: HookEnv) -> None:
        self.env = env
        self.runs = 0
        self.failures: list[str] = []
        self.freed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            proc = self.env.run("gc", "--json")
            if proc.returncode != 0:
                self.failures.append(proc.stderr.strip())
            else:
                with contextlib.suppress(ValueError):
                    self.freed += json.loads(proc.stdout).get("released", [])
            self.runs += 1

    def wait_runs(self, n: int, timeout_s: float = 30) -> None:
        target = self.runs + n
        deadline = time.monotonic() + timeout_s
        while self.runs < target and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> GcLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.mark.slow
def test_gc_in_a_loop_during_twenty_starts_and_stops(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                                     request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """gc running back to back never takes a running container's port, socket dir or entry; all is freed at the end."""
    row = row_for(request, matrix, "gc in a loop during 20 starts and stops", "gc never takes a running container's port or socket dir",
                  "nothing")
    baseline = capture(env.state_dir, ovs)
    running: list[str] = []
    with GcLoop(env) as loop:
        for i in range(20):
            cid = new_id(f"loop{i}")
            annotations = {P + "vhost-user": "1", P + "hugepages": "8Mi", P + "hugepage-size": "2Mi"}
            if i % 2 == 0:  # one core in the pool: every other container, never two at once
                annotations[P + "cpus"] = "1"
            started = runc.start(bundle(env, tmp_path, f"b{i}", annotations, args=("/bin/sleep", "120")), cid)
            assert started.returncode == 0, f"start {i} failed:\n{started.stderr[-1500:]}"
            running.append(cid)
            loop.wait_runs(2)
            state = capture(env.state_dir, ovs)
            for live in running:
                assert live in state.ledger, f"gc took the entry of running container {live}"
                assert_wired(runc, env, live, state)
            if len(running) == 2:
                oldest = running.pop(0)
                runc.kill(oldest)
                runc.delete(oldest)
        for cid in running:
            runc.kill(cid)
            runc.delete(cid)
        running.clear()
    assert not loop.failures, loop.failures[:3]
    gc(env)
    assert_holds_only(baseline, env.state_dir, ovs, "after 20 starts and stops")
    row.happens = f"{loop.runs} gc runs meanwhile; every running container kept its entry, port and /run/dpdk; nothing left"


def test_gc_watch_frees_dead_containers_until_sigterm(env: HookEnv, ovs: OvsInstance, runc: Runc, tmp_path: Path,
                                                      request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """``gc --watch --interval S`` frees a container that died without poststop, logs it, and exits on SIGTERM."""
    row = row_for(request, matrix, "no operator runs gc (hosts without systemd)", "`gc --watch` frees dead containers and logs what it freed",
                  "run `dpdk-oci-hook gc --watch --interval S` (or the installed systemd timer)")
    baseline = capture(env.state_dir, ovs)
    watch = env.popen("gc", "--watch", "--interval", "0.5")
    try:
        cid = new_id("watch")
        assert runc.run(bundle(env, tmp_path, "b", FULL, stages=("createRuntime",)), cid).returncode == 0
        runc.delete(cid)
        deadline = time.monotonic() + 15
        while capture(env.state_dir, ovs).ledger and time.monotonic() < deadline and watch.poll() is None:
            time.sleep(0.2)
        assert watch.poll() is None, f"gc --watch exited {watch.returncode}: {watch.communicate()}"
        assert_holds_only(baseline, env.state_dir, ovs, "gc --watch running")
    finally:
        if watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
        try:
            out, err = watch.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            watch.kill()
            out, err = watch.communicate()
    assert watch.returncode == 0, f"gc --watch did not exit cleanly on SIGTERM ({watch.returncode}): {err[-500:]}"
    logged = out + err + (env.log_file.read_text() if env.log_file.exists() else "")
    assert cid in logged, "gc --watch did not say what it freed"
    row.happens = "freed the dead container within a pass, logged it, exited 0 on SIGTERM"


# --- ovs-vswitchd restarted under traffic --------------------------------------------------------


def restart_vswitchd(ovs: OvsInstance) -> float:
    """``ovs-appctl exit`` the private ovs-vswitchd and start it again as OvsInstance does; seconds until DPDK is up."""
    old = ovs.pid("ovs-vswitchd")
    environ = dict(os.environ, OVS_RUNDIR=ovs.dir, OVS_DBDIR=ovs.dir, OVS_LOGDIR=ovs.dir)
    subprocess.run(["ovs-appctl", "-t", ovs.path("ovs-vswitchd.ctl"), "exit"], env=environ, capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 30
    while old is not None and ovs.pid("ovs-vswitchd") == old and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ovs.pid("ovs-vswitchd") is None, "ovs-vswitchd did not exit"
    started = time.monotonic()
    with open(ovs.path("console.log"), "ab") as console:
        subprocess.run(["ovs-vswitchd", ovs.db, f"--pidfile={ovs.path('ovs-vswitchd.pid')}", f"--log-file={ovs.vswitchd_log}",
                        f"--unixctl={ovs.path('ovs-vswitchd.ctl')}", "--detach", "-vconsole:off", "-vsyslog:off"],
                       env=environ, cwd="/", stdout=console, stderr=console, timeout=60, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ovs.pid("ovs-vswitchd") and ovs.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized", wait=False).strip() == "true":
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"ovs-vswitchd did not come back:\n{ovs.log_tail()}")


def burst(tx: Container, rx: Container, seconds: float = 1.0) -> tuple[int, int]:
    """tx sends for ``seconds`` (rx idle), then rx drains its ring: (sent, received). At most two pollers with OVS's PMD."""
    tx.send("start")
    time.sleep(seconds)
    tx.send("stop")
    tx.wait_for("Accumulated forward statistics", timeout_s=20)
    tx.wait_for("testpmd> ", timeout_s=20)
    rx.send("start")
    time.sleep(0.5)
    rx.send("stop")
    rx.wait_for("Accumulated forward statistics", timeout_s=20)
    rx.wait_for("testpmd> ", timeout_s=20)
    return forward_stats(tx.output)["tx"], forward_stats(rx.output)["rx"]


def link_lines(ctr: Container) -> list[str]:
    words = ("link", "vhost", "virtio", "connect", "socket")
    return [line.strip() for line in (ctr.stdout + ctr.stderr).splitlines() if any(w in line.lower() for w in words)][-6:]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(demo.TESTPMD), reason="dpdk-testpmd is missing (apt-get install dpdk-dev)")
@pytest.mark.parametrize("mode", ["server", "client"])
def test_ovs_restarted_under_traffic(mode: str, env: HookEnv, ovs: OvsInstance, tmp_path: Path, request: pytest.FixtureRequest,
                                     matrix: FaultMatrixReport) -> None:
    """ovs-vswitchd exits and comes back while two testpmd containers exchange packets over ``mode`` ports."""
    operator = "nothing: the ports reconnect" if mode == "server" else "see what happens: restart the containers if traffic does not resume"
    row = row_for(request, matrix, f"ovs-vswitchd restarted under traffic, {mode}-mode ports", "traffic resumes" if mode == "server" else "(recorded)",
                  operator)
    baseline = capture(env.state_dir, ovs)
    runc_root = tmp_path / "runc"
    runc_root.mkdir()
    annotations = {P + "vhost-user": json.dumps([{"mode": mode}]), P + "hugepages": "64Mi"}
    containers: list[Container] = []
    observations: list[str] = []
    resumed_after = None
    try:
        rx = Container(str(runc_root), bundle(env, tmp_path, "rx", annotations, args=tuple(demo.testpmd_command("--no-flush-rx"))), new_id("rx"))
        containers.append(rx)
        rx.wait_for("testpmd> ", timeout_s=60)
        rx.send("set fwd rxonly")
        tx = Container(str(runc_root), bundle(env, tmp_path, "tx", {**annotations, P + "cpus": "1"}, args=tuple(demo.testpmd_command())),
                       new_id("tx"))
        containers.append(tx)
        tx.wait_for("testpmd> ", timeout_s=60)
        tx.send("set fwd txonly")
        time.sleep(1.5)  # vhost-user connects once a second
        sent, received = burst(tx, rx)
        assert received > 0, f"no traffic before the restart (sent {sent}):\n" + "\n".join(rx.output[-20:])
        observations.append(f"before: sent {sent}, received {received}")
        socket_inode, host_before = inode_inside(runc_root, rx.id), host_socket(env, rx.id)
        down_s = restart_vswitchd(ovs)
        observations.append(f"ovs-vswitchd back in {down_s:.1f} s")
        deadline = time.monotonic() + 15
        since = time.monotonic()
        received = 0
        while time.monotonic() < deadline:
            sent, received = burst(tx, rx)
            if received > 0:
                resumed_after = time.monotonic() - since
                break
            time.sleep(1)
        observations.append(f"after: last burst sent {sent}, received {received}")
        after_inode = inode_inside(runc_root, rx.id)
        host_sock = host_socket(env, rx.id)
        observations.append(f"rx's /run/dpdk/net0.sock: inode inside {socket_inode} -> {after_inode}; host socket {host_before} -> {host_sock}")
        observations += [f"rx: {line}" for line in link_lines(rx)[-2:]] + [f"tx: {line}" for line in link_lines(tx)[-2:]]
        for ctr in containers:
            ctr.send("quit")
    finally:
        for ctr in reversed(containers):
            ctr.finish()
    gc(env)
    outcome = f"traffic resumed {resumed_after:.1f} s after OVS was back" if resumed_after is not None else "traffic did NOT resume within 15 s"
    row.happens = outcome + "; " + "; ".join(observations)
    print("\n".join(observations))
    assert_holds_only(baseline, env.state_dir, ovs, "after both containers stopped")
    if mode == "server":
        assert resumed_after is not None, "server-mode traffic did not resume after an OVS restart:\n" + "\n".join(observations)


def inode_inside(runc_root: Path, cid: str) -> str:
    proc = subprocess.run([RUNC, "--root", str(runc_root), "exec", cid, "stat", "-L", "-c", "%i", "/run/dpdk/net0.sock"],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or proc.stderr.strip()[-80:]


def host_socket(env: HookEnv, cid: str) -> str:
    """The host-side socket of the container's first port and its inode (from the ledger)."""
    for entry in env.ledger().values():
        if isinstance(entry, dict) and entry.get("container_id") == cid and entry.get("ports"):
            path = entry["ports"][0].get("socket_host_path", "")
            try:
                return f"{path} inode {os.stat(path).st_ino}"
            except OSError as exc:
                return f"{path} ({exc.strerror})"
    return "(no ledger entry)"


# --- the engine killed while a container runs ---------------------------------------------------


@pytest.mark.slow
def test_containerd_killed_while_a_container_runs(env: HookEnv, ovs: OvsInstance, tmp_path: Path, busybox_rootfs: Any,
                                                  request: pytest.FixtureRequest, matrix: FaultMatrixReport) -> None:
    """containerd SIGKILLed under a running container, then restarted: gc keeps the live container, then frees all once it stops."""
    from hook.admin import engines
    from tests.helpers.engines_fixtures import private_containerd, require_ctr

    require_ctr()
    row = row_for(request, matrix, "containerd killed while a container runs, then restarted",
                  "the container keeps running and keeps its resources; they are freed when it stops", "restart containerd")
    shim = engines.Settings(config=env.config_path).shim
    if not os.access(shim, os.X_OK):
        pytest.skip(f"{shim} is missing: install the project (pip install -e .)")
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs.dir, rootfs, symlinks=True)
    daemon_env = {"DPDK_OCI_HOOK_CONFIG": env.config_path, "DPDK_OCI_RUNTIME": RUNC}
    baseline = capture(env.state_dir, ovs)
    cid = new_id("ctd")
    notes: list[str] = []
    restarted: list[subprocess.Popen[bytes]] = []
    top: Path | None = None
    try:
        with private_containerd(env=daemon_env) as ctd:
            top = ctd.dir

            def restart() -> None:
                proc = subprocess.Popen(["containerd", "--config", str(ctd.dir / "config.toml")], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **daemon_env},
                                        start_new_session=True)
                restarted.append(proc)
                deadline = time.monotonic() + 30
                while not answers(ctd):
                    assert time.monotonic() < deadline and proc.poll() is None, "containerd did not come back"
                    time.sleep(0.3)

            try:
                annotation_args = [a for k, v in FULL.items() for a in ("--annotation", f"{k}={v}")]
                run = ctd.ctr("run", "-d", "--runc-binary", shim, "--runc-root", str(ctd.dir / "runc"), "--fifo-dir", str(ctd.dir / "fifo"),
                              "--env", "PATH=/bin", *annotation_args, "--rootfs", str(rootfs), cid, "/bin/sleep", "300")
                assert run.returncode == 0, run.stderr
                live = capture(env.state_dir, ovs)
                assert live.ledger == (cid,), live
                ctd.proc.kill()
                ctd.proc.wait(timeout=30)
                gc(env)
                assert_holds_only(live, env.state_dir, ovs, "gc while containerd is dead")
                notes.append("gc with containerd dead kept the running container")
                restart()
                tasks = ctd.ctr("tasks", "ls").stdout
                notes.append("after the restart the task is " + ("RUNNING" if "RUNNING" in tasks else f"not running ({tasks.strip()[-80:]})"))
                gc(env)
                assert_holds_only(live, env.state_dir, ovs, "gc after containerd came back")
                ctd.ctr("tasks", "kill", "-s", "SIGKILL", cid)
                deadline = time.monotonic() + 20
                while "RUNNING" in ctd.ctr("tasks", "ls").stdout and time.monotonic() < deadline:
                    time.sleep(0.2)
                ctd.ctr("tasks", "delete", cid)
                ctd.ctr("containers", "rm", cid)
                notes.append(f"stopped through containerd; before gc left: {left_behind(baseline, env, ovs)}")
            finally:
                if ctd.proc.poll() is not None and not restarted:
                    restart()  # the fixture's clean-up needs a containerd to delete the task through
            # leaving the fixture: it deletes tasks and containers through the restarted containerd
    finally:
        for proc in restarted:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if top is not None:
            subprocess.run(["umount", "-R", "-l", str(top / "root")], capture_output=True, check=False)
            subprocess.run(["umount", "-R", "-l", str(top / "state")], capture_output=True, check=False)
            shutil.rmtree(top, ignore_errors=True)
    gc(env)
    assert_holds_only(baseline, env.state_dir, ovs, "after the container stopped and gc")
    row.happens = "; ".join(notes) + "; after gc nothing is left"


def answers(ctd: Any) -> bool:
    """Whether a (re)started containerd serves its API yet."""
    try:
        return bool(ctd.ctr("version", timeout=10).returncode == 0)
    except subprocess.TimeoutExpired:
        return False
