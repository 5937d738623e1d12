"""The node checks read kubelet's CPU manager state, its config, the plugin socket and containerd's runtime."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from hook.kubernetes.defaults import ENDPOINT
from hook.kubernetes.node import ERROR, INFO, OK, WARN, containerd_findings, node_findings, top_level_value

RUNTIME_V2 = """version = 2
[plugins."io.containerd.grpc.v1.cri"]
{hugetlb}
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.dpdk]
  runtime_type = "io.containerd.runc.v2"
  pod_annotations = ["dpdk-oci-hook/*"]
{extra}
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.dpdk.options]
  BinaryName = "/opt/dpdk-oci-hook/venv/bin/dpdk-oci-runtime"
"""


def node(tmp_path: Path, policy: str | None, config: str = "", containerd: str | None = None, plugin: bool = False) -> list[tuple[str, str, str]]:
    kubelet = tmp_path / "kubelet"
    plugins = kubelet / "device-plugins"
    plugins.mkdir(parents=True)
    if policy is not None:
        (kubelet / "cpu_manager_state").write_text(json.dumps({"policyName": policy, "defaultCpuSet": "0-7", "checksum": 1}))
    if config:
        (kubelet / "config.yaml").write_text(config)
    if plugin:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(plugins / ENDPOINT))
    path = tmp_path / "config.toml"
    if containerd is not None:
        path.write_text(containerd)
    return node_findings(str(kubelet), numa_nodes=2, plugin_dir=str(plugins), containerd_config=str(path))


def levels(findings: list[tuple[str, str, str]]) -> list[str]:
    return [level for level, _what, _fix in findings]


def test_not_a_node(tmp_path: Path) -> None:
    assert node_findings(str(tmp_path / "absent")) == []


def test_a_node_that_fits(tmp_path: Path) -> None:
    config = "kind: KubeletConfiguration\ncpuManagerPolicy: static\ntopologyManagerPolicy: single-numa-node  # NUMA\n"
    containerd = RUNTIME_V2.format(extra='  container_annotations = ["dpdk-oci-hook/*"]', hugetlb="  disable_hugetlb_controller = false")
    found = node(tmp_path, "static", config, containerd, plugin=True)
    assert levels(found) == [OK, OK, OK, OK], found


def test_a_node_that_does_not(tmp_path: Path) -> None:
    """CPU manager none, no topology policy, no plugin, a runtime without container_annotations: each says its fix."""
    found = node(tmp_path, "none", "cpuManagerPolicy: none\n", RUNTIME_V2.format(extra="", hugetlb=""))
    assert levels(found) == [WARN, WARN, WARN, WARN, WARN], found
    assert all(fix for _level, _what, fix in found)
    assert "container_annotations" in found[3][2] and "disable_hugetlb_controller = false" in found[4][2]


def test_fresh_node_and_missing_runtime(tmp_path: Path) -> None:
    found = node(tmp_path, None, "", 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n')
    assert levels(found)[:2] == [INFO, INFO] and "no CRI runtime dpdk" in found[3][1]


def test_broken_containerd_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("version = 2\n[plugins\n")
    assert levels(containerd_findings(str(path))) == [ERROR]
    assert containerd_findings(str(tmp_path / "none.toml")) == []


def test_top_level_value() -> None:
    text = "a:\n  cpuManagerPolicy: none\ncpuManagerPolicy: 'static'\n"
    assert top_level_value(text, "cpuManagerPolicy") == "static"
    assert top_level_value(text, "topologyManagerPolicy") is None
