"""Names and paths the hook makes for a container, derived from its id, never taken from it.

Pure.  Port names are at most 15 characters (Linux and OVS), MACs locally administered.
"""

from __future__ import annotations

import hashlib
import os

from hook.config import Config


def container_key(container_id: str) -> str:
    """A short, path- and name-safe key derived from the (runtime-chosen) container id."""
    return hashlib.sha256(container_id.encode("utf-8", "surrogatepass")).hexdigest()


def port_name(container_id: str, index: int) -> str:
    """The switch-side port name: at most 15 characters, as Linux and OVS want."""
    return f"dpk{container_key(container_id)[:9]}n{index}"


def kernel_port_name(container_id: str, index: int) -> str:
    """The host end of a kernel port's veth: at most 15 characters."""
    return f"dpv{container_key(container_id)[:9]}k{index}"


def default_mac(container_id: str, index: int | str) -> str:
    """A stable, locally administered unicast MAC for a port (kernel ports use index "k<i>")."""
    digest = hashlib.sha256(f"{container_id}/{index}".encode("utf-8", "surrogatepass")).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def socket_dir(config: Config, container_id: str) -> str:
    return os.path.join(config.socket_root, container_key(container_id)[:16])


def file_prefix(container_id: str) -> str:
    """The EAL --file-prefix: unique per container, short, and stable across retries."""
    return f"dpk{container_key(container_id)[:12]}"
