#!/bin/sh
# The DaemonSet's install step (init container): the repository's install.sh, run from the
# image against the node's directories mounted at their own paths (/opt/dpdk-oci-hook,
# /etc/dpdk-oci-hook, the hooks.d directory, /etc/containerd, /run).
#
# Environment: ENGINES (install.sh's engine list, e.g. containerd or crio), RESTART_CONTAINERD
# (1: restart the node's containerd through its systemd when config.toml changed; needs
# hostPID), and pip's PIP_NO_INDEX/PIP_FIND_LINKS for the image's wheelhouse.
set -eu
config=/etc/containerd/config.toml
before=$(cat "$config" 2>/dev/null | sha256sum)
/src/install.sh --no-switch
after=$(cat "$config" 2>/dev/null | sha256sum)
if [ "$before" != "$after" ]; then
    if [ "${RESTART_CONTAINERD:-0}" = 1 ]; then
        if [ "$(cat /proc/1/comm)" != systemd ]; then
            echo "install-node: RESTART_CONTAINERD=1 needs hostPID: true and a node run by systemd" >&2
            exit 1
        fi
        echo "install-node: $config changed: restarting containerd (running containers keep running)"
        nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd
    else
        echo "install-node: $config changed: restart containerd on this node to use the runtime \"dpdk\""
    fi
fi
