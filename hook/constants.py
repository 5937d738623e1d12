"""Names the whole project agrees on: the annotation prefix and keys, owner tags, markers.

Imported on every container start (by the runtime wrapper too): plain literals only.
"""

PREFIX = "dpdk-oci-hook/"  # every annotation of ours starts with this
ANNOTATION_KEYS = ("vhost-user", "kernel-ports", "link", "cpus", "hugepages", "hugepage-size", "numa-node")

# A container's hooks.d/wrapper stages: the two the hook is registered for, and the one
# (prestart) older runtimes run instead of createRuntime.
SETUP_STAGES = ("prestart", "createRuntime")
HOOK_STAGES = ("createRuntime", "poststop")
STAGES = (*SETUP_STAGES, "poststop")

# Kubernetes copies pod annotations onto the pod's sandbox (pause) container too: never ours.
SANDBOX_MARKERS = (("io.kubernetes.cri.container-type", "sandbox"), ("io.kubernetes.cri-o.ContainerType", "sandbox"))

# Owner records on the switch and on host links
OWNER_KEY = "dpdk-oci-hook-owner"  # OVS external_ids key holding the container id
INDEX_KEY = "dpdk-oci-hook-index"  # OVS external_ids key holding the port's index
OWNER_ALIAS = OWNER_KEY + "="  # prefix of a host veth end's ifalias

# Images from our templates repeat their requirement labels as environment variables, which
# runtimes pass in the OCI spec (labels they do not).
IMAGE_LABEL_PREFIX = "dpdk-oci-hook."
IMAGE_ENV_PREFIX = "DPDK_OCI_HOOK_MIN_"

ENV_CONFIG = "DPDK_OCI_HOOK_CONFIG"
ENV_CACHE_DIR = "DPDK_OCI_HOOK_CACHE_DIR"
DEFAULT_CONFIG_PATH = "/etc/dpdk-oci-hook/config.hcl"


def is_sandbox(annotations: dict) -> bool:
    """A Kubernetes pod's sandbox (pause) container."""
    return any(annotations.get(key) == value for key, value in SANDBOX_MARKERS)


def wants_us(annotations: dict) -> bool:
    """Whether a container with these annotations is ours to set up."""
    if is_sandbox(annotations):
        return False
    return any(isinstance(k, str) and k.startswith(PREFIX) for k in annotations)
