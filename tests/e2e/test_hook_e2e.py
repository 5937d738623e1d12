"""The hook end to end with real runc, a real private OVS-DPDK, real hugepages and testpmd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hook.admin import demo
from hook.admin.runc_bundle import make_bundle, run_to_end
from hook.config import load as load_config
from hook.entry import stage_argv
from tests.helpers.hook_env import HookEnv, HostTestpmd, hugepages_free, hugepages_mapped_by, hugetlbfs_mounts, make_env
from tests.helpers.ovs_instance import OvsInstance

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed"),
]
P = "dpdk-oci-hook/"
OWNER = "external_ids:dpdk-oci-hook-owner"


def owned_interfaces(ovs: OvsInstance) -> list[str]:
    out = ovs.vsctl("--bare", "--columns=name", "find", "Interface", f'{OWNER}!=""', wait=False)
    return sorted(out.split())


def pool_state(ovs: OvsInstance | None) -> tuple[int, int, tuple[str, ...]]:
    """(free pages + pages OVS maps itself, reserved pages, extra hugetlbfs mounts): what the hook must give back."""
    free, reserved = hugepages_free()
    return free + hugepages_mapped_by(ovs.pid("ovs-vswitchd") if ovs else None), reserved, tuple(hugetlbfs_mounts())


def assert_nothing_left(env: HookEnv, ovs: OvsInstance | None, before: tuple[int, int, tuple[str, ...]]) -> None:
    assert env.ledger() == {}
    assert env.owner_records() == []
    assert tuple(hugetlbfs_mounts()) == before[2]
    if ovs is not None:
        assert owned_interfaces(ovs) == []
    deadline = time.monotonic() + 10  # the namespace (and its hugetlbfs) goes a moment after the process
    while pool_state(ovs) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool_state(ovs) == before


@pytest.fixture
def env(tmp_path: Path, ovs: OvsInstance) -> HookEnv:
    return make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-e2e")


def test_two_containers_pass_packets_over_ovs(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """The demo: tx and rx wired by the hook, 90% of what tx sent arrives at rx, a rate and a latency per path; nothing is left after."""
    before = pool_state(ovs)
    seen: list[str] = []
    started = time.monotonic()
    result = demo.run_demo(env.config_path, workdir=str(tmp_path / "demo"), say=seen.append)
    assert time.monotonic() - started < 90, seen
    assert result.tx_packets >= 1000, "\n".join(result.tx_output[-30:])
    assert result.rx_packets >= 0.9 * result.tx_packets, "\n".join(result.rx_output[-30:])
    assert result.ok, seen
    ovs_path, kernel_path = result.paths
    assert ovs_path.rate_pps and ovs_path.rtt_us and ovs_path.received >= 0.9 * ovs_path.sent, seen
    assert kernel_path.rate_pps and kernel_path.rtt_us, seen
    assert sum(line.startswith("==> ") for line in seen) >= 5, seen  # one progress line per phase
    assert any("link up" in line for line in seen), seen  # status with live counters while both run
    assert "dpdkdemo" not in " ".join(os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
    assert "cookie=0xde3" not in subprocess.run(["ovs-ofctl", "dump-flows", f"unix:{ovs.rundir}/br-e2e.mgmt"],
                                                capture_output=True, text=True, timeout=30).stdout
    assert ovs.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-maxsleep", wait=False).strip().strip('"') == "10000"
    events = [e["event"] for e in env.events()]
    assert events.count("prestart done") == 2 and events.count("released") == 2
    assert_nothing_left(env, ovs, before)


def test_container_sees_its_layout(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """Inside: eal.args, config.json, a capped private hugetlbfs, and the pinned cores."""
    before = pool_state(ovs)
    script = (
        "cat /run/dpdk/eal.args; cat /run/dpdk/config.json; stat -f -c 'fs=%T' /dev/hugepages; "
        "grep Cpus_allowed_list /proc/self/status; ls /run/dpdk"
    )
    annotations = {P + "vhost-user": '[{"mode":"client"}]', P + "cpus": "1", P + "hugepages": "32Mi"}
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/sh", "-c", script], annotations, env.config_path)
    proc = run_to_end(str(tmp_path / "runc"), bundle, "layout")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "fs=hugetlbfs" in out
    assert "Cpus_allowed_list:\t0" in out
    doc = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert doc["cpus"] == [0] and doc["hugepages"]["size_mib"] == 32
    port = doc["ports"][0]
    assert port["vhost-user"] == {"mode": "client", "path": "/run/dpdk/net0.sock"}
    assert out.splitlines()[0] == " ".join(doc["eal_args"])
    assert "net0.sock" in out and "config.json" in out and "eal.args" in out
    assert_nothing_left(env, ovs, before)


def test_container_without_annotations_is_untouched(env: HookEnv, tmp_path: Path) -> None:
    """A container without our annotations runs as usual and the hook touches nothing."""
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], {"other/thing": "1"}, env.config_path)
    proc = run_to_end(str(tmp_path / "runc"), bundle, "plain")
    assert proc.returncode == 0, proc.stderr
    assert not env.state_dir.exists() and not env.log_file.exists()


def test_bad_annotation_is_refused_and_changes_nothing(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """A hostile annotation stops the container with one clear line; no reservation, port or mount."""
    before = pool_state(ovs)
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], {P + "cpus": "0-4294967295"}, env.config_path)
    proc = run_to_end(str(tmp_path / "runc"), bundle, "bad")
    assert proc.returncode != 0
    assert "dpdk-oci-hook: annotation dpdk-oci-hook/cpus: '0-4294967295' is not a whole number" in proc.stderr
    assert_nothing_left(env, ovs, before)


def test_switch_failure_after_mounts_rolls_everything_back(tmp_path: Path, ovs: OvsInstance) -> None:
    """The switch refuses (no such bridge) after the hugetlbfs was mounted: nothing is left behind."""
    env = make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-missing", create_bridge=False)
    before = pool_state(ovs)
    annotations = {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "64Mi"}
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], annotations, env.config_path)
    proc = run_to_end(str(tmp_path / "runc"), bundle, "fails")
    assert proc.returncode != 0
    assert "dpdk-oci-hook: switch ovs:" in proc.stderr
    rolled = [e.get("step") for e in env.events() if e["event"] == "rolled back"]
    assert rolled == ["mounts", "run dir", "owner record", "ledger entry"]
    assert_nothing_left(env, ovs, before)


def test_corrupt_ledger_fails_closed(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """A tampered ledger makes the hook refuse the container and keep the evidence."""
    env.state_dir.mkdir(parents=True)
    ledger = env.state_dir / "ledger.json"
    ledger.write_text('{"format": 1, "checksum": "0", "entries": {}}')
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], {P + "cpus": "1"}, env.config_path)
    proc = run_to_end(str(tmp_path / "runc"), bundle, "corrupt")
    assert proc.returncode != 0
    assert "ledger" in proc.stderr and "corrupt (checksum mismatch)" in proc.stderr and "gc --rebuild" in proc.stderr
    assert ledger.read_text() == '{"format": 1, "checksum": "0", "entries": {}}'


def test_poststop_is_idempotent(env: HookEnv) -> None:
    """poststop with no prestart before it, or twice, succeeds and changes nothing."""
    state = json.dumps({"ociVersion": "1.0.2", "id": "never-started", "status": "stopped", "bundle": "/nonexistent",
                        "annotations": {P + "cpus": "1"}})
    for _ in range(2):
        proc = env.run("poststop", stdin=state)
        assert proc.returncode == 0, proc.stderr
    assert env.ledger() == {}


def test_gc_frees_what_dead_containers_left(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """A container killed without poststop leaves a reservation and a port; gc frees both, from each side."""
    before = pool_state(ovs)
    annotations = {P + "vhost-user": "1", P + "hugepages": "32Mi", P + "cpus": "1"}
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/sleep", "60"], annotations, env.config_path, hook_stages=("createRuntime",))
    runc_root = str(tmp_path / "runc")
    subprocess.run(["runc", "--root", runc_root, "create", "--bundle", bundle, "orphan"], check=True, timeout=60,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert list(env.ledger()) == ["orphan"]
        assert len(owned_interfaces(ovs)) == 1
        # a port tagged (as the hook tags Port and Interface) for an instance the ledger never knew
        tags = [f'{OWNER}="gone-long-ago"', f'external_ids:dpdk-oci-hook-scope="{load_config(env.config_path).switch.scope}"']
        ovs.vsctl("add-port", "br-e2e", "strayport", *tags, "--", "set", "Interface", "strayport", "type=dpdkvhostuserclient",
                  f"options:vhost-server-path={tmp_path}/stray.sock", *tags)
        status = json.loads(env.run("status", "--json").stdout)
        assert [e["container_id"] for e in status["entries"]] == ["orphan"] and status["entries"][0]["alive"]
        gc = env.run("gc")
        assert gc.returncode == 0, gc.stderr
        assert list(env.ledger()) == ["orphan"], "a live container must survive gc"
        assert owned_interfaces(ovs) != [] and "strayport" not in owned_interfaces(ovs)
    finally:
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", "orphan"], timeout=60, capture_output=True)
    gc = env.run("gc", "--json")
    assert gc.returncode == 0, gc.stderr
    assert [r["container_id"] for r in json.loads(gc.stdout)["released"]] == ["orphan"]
    assert_nothing_left(env, ovs, before)


def test_static_backend_with_host_testpmd(tmp_path: Path) -> None:
    """As in the DPDK how-to: a host testpmd offers a vhost socket; the hook leases it to a sending container."""
    sock_dir = tmp_path / "vhost"
    sock_dir.mkdir()
    sock = str(sock_dir / "vhost0.sock")
    env = make_env(tmp_path, backend="static", static_sockets=(sock,))
    before = pool_state(None)
    host = HostTestpmd(sock, file_prefix=f"hst{os.getpid()}")
    try:
        host.wait_ready()
        host.start_rx()
        annotations = {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "64Mi"}
        tx = demo.testpmd_command("--forward-mode=txonly --stats-period=1")[2].replace(" -i ", " ")
        script = f"test -S /var/run/usvhost && test -S /run/dpdk/net0.sock && echo sockets-ok; timeout -s INT 3 sh -c '{tx}'; true"
        bundle = make_bundle(str(tmp_path / "b"), ["/bin/sh", "-c", script], annotations, env.config_path)
        proc = run_to_end(str(tmp_path / "runc"), bundle, "static-tx", timeout_s=90)
        assert "sockets-ok" in proc.stdout, proc.stdout + proc.stderr
        rx = host.received()
        assert rx > 1000, "\n".join(host.output[-30:]) + proc.stdout
    finally:
        host.stop()
    assert_nothing_left(env, None, before)


def test_malicious_rootfs_symlinks_stay_inside(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """An image whose /run and /var/run point at host directories cannot make the hook touch them."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "marker").write_text("host data")
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/sh", "-c", "ls /run/dpdk && cat /run/dpdk/eal.args"],
                         {P + "vhost-user": '[{"mode":"client"}]', P + "hugepages": "32Mi"}, env.config_path)
    rootfs = Path(bundle, "rootfs")
    os.rmdir(rootfs / "run")
    (rootfs / "run").symlink_to(victim)  # absolute: resolved inside the rootfs, so rootfs/<victim path>
    proc = run_to_end(str(tmp_path / "runc"), bundle, "evil")
    assert sorted(os.listdir(victim)) == ["marker"] and (victim / "marker").read_text() == "host data"
    assert str(victim) not in Path("/proc/self/mounts").read_text()
    if proc.returncode == 0:  # mounted inside the rootfs, where the symlink leads within it
        assert "eal.args" in proc.stdout and (rootfs / str(victim).lstrip("/")).is_dir()
    else:
        assert "dpdk-oci-hook: mount" in proc.stderr
    assert env.ledger() == {} and owned_interfaces(ovs) == []


def test_fifty_concurrent_prestarts(tmp_path: Path) -> None:
    """50 hooks at once for containers wanting the single pool core or 4Mi of a 40Mi budget: no core or page is given twice."""
    env = make_env(tmp_path, pool="0", budget="40Mi")
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        states = []
        for i in range(50):
            rootfs = tmp_path / f"r{i}"
            rootfs.mkdir()
            # a stand-in container: its own mount namespace, like runc's before pivot_root
            proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "120"])
            sleepers.append(proc)
            annotations = {P + "cpus": "1"} if i % 2 else {P + "hugepages": "4Mi"}
            bundle = tmp_path / f"b{i}"
            bundle.mkdir()
            (bundle / "config.json").write_text(json.dumps({"root": {"path": str(rootfs)}, "annotations": annotations}))
            states.append(json.dumps({"ociVersion": "1.0.2", "id": f"c{i}", "pid": proc.pid, "bundle": str(bundle), "annotations": annotations}))
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p.pid}/ns/mnt").resolve() == Path("/proc/self/ns/mnt").resolve() for p in sleepers):
            assert time.monotonic() < deadline, "unshare did not enter its namespace"
            time.sleep(0.05)
        hook_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG": env.config_path}
        hooks = [subprocess.Popen(stage_argv(sys.executable, "createRuntime"), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=hook_env, cwd="/") for _ in states]
        for hook, state in zip(hooks, states, strict=True):
            assert hook.stdin is not None
            hook.stdin.write(state.encode())
            hook.stdin.close()
        results = [(h.wait(timeout=120), h.stderr.read().decode() if h.stderr else "") for h in hooks]
        ok = [i for i, (rc, _) in enumerate(results) if rc == 0]
        refused = [err for rc, err in results if rc != 0]
        assert [err for err in refused if "not enough" not in err] == []
        ledger = env.ledger()
        assert len(ledger) == len(ok) == 1 + 10
        cores = [c for e in ledger.values() for c in e["cpus"]]  # type: ignore[index]
        assert cores == [0]
        assert sum(e["hugepages_mib"] for e in ledger.values()) == 40  # type: ignore[index]
        lock_held = [e["lock_held_ms"] for e in env.events() if e["event"] == "reserved"]
        assert len(lock_held) == 11
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    for i in range(50):
        assert env.run("poststop", stdin=json.dumps({"id": f"c{i}", "bundle": str(tmp_path / f"b{i}"), "annotations": {P + "cpus": "1"}})).returncode == 0
    assert env.ledger() == {} and env.owner_records() == []


def test_pool_grows_on_demand_and_shrinks_back(tmp_path: Path) -> None:
    """With grow_pool, a request beyond the free pages grows the kernel pool and release gives it back."""
    knob = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    original = int(knob.read_text())
    free, reserved = hugepages_free()
    in_use = original - free + reserved
    try:
        knob.write_text(str(in_use + 8))  # only 8 unclaimed pages left
        lowered = int(knob.read_text())
        env = make_env(tmp_path, grow_pool=True, budget="1Gi")
        bundle = make_bundle(str(tmp_path / "b"), ["/bin/sh", "-c", "stat -f -c 'blocks=%b' /dev/hugepages"], {P + "hugepages": "64Mi"},
                             env.config_path)
        proc = run_to_end(str(tmp_path / "runc"), bundle, "grow")
        assert proc.returncode == 0, proc.stderr
        assert "blocks=32" in proc.stdout
        grown = [e for e in env.events() if e["event"] == "reserved"]
        assert grown[0]["grown_pages"] == 32 - 8
        assert int(knob.read_text()) == lowered
        assert env.ledger() == {}
    finally:
        knob.write_text(str(original))


def test_gc_rebuild_recovers_a_corrupt_ledger(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """gc --rebuild keeps the reservations of live containers (from their owner records) and frees the rest."""
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/sleep", "60"], {P + "vhost-user": "1", P + "hugepages": "32Mi", P + "cpus": "1"},
                         env.config_path, hook_stages=("createRuntime", "poststop"))
    runc_root = str(tmp_path / "runc")
    subprocess.run(["runc", "--root", runc_root, "create", "--bundle", bundle, "live"], check=True, timeout=60,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        journal = next(env.state_dir.glob("ledger.json.journal.*"))  # the entry's line (the snapshot is folded later)
        journal.write_text(journal.read_text().replace('"cpus":[', '"cpus":[1,', 1))  # tampered
        refused = env.run("status")
        assert refused.returncode == 5 and "corrupt" in refused.stderr
        rebuilt = env.run("gc", "--rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "ledger rebuilt with 1 live container(s)" in rebuilt.stdout
        entries = env.ledger()
        assert list(entries) == ["live"] and entries["live"]["cpus"] == [0]  # type: ignore[index]
        assert any(name.startswith("ledger.json.corrupt-") for name in os.listdir(env.state_dir))
    finally:
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", "live"], timeout=60, capture_output=True)
    assert env.ledger() == {} and owned_interfaces(ovs) == []


def test_reused_container_id_releases_its_stale_reservation(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """A container id started again without a poststop in between (podman restart) gets a fresh reservation."""
    before = pool_state(ovs)
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "32Mi"},
                         env.config_path, hook_stages=("createRuntime",))
    for _ in range(2):
        proc = run_to_end(str(tmp_path / "runc"), bundle, "again")
        assert proc.returncode == 0, proc.stderr
        assert list(env.ledger()) == ["again"] and len(owned_interfaces(ovs)) == 1
    assert [e["event"] for e in env.events()].count("released stale reservations of an earlier instance") == 1
    assert env.run("gc").returncode == 0
    assert_nothing_left(env, ovs, before)


def test_image_requirements_refuse_before_reserving(env: HookEnv, ovs: OvsInstance, tmp_path: Path) -> None:
    """An image (ENV from our templates) that needs 2 cores, given 1, is refused and nothing is reserved."""
    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], {P + "vhost-user": "1", P + "cpus": "1", P + "hugepages": "64Mi"},
                         env.config_path)
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["process"]["env"] += ["DPDK_OCI_HOOK_MIN_CPUS=2", "DPDK_OCI_HOOK_MIN_PORTS=1"]
    Path(bundle, "config.json").write_text(json.dumps(spec))
    proc = run_to_end(str(tmp_path / "runc"), bundle, "needy")
    assert proc.returncode != 0
    assert "dpdk-oci-hook: image requires dpdk-oci-hook.min-cpus=2, but the annotations give cpus=1" in proc.stderr
    assert env.ledger() == {} and owned_interfaces(ovs) == [] and env.owner_records() == []
    assert not [e for e in env.events() if e["event"] == "reserved"]
