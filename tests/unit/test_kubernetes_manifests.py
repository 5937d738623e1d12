"""deploy/kubernetes: the manifests parse and say what the node needs (host paths, privileges, names, resources)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hook.admin.cli import build_parser
from hook.admin.engines.base import RUNTIME_NAME
from hook.kubernetes.defaults import DEVICE_PLUGIN_DIR, RESOURCE_NAME
from hook.units import parse_size_kib

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
INSTALL_PATHS = {"/opt/dpdk-oci-hook", "/etc/dpdk-oci-hook", "/usr/share/containers/oci/hooks.d", "/etc/containerd", "/run"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def host_paths(pod_spec: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in pod_spec["volumes"] if "hostPath" in v}


def test_every_manifest_parses_into_known_kinds() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == ["DaemonSet", "Namespace", "Pod", "RuntimeClass"]
    assert all(d.get("apiVersion") and d.get("metadata", {}).get("name") for d in documents())


def test_installer_is_privileged_and_writes_the_node_paths_in_place() -> None:
    """The install step sees each host path at its own path, as install.sh expects them."""
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    paths = host_paths(spec)
    (install,) = spec["initContainers"]
    assert install["securityContext"]["privileged"] is True
    mounted = {paths[m["name"]]: m["mountPath"] for m in install["volumeMounts"]}
    assert set(mounted) == INSTALL_PATHS
    assert all(host == inside for host, inside in mounted.items())
    script = DEPLOY / Path(install["command"][0]).relative_to("/src/deploy/kubernetes")
    assert script.is_file() and "/src/install.sh --no-switch" in script.read_text()
    env = {e["name"]: e["value"] for e in install["env"]}
    assert env["ENGINES"] == "containerd" and env["PIP_NO_INDEX"] == "1"
    assert spec["automountServiceAccountToken"] is False  # a token under /run would land on the node


def test_device_plugin_container_runs_the_real_command_unprivileged() -> None:
    """Its command parses with the CLI; it mounts kubelet's plugin directory and OVS's run directory only."""
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    paths = host_paths(spec)
    (plugin,) = spec["containers"]
    assert plugin["command"][0].endswith("/dpdk-oci-hook")
    args = build_parser().parse_args(plugin["command"][1:])
    assert args.command == "device-plugin" and args.ports == 64 and args.plugin_dir == DEVICE_PLUGIN_DIR
    mounted = {paths[m["name"]]: m["mountPath"] for m in plugin["volumeMounts"]}
    assert mounted == {DEVICE_PLUGIN_DIR: DEVICE_PLUGIN_DIR, "/run/openvswitch": "/run/openvswitch"}
    context = plugin["securityContext"]
    assert not context.get("privileged") and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_runtime_class_names_the_engines_runtime() -> None:
    """handler is the CRI runtime install.sh adds to containerd; it schedules where the DaemonSet runs."""
    runtime_class = one("RuntimeClass")
    assert runtime_class["metadata"]["name"] == "dpdk"
    assert runtime_class["handler"] == RUNTIME_NAME == "dpdk"
    node_selector = one("DaemonSet")["spec"]["template"]["spec"]["nodeSelector"]
    assert runtime_class["scheduling"]["nodeSelector"] == node_selector


def test_example_pod_is_guaranteed_with_hugepages_and_a_port() -> None:
    """requests == limits, whole cpus, 2 MiB hugepages and the device plugin's resource, through RuntimeClass dpdk."""
    pod = one("Pod")["spec"]
    assert pod["runtimeClassName"] == "dpdk"
    (container,) = pod["containers"]
    assert container["image"] == "dpdk-oci-hook/testpmd:22.11"
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests == limits
    assert str(limits["cpu"]).isdigit() and int(limits["cpu"]) >= 1
    assert parse_size_kib(limits["hugepages-2Mi"]) >= parse_size_kib("64Mi")  # the testpmd image's min-hugepages
    assert limits[RESOURCE_NAME] == "1"
    assert not container["securityContext"].get("privileged")
