"""``dpdk-oci-hook doctor``: each check against real files, a real OVS, real engine configs, this host's sysfs.

Configs, ledgers and engine files live under ``tmp_path``; the OVS is the suite's private one;
the device report (udev) is compared with what sysfs shows on this machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hook.admin import doctor, engines
from hook.host.devices import HostDevices, enumerate_devices
from hook.units import format_cpulist, format_size_kib, parse_cpulist
from tests.helpers.ovs_instance import OvsInstance

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, ovsdb: str, bridge: str = "brdoc", create_bridge: bool = False) -> str:
    path = tmp_path / "config.hcl"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'log_file  = "{tmp_path / "hook.log"}"\n'
        'cpus {\n  pool = "0"\n}\n'
        'hugepages {\n  page_size = "2Mi"\n  budget = "64Mi"\n}\n'
        f'switch {{\n  backend = "ovs"\n  bridge = "{bridge}"\n  ovsdb = "{ovsdb}"\n'
        f"  create_bridge = {'true' if create_bridge else 'false'}\n  timeout_s = 2\n}}\n"
    )
    return str(path)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPDK_OCI_HOOK_CACHE_DIR", str(tmp_path / "cache"))


def by_what(findings: list[doctor.Finding], text: str) -> doctor.Finding:
    matches = [f for f in findings if text in f.what]
    assert len(matches) == 1, (text, [f.line() for f in findings])
    return matches[0]


def test_unreachable_switch_bad_config_and_missing_registration(tmp_path: Path) -> None:
    """No OVS: an error with its fix; engines present but unregistered: warnings; every finding one line."""
    layout = engines.Layout(root=str(tmp_path / "root"))
    (tmp_path / "root/etc/docker").mkdir(parents=True)
    findings = doctor.run_doctor(write_config(tmp_path, f"unix:{tmp_path}/no-such.sock"), layout, engines.Settings(python=sys.executable))
    for finding in findings:
        assert finding.level in (doctor.OK, doctor.INFO, doctor.WARN, doctor.ERROR)
        assert "\n" not in finding.line()
        assert finding.level in (doctor.OK, doctor.INFO) or finding.fix
    ovs = by_what(findings, "OVS not reachable")
    assert ovs.level == doctor.ERROR and "start OVS-DPDK" in ovs.fix
    assert by_what(findings, "Docker: no runtime dpdk").level == doctor.WARN
    assert by_what(findings, "ledger").level == doctor.OK
    assert by_what(findings, "runc 1.").level == doctor.OK

    broken = doctor.run_doctor(str(tmp_path / "missing.hcl"), layout)
    assert broken[0].level == doctor.ERROR and "missing.hcl" in broken[0].what
    assert not [f for f in broken if "OVS" in f.what or "ledger" in f.what]  # nothing that needs the config


def test_registration_made_by_engines_is_seen(tmp_path: Path) -> None:
    """What hook.admin.engines registers, doctor reports as ok; a wrapper that is not executable is an error."""
    layout = engines.Layout(root=str(tmp_path / "root"))
    (tmp_path / "root/etc/docker").mkdir(parents=True)
    bin_dir = tmp_path / "root/opt/venv/bin"  # paths in the files are seen from inside the root
    bin_dir.mkdir(parents=True)
    for name in ("python3", "dpdk-oci-runtime"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    shim = bin_dir / "dpdk-oci-runtime"
    settings = engines.Settings(python="/opt/venv/bin/python3", templates=str(REPO_ROOT / "templates/hooks.d"))
    assert engines.register_all(engines=["podman", "docker", "containerd"], layout=layout, settings=settings, say=lambda _: None) == 0
    found = doctor.check_registration(layout, settings)
    lines = [f.line() for f in found]
    assert by_what(found, "Docker: runtime dpdk").level == doctor.OK, lines
    if engines.detect(layout)["podman"]:
        assert [f.level for f in found if f.what.startswith("hooks.d")] == [doctor.OK, doctor.OK], lines
    if engines.detect(layout)["containerd"]:
        assert by_what(found, "containerd: CRI runtime dpdk").level == doctor.OK
    shim.chmod(0o644)
    assert by_what(doctor.check_registration(layout, settings), "Docker: runtime dpdk").level == doctor.ERROR


def test_corrupt_ledger_is_an_error_with_the_rebuild_fix(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, f"unix:{tmp_path}/no-such.sock")
    (tmp_path / "state").mkdir()
    (tmp_path / "state/ledger.json").write_text('{"format": 1, "checksum": "x", "entries": {}}')
    from hook import config as config_mod

    [finding] = doctor.check_ledger(config_mod.load(config_path))
    assert finding.level == doctor.ERROR and "checksum" in finding.what and finding.fix == "dpdk-oci-hook gc --rebuild"


def test_switch_checks_against_a_private_ovs_dpdk(tmp_path: Path, ovs: OvsInstance) -> None:
    """Reachable, DPDK initialized, and the bridge: netdev is ok, missing is an error or a warning."""
    from hook import config as config_mod

    bridge = ovs.unique("brdoc")
    ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
    try:
        found = doctor.check_switch(config_mod.load(write_config(tmp_path, ovs.db, bridge)))
        assert [f.level for f in found] == [doctor.OK, doctor.OK, doctor.OK], [f.line() for f in found]
        assert "datapath_type=netdev" in found[2].what
    finally:
        ovs.vsctl("--if-exists", "del-br", bridge)
    (tmp_path / "b").mkdir()
    missing = doctor.check_switch(config_mod.load(write_config(tmp_path / "b", ovs.db, bridge)))
    assert missing[-1].level == doctor.ERROR and f"ovs-vsctl add-br {bridge}" in missing[-1].fix
    (tmp_path / "c").mkdir()
    creatable = doctor.check_switch(config_mod.load(write_config(tmp_path / "c", ovs.db, bridge, create_bridge=True)))
    assert creatable[-1].level == doctor.WARN


def _sysfs(tmp_path: Path, total: int, free: int) -> str:
    pool = tmp_path / "sys/kernel/mm/hugepages/hugepages-2048kB"
    pool.mkdir(parents=True, exist_ok=True)
    (pool / "nr_hugepages").write_text(f"{total}\n")
    (pool / "free_hugepages").write_text(f"{free}\n")
    return str(tmp_path / "sys")


def test_hugepage_pool_levels(tmp_path: Path) -> None:
    """An empty pool is an error, one smaller than the budget a warning, enough is ok."""
    from hook import config as config_mod

    config = config_mod.load(write_config(tmp_path, "unix:/nowhere"))  # budget 64 MiB = 32 pages
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("40 25 0:41 / /dev/hugepages rw,relatime shared:20 - hugetlbfs hugetlbfs rw,pagesize=2M\n")
    levels = {
        (total, free): [f.level for f in doctor.check_hugepages(config, _sysfs(tmp_path, total, free), str(mountinfo))]
        for total, free in ((0, 0), (40, 10), (64, 64))
    }
    assert levels == {(0, 0): ["error", "ok"], (40, 10): ["warn", "ok"], (64, 64): ["ok", "ok"]}
    mountinfo.write_text("")
    assert doctor.check_hugepages(config, _sysfs(tmp_path, 64, 64), str(mountinfo))[1].level == doctor.WARN


@pytest.mark.parametrize(
    ("text", "version"),
    [("Docker version 26.1.5+dfsg1, build 411e817", (26, 1, 5)), ("runc version 1.1.5+ds1", (1, 1, 5)),
     ("podman version 4.3.1", (4, 3, 1)), ("containerd github.com/containerd/containerd 1.6.20~ds1", (1, 6, 20)), ("nothing", None)],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert doctor.parse_version(text) == version


def test_main_prints_one_line_per_finding_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, f"unix:{tmp_path}/no-such.sock")
    assert doctor.main(config_path) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("warning(s)") and all(line.startswith("[") for line in out[:-1])
    assert doctor.main(config_path, as_json=True) == 1
    assert {"level", "what", "fix"} <= set(json.loads(capsys.readouterr().out)[0])
    assert os.environ.get("DPDK_OCI_HOOK_CACHE_DIR", "").startswith(str(tmp_path))


# --- devices through udev, against sysfs ------------------------------------------------------

SYS = Path("/sys")


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def sysfs_view() -> dict[str, Any]:
    """CPUs, nodes with hugepages, PCI network functions, read straight from sysfs (no udev)."""
    cpu_root = SYS / "devices/system/cpu"
    cpus = sorted(int(p.name[3:]) for p in cpu_root.glob("cpu[0-9]*"))
    nodes = {}
    for node in sorted((SYS / "devices/system/node").glob("node[0-9]*")):
        pools = {}
        for pool in sorted(node.glob("hugepages/hugepages-*kB")):
            pools[int(pool.name[len("hugepages-"):-2])] = (int(_read(pool / "nr_hugepages")), int(_read(pool / "free_hugepages")))
        nodes[int(node.name[4:])] = (parse_cpulist(_read(node / "cpulist")), pools)
    network = {}
    for function in sorted((SYS / "bus/pci/devices").iterdir()):
        if not _read(function / "class").startswith("0x02"):
            continue
        driver = os.path.basename(os.readlink(function / "driver")) if (function / "driver").exists() else None
        numa = int(_read(function / "numa_node")) if (function / "numa_node").exists() else -1
        interfaces = tuple(sorted(p.name for p in function.glob("**/net/*")))
        network[function.name] = (driver, numa if numa >= 0 else None, interfaces)
    return {"cpus": cpus, "online": parse_cpulist(_read(cpu_root / "online")), "nodes": nodes, "network": network}


def udev_view(devices: HostDevices) -> dict[str, Any]:
    return {
        "cpus": [c.cpu_id for c in devices.cpus],
        "online": devices.online_cpus,
        "nodes": {n.node_id: (n.cpus, {size: (p.total, p.free) for size, p in n.hugepages.items()}) for n in devices.nodes},
        "network": {d.pci_address: (d.driver, d.numa_node, d.interfaces) for d in devices.network},
    }


def stable_views() -> tuple[dict[str, Any], HostDevices]:
    """udev's and sysfs's views, taken while nothing changed (other tests move hugepages)."""
    for _ in range(20):
        before = sysfs_view()
        devices = enumerate_devices()
        if sysfs_view() == before:
            return before, devices
        time.sleep(0.2)
    pytest.fail("sysfs kept changing while the devices were enumerated")


def test_device_report_matches_sysfs() -> None:
    """doctor's udev enumeration finds the CPUs, nodes, per-node hugepages and PCI NICs that sysfs shows."""
    sysfs, devices = stable_views()
    assert udev_view(devices) == sysfs
    found = doctor.device_findings(devices)
    lines = [f.line() for f in found]
    assert all(f.level == doctor.INFO for f in found), lines
    assert by_what(found, "CPUs (udev)").what.startswith(f"CPUs (udev): {len(sysfs['cpus'])} present, online {format_cpulist(sysfs['online'])}")
    for node_id, (cpus, pools) in sysfs["nodes"].items():
        line = by_what(found, f"NUMA node {node_id} (udev)").what
        assert f"CPUs {format_cpulist(cpus)}" in line, line
        for size_kib, (total, free) in pools.items():
            assert f"{format_size_kib(size_kib)} pages: {total} total, {free} free" in line, line
    for address, (driver, numa, interfaces) in sysfs["network"].items():
        line = by_what(found, f"network device {address}").what
        assert f"driver {driver or 'none'}" in line and ("no NUMA affinity" if numa is None else f"NUMA node {numa}") in line, line
        assert all(name in line for name in interfaces), line
        assert ("bound to vfio-pci" in line and "not bound" not in line) is (driver == "vfio-pci"), line
    if not sysfs["network"]:
        assert by_what(found, "no PCI network device")


def test_run_doctor_reports_devices_and_pool_cpus_that_are_not_online(tmp_path: Path) -> None:
    """run_doctor includes the udev report; a cpus.pool naming a CPU this host lacks is a warning with a fix."""
    config_path = write_config(tmp_path, f"unix:{tmp_path}/no-such.sock")
    findings = doctor.run_doctor(config_path, engines.Layout(root=str(tmp_path / "root")), engines.Settings(python=sys.executable))
    assert by_what(findings, "CPUs (udev)").level == doctor.INFO
    assert not [f for f in findings if "udev and sysfs disagree" in f.what]
    absent = max(enumerate_devices().online_cpus) + 1
    warned = doctor.device_findings(enumerate_devices(), cpu_pool=frozenset({0, absent}))
    pool = by_what(warned, "cpus.pool names CPUs")
    assert pool.level == doctor.WARN and f"CPUs {absent} " in pool.what and "set cpus.pool" in pool.fix


def test_docker_absent_is_one_info_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without dockerd, the version checks say so in one line that is not an error."""
    monkeypatch.setattr(engines.Docker, "version", lambda self: (None, None))
    docker = [f for f in doctor.check_versions() if f.what.startswith("Docker")]
    assert [f.level for f in docker] == [doctor.INFO] and "not installed" in docker[0].what
