"""Each container engine, end to end: a Debian image's dpdk-testpmd sends over OVS-DPDK through the hook.

podman (hooks.d rendered by :mod:`hook.admin.engines`), Docker 26 (``--runtime dpdk``, the
``dpdk-oci-runtime`` wrapper) and containerd (``ctr run --runc-binary <wrapper>``), each
started privately by the test, run the same container with the same annotations
(``vhost-user=1``, ``cpus=1``, ``hugepages=64Mi``): a non-interactive txonly testpmd for three
seconds on the hook's single pool core.  A receiver -- a runc container through the hook,
rxonly, not yet forwarding -- shares the bridge; once the sender is done the receiver drains
what OVS queued for it.  At most two busy pollers run at once on a 2-CPU host: while the
sender runs, the sender's lcores (CPU 0) and the OVS PMD (CPU 1), the receiver's worker blocked.

Proven for each engine: the hook ran at createRuntime and poststop for the engine's container
(log events, with the id the engine gave it); the sender's OVS port received packets (live
OpenFlow port counters, read while it exists); the receiver got packets that crossed OVS; and
afterwards no ledger entry, socket directory, OVS port, mount, process or hugepage is left.

The image: a cached mmdebstrap rootfs with dpdk-dev (:mod:`tests.helpers.dpdk_image`).  Docker imports
the tarball into its private data root; podman and ctr run the unpacked tree (``--rootfs``,
under an overlay): podman 4.3's ``import`` writes the host's
``/var/lib/containers/cache/blob-info-cache-v1.boltdb`` whatever ``--root`` says.

Docker's default seccomp profile allows the NUMA memory-policy calls EAL needs only with
CAP_SYS_NICE; the wrapper adds an allow rule for just those three calls to annotated
containers, so no capability is needed.  podman's profile allows them; ctr applies no
seccomp profile unless asked.

A container without annotations through the wrapper behaves exactly as with plain runc:
tests/e2e/test_runtime_wrapper.py::test_container_without_our_annotations_runs_as_with_runc,
and through each engine, tests/e2e/test_engine_plumbing.py.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hook.admin import demo, engines
from hook.admin.runc_bundle import Container, forward_stats, make_bundle
from tests.helpers import dpdk_image
from tests.helpers.engines_fixtures import PODMAN_ULIMITS, Podman, private_containerd, require_ctr
from tests.helpers.hook_env import HookEnv, hugepages_free, hugepages_mapped_by, make_env
from tests.helpers.ovs_instance import OvsInstance

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (engines, OVS-DPDK, hugepages)"),
    pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed"),
    pytest.mark.skipif(not os.path.exists(demo.TESTPMD), reason=f"{demo.TESTPMD} is missing (apt-get install dpdk-dev): the receiver runs it"),
    pytest.mark.skipif(not shutil.which("ovs-ofctl"), reason="ovs-ofctl is not installed (openvswitch-common)"),
]

P = "dpdk-oci-hook/"
ANNOTATIONS = {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "64Mi"}
BRIDGE = "br-eng"
IMAGE = "localhost/dpdk-oci-hook-testpmd:e2e"
RUNC = "/usr/sbin/runc"
SEND_SECONDS = 3
SENDER_SCRIPT = (
    "exec stdbuf -oL dpdk-testpmd $(cat /run/dpdk/eal.args) --iova-mode=va -- "
    "--forward-mode=txonly --stats-period=1 --total-num-mbufs=2048"
)
# timeout sends SIGINT after 3 s: testpmd stops, and timeout exits 124
SENDER_ARGV = ["/usr/bin/timeout", "-s", "INT", str(SEND_SECONDS), "/bin/sh", "-c", SENDER_SCRIPT]
TIMED_OUT = 124
RING = 256  # virtio_user's queue size: what the idle receiver can hold
OWNER = "external_ids:dpdk-oci-hook-owner"
RELEASE_WAIT_S = 30.0  # podman runs poststop from its cleanup process, after ``podman run`` returns


# --- the image --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def testpmd_tarball() -> Path:
    """The cached rootfs tarball with dpdk-testpmd (built on first use, ~1-2 min)."""
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed (apt-get install mmdebstrap): no way to make a testpmd image here")
    return dpdk_image.testpmd_tarball()


@pytest.fixture(scope="session")
def testpmd_rootfs(testpmd_tarball: Path) -> Iterator[Path]:
    """A writable rootfs for ``--rootfs`` (ctr and podman): an overlay over the cached unpacked tree."""
    with dpdk_image.overlay(dpdk_image.testpmd_tree(testpmd_tarball)) as merged:
        yield merged


# --- host state -------------------------------------------------------------------------
#
# Other developers' tests may use hugepages on this host at the same time, so what the
# containers held is checked precisely, per container: every process of ours is gone, every
# hugetlbfs superblock seen in our containers is mounted nowhere (in no mount namespace), and
# no file with their DPDK file prefix is left in the host's /dev/hugepages.  The host's pool
# totals are compared as well whenever nobody else changed their hugepage use meanwhile.


def owned_interfaces(ovs: OvsInstance) -> list[str]:
    return sorted(ovs.vsctl("--bare", "--columns=name", "find", "Interface", f'{OWNER}!=""', wait=False).split())


def other_ovs_hint(ovs: OvsInstance) -> str:
    """A note for failure messages when another OVS-DPDK runs: two userspace datapaths collide (ovs-netdev)."""
    others = []
    for pid in _pids():
        cmdline = (_read(f"/proc/{pid}/cmdline") or "").split("\0")
        if os.path.basename(cmdline[0]) == "ovs-vswitchd" and not any(ovs.dir in part for part in cmdline):
            others.append(pid)
    if not others:
        return ""
    return (f"\nNOTE: another ovs-vswitchd runs on this host (pids {others}); two userspace datapaths cannot coexist "
            "(one ovs-netdev per network namespace): retry when it is gone")


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _hugetlbfs_in(mountinfo: str) -> dict[str, str]:
    """device id -> mount point of the hugetlbfs mounts in one mountinfo text."""
    found = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split(" ", 1)[0] == "hugetlbfs" and len(fields) > 4:
            found[fields[2]] = fields[4]
    return found


def hugetlbfs_superblocks() -> dict[str, tuple[int, str]]:
    """Every hugetlbfs mounted in any mount namespace: device id -> (a pid that sees it, mount point)."""
    seen: set[str] = set()
    found: dict[str, tuple[int, str]] = {}
    for pid in _pids():
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
        if ns in seen:
            continue
        seen.add(ns)
        for dev, point in _hugetlbfs_in(_read(f"/proc/{pid}/mountinfo") or "").items():
            found.setdefault(dev, (pid, point))
    return found


@dataclass
class Sighting:
    """One container of ours as seen from /proc while it ran."""

    pids: set[int] = field(default_factory=set)
    hugetlbfs: set[str] = field(default_factory=set)  # superblock device ids mounted in its namespace
    file_prefix: str = ""


def running_containers() -> dict[str, Sighting]:
    """Processes whose root holds the hook's /run/dpdk/config.json, by the container id written there."""
    found: dict[str, Sighting] = {}
    by_ns: dict[str, set[str]] = {}
    host = set(_hugetlbfs_in(_read("/proc/self/mountinfo") or ""))  # e.g. /dev/hugepages, if an engine bound it in
    for pid in _pids():
        raw = _read(f"/proc/{pid}/root/run/dpdk/config.json")
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except (ValueError, OSError):
            continue
        if ns not in by_ns:  # the hook's private hugetlbfs
            mounted = _hugetlbfs_in(_read(f"/proc/{pid}/mountinfo") or "")
            by_ns[ns] = {dev for dev, point in mounted.items() if point == "/dev/hugepages" and dev not in host}
        seen = found.setdefault(str(doc.get("container_id")), Sighting())
        seen.pids.add(pid)
        seen.hugetlbfs |= by_ns[ns]
        seen.file_prefix = str(doc.get("file_prefix") or "")
    return found


def _mapped_pages(pid: int) -> int:
    try:
        return hugepages_mapped_by(pid)
    except (OSError, ValueError):
        return 0


@dataclass(frozen=True)
class Hugepages:
    """The host's pool, and what everybody else holds in it."""

    pool: tuple[int, int]  # (free pages + pages OVS maps itself, reserved pages)
    others: tuple[object, ...]  # hugetlbfs superblocks with their files; hugetlb pages mapped by processes other than OVS


def pool_totals(ovs: OvsInstance) -> tuple[int, int]:
    free, reserved = hugepages_free()
    return free + _mapped_pages(ovs.pid("ovs-vswitchd") or -1), reserved


def hugepages_now(ovs: OvsInstance) -> Hugepages:
    ovs_pid = ovs.pid("ovs-vswitchd")
    supers = []
    for dev, (pid, point) in sorted(hugetlbfs_superblocks().items()):
        top = f"/proc/{pid}/root{point}"
        files = []
        for root, _dirs, names in os.walk(top):
            for name in names:
                if name.startswith(ovs.file_prefix):
                    continue  # OVS's own memory grows with its ports: the pool totals count it
                with contextlib.suppress(OSError):
                    files.append((os.path.relpath(os.path.join(root, name), top), os.stat(os.path.join(root, name)).st_size))
        supers.append((dev, point, tuple(sorted(files))))
    mapped = sum(_mapped_pages(pid) for pid in _pids() if pid != ovs_pid)
    return Hugepages(pool_totals(ovs), (tuple(supers), mapped))


def mounts_below(*tops: Path) -> list[str]:
    """Mount points in this (the host's) mount namespace below any of ``tops``."""
    points = [line.split()[4] for line in (_read("/proc/self/mountinfo") or "").splitlines()]
    return [p for p in points for top in tops if p.startswith(f"{top}/")]


def wait_released(env: HookEnv, container_id: str, timeout_s: float = RELEASE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(e["event"] == "released" and e.get("container_id") == container_id for e in env.events()):
        assert time.monotonic() < deadline, f"no release of {container_id} within {timeout_s:g} s: {env.events()[-5:]}"
        time.sleep(0.2)


def assert_nothing_left(env: HookEnv, ovs: OvsInstance, before: Hugepages, result: Exchange, *dirs: Path) -> None:
    """No reservation, socket dir, OVS port, mount, process or hugepage of our two containers is left."""
    assert env.ledger() == {}
    assert env.owner_records() == []
    assert owned_interfaces(ovs) == []
    assert mounts_below(env.root, *dirs) == []
    ours = {result.sender.container_id, result.receiver_id}
    seen = {cid: s for cid, s in result.sightings.items() if cid in ours}
    assert set(seen) == ours, f"the /proc probe missed a container: saw {sorted(result.sightings)}"
    for cid, sighting in seen.items():
        assert sighting.hugetlbfs and sighting.file_prefix, (cid, sighting)
    deadline = time.monotonic() + 10  # a namespace (and its hugetlbfs) goes a moment after its last process
    while True:
        alive = set(running_containers()) & ours
        leaked = {dev for s in seen.values() for dev in s.hugetlbfs} & set(hugetlbfs_superblocks())
        if not (alive or leaked) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"processes of {alive} still run"
    assert not leaked, f"hugetlbfs superblocks {leaked} of our containers are still mounted somewhere"
    for sighting in seen.values():
        assert glob.glob(f"/dev/hugepages/{glob.escape(sighting.file_prefix)}*") == []
    deadline = time.monotonic() + 10
    while True:
        now = hugepages_now(ovs)
        if now.pool == before.pool:
            return
        if now.others != before.others:
            warnings.warn("others changed their hugepage use during this test: the pool totals were not compared "
                          "(the per-container checks passed)", stacklevel=1)
            return
        assert time.monotonic() < deadline, f"hugepages were not given back: (free + OVS, reserved) {now.pool} != {before.pool}"
        time.sleep(0.2)


def hook_stages(env: HookEnv, container_id: str) -> list[tuple[str, str]]:
    """(stage, event) of the hook's log for one container, in order."""
    return [(str(e.get("stage")), str(e["event"])) for e in env.events() if e.get("container_id") == container_id]


class Watch:
    """Samples, while the containers run, what is gone after: OVS port counters and the containers' /proc view.

    Port counters come live from OpenFlow (ovsdb's ``statistics`` column lags by 5 s); the
    highest ``rx pkts`` per port name is kept, since a container's port goes at its poststop.
    """

    def __init__(self, ovs: OvsInstance, bridge: str, period_s: float = 0.2) -> None:
        self.target = f"unix:{os.path.join(ovs.rundir, bridge + '.mgmt')}"
        self.period_s = period_s
        self.rx: dict[str, int] = {}
        self.errors: list[str] = []
        self.sightings: dict[str, Sighting] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        try:
            self._sample()
        except (OSError, subprocess.SubprocessError) as exc:  # keep sampling; a missed sample shows in the asserts
            self.errors.append(str(exc))

    def _sample(self) -> None:
        for cid, seen in running_containers().items():
            mine = self.sightings.setdefault(cid, Sighting())
            mine.pids |= seen.pids
            mine.hugetlbfs |= seen.hugetlbfs
            mine.file_prefix = seen.file_prefix or mine.file_prefix
        proc = subprocess.run(["ovs-ofctl", "--names", "dump-ports", self.target], capture_output=True, text=True, timeout=10, check=False)
        if proc.returncode != 0:
            self.errors.append(proc.stderr.strip())
            return
        for name, pkts in re.findall(r'port\s+"?([^":\s]+)"?:\s+rx pkts=(\d+)', proc.stdout):
            self.rx[name] = max(self.rx.get(name, 0), int(pkts))

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


# --- one exchange -----------------------------------------------------------------------


@dataclass
class Sent:
    """What the engine reported for the sender container."""

    container_id: str
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Exchange:
    sender: Sent
    sender_port: str
    ovs_rx: int  # the most packets OVS counted in from the sender's port
    receiver_id: str
    received: int  # what the receiver drained afterwards
    receiver_output: list[str]
    sightings: dict[str, Sighting]


def tx_packets(stdout: str) -> int:
    """The highest TX-packets testpmd printed (its port stats each second)."""
    return max([int(n) for n in re.findall(r"TX-packets:\s+(\d+)", stdout)] or [0])


def annotation_args() -> list[str]:
    return [arg for key, value in ANNOTATIONS.items() for arg in ("--annotation", f"{key}={value}")]


@pytest.fixture
def env(tmp_path: Path, ovs: OvsInstance) -> HookEnv:
    """The hook's config for this test: pool "0" (CPU 1 is the OVS PMD's), the private OVS."""
    return make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge=BRIDGE)


def wrapper(env: HookEnv) -> engines.Settings:
    """The project's own hook interpreter and ``dpdk-oci-runtime`` (beside this interpreter), the test's config."""
    settings = engines.Settings(config=env.config_path)
    if not os.access(settings.shim, os.X_OK):
        pytest.skip(f"{settings.shim} is missing: install the project into {os.path.dirname(sys.executable)} (pip install -e .)")
    return settings


def exchange(env: HookEnv, ovs: OvsInstance, workdir: Path, send: Callable[[], Sent]) -> Exchange:
    """Receiver up (runc, through the hook, not forwarding); ``send()`` through the engine; then the receiver drains."""
    runc_root = workdir / "runc"
    runc_root.mkdir(parents=True)
    receiver_id = f"rx-{uuid.uuid4().hex[:8]}"
    bundle = make_bundle(str(workdir / "rx"), demo.testpmd_command("--no-flush-rx"),
                         {P + "vhost-user": "1", P + "hugepages": "64Mi"}, env.config_path)
    receiver = Container(str(runc_root), bundle, receiver_id)
    try:
        try:
            receiver.wait_for("testpmd> ", timeout_s=60)  # after OVS connected to its socket
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}{other_ovs_hint(ovs)}") from None
        receiver.send("set fwd rxonly")  # not started: its worker blocks until then
        with Watch(ovs, BRIDGE) as watch:
            sent = send()
        assert sent.container_id, f"the engine gave no container id:\n{sent.stderr[-3000:]}"
        assert sent.returncode == TIMED_OUT, f"sender exited {sent.returncode}:\n{sent.stdout[-3000:]}\n{sent.stderr[-3000:]}"
        wait_released(env, sent.container_id)
        receiver.send("start")
        time.sleep(0.5)
        receiver.send("stop")
        receiver.wait_for("Accumulated forward statistics", timeout_s=20)
        receiver.wait_for("testpmd> ", timeout_s=20)
        received = forward_stats(receiver.output)["rx"]
        receiver.send("quit")
    finally:
        receiver.finish()
    wait_released(env, receiver_id)
    sender_port = (env.reserved_ports(sent.container_id) or ["(no port reserved)"])[0]
    assert sender_port in watch.rx, f"never saw OVS port {sender_port}: {sorted(watch.rx)} {watch.errors[-3:]}{other_ovs_hint(ovs)}"
    return Exchange(sent, sender_port, watch.rx[sender_port], receiver_id, received, receiver.output, watch.sightings)


def check(env: HookEnv, result: Exchange) -> None:
    """The sender's hook ran at createRuntime and poststop with our reservation; packets crossed OVS."""
    cid = result.sender.container_id
    stages = hook_stages(env, cid)
    assert ("createRuntime", "prestart done") in stages and ("poststop", "released") in stages, stages
    assert {stage for stage, _ in stages} == {"createRuntime", "poststop"}, stages
    reserved = [e for e in env.events() if e["event"] == "reserved" and e.get("container_id") == cid]
    assert len(reserved) == 1, reserved
    assert reserved[0]["cpus"] == [0] and reserved[0]["hugepages_mib"] == 64 and reserved[0]["ports"] == [result.sender_port]
    out = result.sender.stdout
    print(f"sender {cid}: testpmd TX {tx_packets(out)}, OVS port {result.sender_port} rx {result.ovs_rx}, "
          f"receiver rx {result.received}; hook {stages}")
    assert tx_packets(out) > 0, out[-3000:]
    assert result.ovs_rx > 0, f"OVS port {result.sender_port} received nothing from the sender"
    assert 0 < result.received <= RING, "\n".join(result.receiver_output[-30:])


def wrapper_actions(log: Path) -> list[str]:
    """What the wrapper did on each create (its debug log)."""
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [r["action"] for r in records if r.get("command") in ("create", "run")]


# --- podman -----------------------------------------------------------------------------


def test_podman_with_rendered_hooks_d(podman: Podman, ovs: OvsInstance, env: HookEnv, testpmd_rootfs: Path, tmp_path: Path) -> None:
    """``podman --hooks-dir D run --annotation ...``: hooks.d from hook.admin.engines, testpmd sends over OVS."""
    settings = engines.Settings(config=env.config_path)  # this interpreter (the project venv) runs the hook
    engines.HooksDir().register(engines.Layout(root=str(podman.top), hooks_dir="hooks.d"), settings, False, lambda _line: None)
    assert sorted(os.listdir(podman.top / "hooks.d")) == sorted(engines.HOOK_FILES.values())
    # besides the fixture's --root/--runroot/--tmpdir: podman 4.3 opens /etc/cni/net.d/cni.lock
    # even with --network none, and puts temp files in /var/tmp
    (podman.top / "net").mkdir()
    (podman.top / "tmp").mkdir()
    base = [*podman.base, "--network-config-dir", str(podman.top / "net")]
    podman_env = {**os.environ, "TMPDIR": str(podman.top / "tmp")}
    cidfile = podman.top / "cid"
    before = hugepages_now(ovs)

    def send() -> Sent:
        proc = subprocess.run(
            [*base, "run", "--rm", "--network", "none", *PODMAN_ULIMITS, "--cidfile", str(cidfile), *annotation_args(),
             "--rootfs", str(testpmd_rootfs), *SENDER_ARGV],
            capture_output=True, text=True, timeout=120, check=False, env=podman_env,
        )
        return Sent(cidfile.read_text().strip() if cidfile.exists() else "", proc.returncode, proc.stdout, proc.stderr)

    result = exchange(env, ovs, tmp_path, send)
    check(env, result)
    assert len(result.sender.container_id) == 64  # podman's own id reached the hook
    listed = subprocess.run([*base, "ps", "-aq"], capture_output=True, text=True, timeout=60, check=False, env=podman_env)
    assert (listed.returncode, listed.stdout) == (0, ""), listed.stderr
    assert_nothing_left(env, ovs, before, result, testpmd_rootfs, podman.top)


# --- Docker -----------------------------------------------------------------------------


def test_docker_run_with_runtime_dpdk(docker_binaries: object, ovs: OvsInstance, env: HookEnv, testpmd_tarball: Path, tmp_path: Path) -> None:
    """``docker run --runtime dpdk --annotation ...`` on a private Docker 26: the wrapper injects the hook."""
    from tests.helpers.docker_engine import DockerBinaries, DockerEngine

    assert isinstance(docker_binaries, DockerBinaries)
    settings = wrapper(env)
    log = tmp_path / "wrapper.log"
    # dockerd -> containerd -> containerd-shim-runc-v2 -> the wrapper -> runc -> the hook: each inherits this
    daemon_env = {"DPDK_OCI_HOOK_CONFIG": env.config_path, "DPDK_OCI_RUNTIME": RUNC, "DPDK_OCI_RUNTIME_DEBUG_LOG": str(log)}
    engine = DockerEngine(docker_binaries, {engines.RUNTIME_NAME: settings.shim}, env=daemon_env)
    before = hugepages_now(ovs)
    try:
        engine.start()
        engine.import_image(testpmd_tarball, IMAGE)
        cidfile = tmp_path / "cid"

        def send() -> Sent:
            # no --cap-add SYS_NICE: the wrapper allows get_mempolicy/set_mempolicy/mbind in the
            # seccomp profile (Docker's default gates them on CAP_SYS_NICE, moby#37242)
            proc = engine.docker("run", "--rm", "--runtime", engines.RUNTIME_NAME, "--network", "none",
                                 "--cidfile", str(cidfile), *annotation_args(), IMAGE, *SENDER_ARGV, check=False)
            return Sent(cidfile.read_text().strip() if cidfile.exists() else "", proc.returncode, proc.stdout, proc.stderr)

        result = exchange(env, ovs, tmp_path / "x", send)
        assert engine.docker("ps", "-aq").stdout.strip() == ""
    finally:
        with contextlib.suppress(Exception):
            if engine.proc is not None and engine.proc.poll() is None:
                for cid in engine.docker("ps", "-aq", check=False).stdout.split():
                    engine.docker("rm", "-f", cid, check=False)
        engine.stop()  # dockerd, then its containerd, by pid; removes the data and exec roots
    assert not engine.dir.exists()
    check(env, result)
    assert wrapper_actions(log) == ["injected createRuntime,poststop,numa-syscalls"]
    assert_nothing_left(env, ovs, before, result)


# --- containerd -------------------------------------------------------------------------


def test_ctr_run_with_the_wrapper_as_runc_binary(ovs: OvsInstance, env: HookEnv, testpmd_rootfs: Path, tmp_path: Path) -> None:
    """``ctr run --runc-binary <wrapper> --annotation ... --rootfs DIR`` against a private containerd."""
    require_ctr()
    settings = wrapper(env)
    log = tmp_path / "wrapper.log"
    daemon_env = {"DPDK_OCI_HOOK_CONFIG": env.config_path, "DPDK_OCI_RUNTIME": RUNC, "DPDK_OCI_RUNTIME_DEBUG_LOG": str(log)}
    before = hugepages_now(ovs)
    with private_containerd(env=daemon_env) as ctd:
        container_id = f"dpdk-tx-{uuid.uuid4().hex[:8]}"

        def send() -> Sent:
            # runc state and stdio FIFOs in the private tree too (by default /run/containerd/runc/<ns> and
            # /run/containerd/fifo; the shim's socket in /run/containerd/s cannot be moved in containerd 1.6)
            proc = ctd.ctr("run", "--rm", "--runc-binary", settings.shim, "--runc-root", str(ctd.dir / "runc"), "--fifo-dir",
                           str(ctd.dir / "fifo"), *annotation_args(), "--rootfs", str(testpmd_rootfs), container_id, *SENDER_ARGV)
            return Sent(container_id, proc.returncode, proc.stdout, proc.stderr)

        result = exchange(env, ovs, tmp_path / "x", send)
        assert ctd.ctr("containers", "ls", "-q").stdout.strip() == ""
    assert not ctd.dir.exists()
    check(env, result)
    assert wrapper_actions(log) == ["injected createRuntime,poststop"]
    assert_nothing_left(env, ovs, before, result, testpmd_rootfs)
