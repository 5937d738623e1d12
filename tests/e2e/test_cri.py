"""The Kubernetes path without kubelet: containerd's CRI driven as kubelet drives it, through RuntimeClass ``dpdk``.

A private containerd runs its CRI plugin with the runtime ``dpdk`` (runc shim, ``BinaryName``
= the hook's ``dpdk-oci-runtime``, ``container_annotations = ["dpdk-oci-hook/*"]``), as the
DaemonSet's install step sets it up.  The test then makes the calls kubelet makes for a
Guaranteed pod with one ``dpdk-oci-hook.io/vhost-user`` device: RunPodSandbox (host network,
handler ``dpdk``), CreateContainer with the device plugin's Allocate annotations and kubelet's
linux resources (an exclusive cpuset from the static CPU manager, a CFS quota of one core, a
64 MiB ``2MB`` hugepage limit), StartContainer, then StopContainer, RemoveContainer,
StopPodSandbox, RemovePodSandbox.  Images come from rootfs tarballs through ``ctr import``
(no registry): a busybox pause image and the cached testpmd rootfs.

Proven: containerd's OCI spec for the container carries the device plugin's annotation,
kubelet's cpuset and hugepage limit, and :func:`hook.request.kubernetes.kubelet_request` reads
them as exclusive core 0 and 64 MiB of 2 MiB pages; testpmd runs and transmits through its
port on exactly kubelet's core, with the hugepage limit as its private hugetlbfs, and the
hook's ledger records kubelet's core; after removal no reservation, socket directory or OVS
port is left.

containerd passes kubelet's hugepage limit only with ``disable_hugetlb_controller = false``
and the hugetlb controller in the cgroup v1 hierarchy (else it drops the limit silently, or,
with ``tolerate_missing_hugetlb_controller = false`` as here, refuses): on a hybrid host where
the controller sits unused in the v2 hierarchy, the test mounts it under
/sys/fs/cgroup/hugetlb for its duration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook.admin import engines
from hook.kubernetes.device_plugin import allocation_annotations
from hook.request.kubernetes import kubelet_request
from tests.helpers import dpdk_image
from tests.helpers.engines_fixtures import Rootfs
from tests.helpers.hook_env import HookEnv, make_env
from tests.helpers.ovs_instance import OvsInstance

grpc = pytest.importorskip("grpc")
cri = pytest.importorskip("tests.helpers.cri_v1_pb2")

from tests.helpers.cri_client import host_network_sandbox, oci_archive, private_cri_containerd  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (containerd, OVS-DPDK, hugepages)"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("containerd", "ctr", "containerd-shim-runc-v2", "runc")),
                       reason="containerd, ctr, containerd-shim-runc-v2 and runc are needed"),
    pytest.mark.skipif(not shutil.which("mmdebstrap"), reason="mmdebstrap is not installed: no way to make a testpmd image here"),
]

BRIDGE = "br-cri"
RUNC = "/usr/sbin/runc"
TESTPMD_IMAGE = "docker.io/dpdk-oci-hook/testpmd-cri:test"
KUBELET_CORE = "0"  # the hook's test pool; CPU 1 is the private OVS's PMD
HUGEPAGE_LIMIT = 64 * 1024 * 1024
CFS_PERIOD = 100000
TESTPMD = ("exec stdbuf -oL dpdk-testpmd $(cat /run/dpdk/eal.args) --iova-mode=va -- "
           "--forward-mode=txonly --stats-period=1 --total-num-mbufs=2048")
WAIT_S = 60.0
HUGETLB_V1 = Path("/sys/fs/cgroup/hugetlb")
OWNER = "external_ids:dpdk-oci-hook-owner"


@pytest.fixture
def env(tmp_path: Path, ovs: OvsInstance) -> HookEnv:
    return make_env(tmp_path, ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge=BRIDGE)


@pytest.fixture(scope="module")
def testpmd_tarball() -> Path:
    return dpdk_image.testpmd_tarball()


@pytest.fixture
def hugetlb_v1() -> Iterator[None]:
    """The hugetlb controller in the v1 hierarchy (mounted for the test if it is free in v2)."""
    if HUGETLB_V1.is_dir() and os.path.ismount(HUGETLB_V1):
        yield
        return
    HUGETLB_V1.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)], capture_output=True, text=True, check=False)
    if done.returncode:
        HUGETLB_V1.rmdir()
        pytest.skip(f"no hugetlb cgroup controller in the v1 hierarchy, and it cannot be mounted: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(HUGETLB_V1)], capture_output=True, check=False)
        if not os.path.ismount(HUGETLB_V1):
            HUGETLB_V1.rmdir()


def kubelet_resources() -> object:
    """What kubelet sends for limits {cpu: 1, memory: 512Mi, hugepages-2Mi: 64Mi} under the static CPU manager."""
    return cri.LinuxContainerResources(
        cpu_period=CFS_PERIOD, cpu_quota=CFS_PERIOD, cpu_shares=1024, cpuset_cpus=KUBELET_CORE,
        memory_limit_in_bytes=512 * 1024 * 1024,
        hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=HUGEPAGE_LIMIT)],
    )


def read_log(path: Path) -> str:
    """The container's output from its CRI log (``<time> <stream> <tag> <line>`` per line)."""
    if not path.exists():
        return ""
    return "\n".join(line.split(" ", 3)[-1] for line in path.read_text(errors="replace").splitlines())


def tx_packets(output: str) -> int:
    return max([int(n) for n in re.findall(r"TX-packets:\s+(\d+)", output)] or [0])


def proc_status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def hugetlbfs_options(pid: int, target: str = "/dev/hugepages") -> str:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target and " - hugetlbfs " in line:
            return line.rsplit(" ", 1)[-1]
    return ""


def wait_released(env: HookEnv, container_id: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not any(e["event"] == "released" and e.get("container_id") == container_id for e in env.events()):
        assert time.monotonic() < deadline, f"no release of {container_id}: {env.events()[-5:]}"
        time.sleep(0.2)


def test_cri_pod_runs_testpmd_on_kubelets_core_and_hugepage_limit(
    ovs: OvsInstance, env: HookEnv, busybox_rootfs: Rootfs, testpmd_tarball: Path, hugetlb_v1: None, tmp_path: Path
) -> None:
    settings = engines.Settings(config=env.config_path)
    if not os.access(settings.shim, os.X_OK):
        pytest.skip(f"{settings.shim} is missing: install the project (pip install -e .)")
    daemon_env = {"DPDK_OCI_HOOK_CONFIG": env.config_path, "DPDK_OCI_RUNTIME": RUNC}
    pods = tmp_path / "pods"
    pods.mkdir()
    with private_cri_containerd(settings.shim, busybox_rootfs.tarball, daemon_env) as ctd:
        ctd.import_image(oci_archive(testpmd_tarball, TESTPMD_IMAGE, tmp_path / "testpmd.tar"))
        client = ctd.client
        sandbox = host_network_sandbox("testpmd-0", str(uuid.uuid4()), "dpdk", str(pods))
        pod_id = client.call("RunPodSandbox", config=sandbox, runtime_handler="dpdk").pod_sandbox_id
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="testpmd", attempt=0),
            image=cri.ImageSpec(image=TESTPMD_IMAGE),
            command=["/bin/sh", "-c", TESTPMD],
            annotations=allocation_annotations(1),  # the device plugin's Allocate answer for one device
            log_path="testpmd.log",
            linux=cri.LinuxContainerConfig(resources=kubelet_resources()),
        )
        container_id = client.call("CreateContainer", pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox).container_id

        # containerd's OCI spec carries what the hook reads: the Allocate annotation (through
        # container_annotations), kubelet's cpuset and hugepage limit; the hook's reading of it
        spec = json.loads(ctd.ctr("containers", "info", container_id).stdout)["Spec"]
        assert spec["annotations"]["dpdk-oci-hook/vhost-user"] == "1"
        assert spec["annotations"]["io.kubernetes.cri.container-type"] == "container"
        assert spec["linux"]["resources"]["cpu"]["cpus"] == KUBELET_CORE
        assert {"pageSize": "2MB", "limit": HUGEPAGE_LIMIT} in spec["linux"]["resources"]["hugepageLimits"]
        kube = kubelet_request(spec, spec["annotations"])
        assert kube is not None and kube.context.pod == "testpmd-0" and kube.context.namespace == "dpdk"
        assert (kube.cpus, kube.exclusive, kube.hugepages_mib, kube.hugepage_size_kib) == ((0,), True, HUGEPAGE_LIMIT >> 20, 2048)

        client.call("StartContainer", container_id=container_id)  # runc create: the hook's createRuntime
        status = client.call("ContainerStatus", container_id=container_id, verbose=True)
        pid = int(json.loads(status.info["info"])["pid"])
        log = pods / "testpmd.log"
        deadline = time.monotonic() + WAIT_S
        while tx_packets(read_log(log)) == 0:
            assert time.monotonic() < deadline, f"testpmd sent nothing:\n{read_log(log)[-3000:]}"
            time.sleep(0.5)

        assert proc_status(pid, "Cpus_allowed_list") == KUBELET_CORE  # kubelet's core, not one the hook picked
        assert "size=64M" in hugetlbfs_options(pid) or "size=67108864" in hugetlbfs_options(pid), hugetlbfs_options(pid)
        entry = env.ledger()[container_id]
        assert isinstance(entry, dict) and entry["cpus"] == [int(KUBELET_CORE)] and entry["hugepages_mib"] == HUGEPAGE_LIMIT >> 20

        client.call("StopContainer", container_id=container_id, timeout=10)
        client.call("RemoveContainer", container_id=container_id)
        client.call("StopPodSandbox", pod_sandbox_id=pod_id)
        client.call("RemovePodSandbox", pod_sandbox_id=pod_id)
        wait_released(env, container_id)
    assert env.ledger() == {}
    assert env.owner_records() == []
    assert ovs.vsctl("--bare", "--columns=name", "find", "Interface", f'{OWNER}!=""', wait=False).split() == []
