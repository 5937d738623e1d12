"""Does this Kubernetes node fit the hook?  kubelet's CPU manager and topology manager, the device plugin, containerd's runtime.

Reads only (files; no gRPC, no kubelet API).  Each finding is ``(level, what, fix)`` with
the levels ``doctor`` uses (ok, info, warn, error); ``fix`` is empty when nothing needs doing.
A host without ``/var/lib/kubelet`` is not a node: no findings.
"""

from __future__ import annotations

import json
import os
import tomllib
from typing import Any

from hook.kubernetes.defaults import DEVICE_PLUGIN_DIR, ENDPOINT

OK, INFO, WARN, ERROR = "ok", "info", "warn", "error"
KUBELET_ROOT = "/var/lib/kubelet"
KUBELET_CONFIG_NAMES = ("config.yaml", "kubelet-config.yaml")  # kubeadm's, and a common hand-made name
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
RUNTIME = "dpdk"
ANNOTATION_GLOB = "dpdk-oci-hook/*"
# where each containerd config version keeps the CRI runtimes
CRI_RUNTIMES = {2: ("io.containerd.grpc.v1.cri", "containerd", "runtimes"), 3: ("io.containerd.cri.v1.runtime", "containerd", "runtimes")}

Finding = tuple[str, str, str]


def _read(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return None


def top_level_value(yaml_text: str, key: str) -> str | None:
    """The scalar value of a top-level ``key: value`` line of a YAML document (no YAML library needed)."""
    for line in yaml_text.splitlines():
        if line.startswith(key + ":"):
            value = line.split(":", 1)[1].split("#", 1)[0].strip().strip("\"'")
            return value or None
    return None


def cpu_manager_findings(kubelet_root: str = KUBELET_ROOT) -> list[Finding]:
    """The CPU manager policy kubelet runs with (its state file is what it actually uses)."""
    fix = (f"set cpuManagerPolicy: static and reservedSystemCPUs (with the OVS PMD cores) in kubelet's config, "
           f"drain the node, remove {kubelet_root}/cpu_manager_state, restart kubelet")
    text = _read(os.path.join(kubelet_root, "cpu_manager_state"))
    if text is None:
        return [(INFO, "kubelet: no cpu_manager_state yet (kubelet has not started with a CPU manager)", "")]
    try:
        policy = json.loads(text).get("policyName")
    except (ValueError, AttributeError):
        return [(WARN, f"kubelet: {kubelet_root}/cpu_manager_state is not JSON", "restart kubelet")]
    if policy == "static":
        return [(OK, "kubelet: CPU manager policy static (Guaranteed pods with whole cpus get exclusive cores)", "")]
    return [(WARN, f"kubelet: CPU manager policy {policy!r}: pods get the shared pool, and pods asking for dpdk-oci-hook/cpus are refused", fix)]


def topology_findings(kubelet_root: str = KUBELET_ROOT, numa_nodes: int = 1) -> list[Finding]:
    """The topology manager policy in kubelet's config file, when the node has several NUMA nodes."""
    texts = [t for t in (_read(os.path.join(kubelet_root, name)) for name in KUBELET_CONFIG_NAMES) if t is not None]
    policy = next((p for p in (top_level_value(t, "topologyManagerPolicy") for t in texts) if p), None)
    if numa_nodes <= 1:
        return [(INFO, f"kubelet: topology manager policy {policy or 'none'} (one NUMA node: nothing to align)", "")]
    if not texts:
        return [(INFO, f"kubelet: no config file in {kubelet_root} to read the topology manager policy from", "")]
    if policy == "single-numa-node":
        return [(OK, "kubelet: topology manager policy single-numa-node", "")]
    return [(WARN, f"kubelet: topology manager policy {policy or 'none'} on {numa_nodes} NUMA nodes: cores and hugepages may come from different nodes",
             "set topologyManagerPolicy: single-numa-node in kubelet's config and restart kubelet")]


def device_plugin_findings(plugin_dir: str = DEVICE_PLUGIN_DIR) -> list[Finding]:
    if os.path.exists(os.path.join(plugin_dir, ENDPOINT)):
        return [(OK, f"device plugin: serving {ENDPOINT} in {plugin_dir}", "")]
    return [(WARN, "device plugin: not running (pods cannot ask for dpdk-oci-hook.io/vhost-user)",
             "deploy deploy/kubernetes/daemonset.yaml, or run: dpdk-oci-hook device-plugin")]


def containerd_runtime(config_text: str) -> dict[str, Any] | None:
    """containerd's CRI runtime ``dpdk`` from its config.toml (versions 2 and 3); None if absent."""
    data = tomllib.loads(config_text)
    version = data.get("version", 1)
    path = CRI_RUNTIMES.get(version if isinstance(version, int) else 0)
    if path is None:
        return None
    node: Any = data.get("plugins", {})
    for part in path:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    runtime = node.get(RUNTIME) if isinstance(node, dict) else None
    return runtime if isinstance(runtime, dict) else None


def containerd_findings(config_path: str = CONTAINERD_CONFIG) -> list[Finding]:
    """Runtime ``dpdk`` exists and lets the device plugin's container annotations through."""
    text = _read(config_path)
    if text is None:
        return []  # not a containerd node (CRI-O reads hooks.d: nothing to check here)
    try:
        runtime = containerd_runtime(text)
    except tomllib.TOMLDecodeError as exc:
        return [(ERROR, f"containerd: {config_path} is not valid TOML ({exc})", "fix the file, then restart containerd")]
    if runtime is None:
        return [(WARN, f"containerd: no CRI runtime {RUNTIME} in {config_path}: RuntimeClass dpdk has no handler on this node",
                 "run install.sh (or the DaemonSet's install step), then restart containerd")]
    found: list[Finding] = []
    allowed = runtime.get("container_annotations") or []
    if ANNOTATION_GLOB not in allowed:
        found.append((WARN, f"containerd: runtime {RUNTIME} does not pass container annotations {ANNOTATION_GLOB}: "
                      "the device plugin's annotation never reaches the hook",
                      f'add container_annotations = ["{ANNOTATION_GLOB}"] to the runtime {RUNTIME} in {config_path}, then restart containerd'))
    else:
        found.append((OK, f"containerd: runtime {RUNTIME} passes container annotations {ANNOTATION_GLOB}", ""))
    if cri_plugin(text).get("disable_hugetlb_controller", True) is not False:
        found.append((WARN, "containerd: disable_hugetlb_controller is not false: kubelet's hugepage limits never reach a container's spec",
                      f"set disable_hugetlb_controller = false in the CRI plugin's table of {config_path}, then restart containerd"))
    return found


def cri_plugin(config_text: str) -> dict[str, Any]:
    """The CRI plugin's own table (where disable_hugetlb_controller lives) of a config.toml."""
    data = tomllib.loads(config_text)
    version = data.get("version", 1)
    name = CRI_RUNTIMES.get(version if isinstance(version, int) else 0, ("",))[0]
    table = data.get("plugins", {}).get(name, {})
    return table if isinstance(table, dict) else {}


def node_findings(kubelet_root: str = KUBELET_ROOT, numa_nodes: int = 1, plugin_dir: str = DEVICE_PLUGIN_DIR,
                  containerd_config: str = CONTAINERD_CONFIG) -> list[Finding]:
    """Every Kubernetes check, or none on a host that is not a node."""
    if not os.path.isdir(kubelet_root):
        return []
    return [*cpu_manager_findings(kubelet_root), *topology_findings(kubelet_root, numa_nodes),
            *device_plugin_findings(plugin_dir), *containerd_findings(containerd_config)]
