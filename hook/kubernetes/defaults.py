"""The device plugin's names and defaults, importable without gRPC (the admin CLI reads them)."""

RESOURCE_NAME = "dpdk-oci-hook.io/vhost-user"  # what a pod puts in resources.limits
API_VERSION = "v1beta1"  # kubelet's device plugin API
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"  # kubelet's Registration service, in DEVICE_PLUGIN_DIR
ENDPOINT = "dpdk-oci-hook-vhost-user.sock"  # ours, in the same directory
DEFAULT_PORTS = 64
MAX_PORTS = 4096
DEFAULT_HEALTH_INTERVAL = 5.0  # seconds between switch health checks
