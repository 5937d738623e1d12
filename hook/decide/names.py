"""Names and paths the hook makes for a container instance, never taken from the container.

Pure.  Everything derives from the instance's key, which is random and recorded in the
ledger: a name cannot be predicted from a container id, and two same-id containers (two
runtime roots) never share one.  Port names are at most 15 characters (Linux and OVS),
MACs locally administered.
"""

from __future__ import annotations

KEY_HEX = 16  # 64 random bits


def new_key(random_bytes: bytes) -> str:
    """An instance key from ``KEY_HEX // 2`` random bytes (the caller reads them from the OS)."""
    if len(random_bytes) < KEY_HEX // 2:
        raise ValueError("an instance key needs 8 random bytes")
    return random_bytes[: KEY_HEX // 2].hex()


def legacy_key(container_id: str) -> str:
    """The key of an entry from a ledger of format 1, which was keyed by container id."""
    import hashlib

    return hashlib.sha256(container_id.encode("utf-8", "surrogatepass")).hexdigest()[:KEY_HEX]


def port_name(key: str, index: int) -> str:
    """The switch-side port name: at most 15 characters, as Linux and OVS want."""
    return f"dpk{key[:9]}n{index}"


def kernel_port_name(key: str, index: int) -> str:
    """The host end of a kernel port's veth: at most 15 characters."""
    return f"dpv{key[:9]}k{index}"


def default_mac(key: str, index: int | str) -> str:
    """A locally administered unicast MAC for a port (kernel ports use index "k<i>").

    32 random bits of the key and the port's index: no hashing on the hot path.  A clash
    with another port's MAC on the bridge is refused by allocation like a chosen one.
    """
    number = int(index[1:]) | 0x80 if isinstance(index, str) else int(index)
    octets = [key[i:i + 2] for i in range(0, 8, 2)] + [f"{number & 0xFF:02x}"]
    return "02:" + ":".join(octets)


def file_prefix(key: str) -> str:
    """The EAL --file-prefix: unique per instance and short."""
    return f"dpk{key[:12]}"


def run_dir_path(state_dir: str, key: str) -> str:
    """The host directory the instance's /run/dpdk is (a nosymfollow tmpfs: hook.host.run_dirs)."""
    return f"{state_dir.rstrip('/')}/run/{key}"


def server_socket_host_path(state_dir: str, key: str, index: int) -> str:
    """Where the switch finds the app's server-mode socket: in the instance's run directory.

    Every directory above the socket is the host's and no container can write it; the
    socket's own directory is a nosymfollow mount, so a symlink planted in place of the
    socket is never followed.
    """
    return f"{run_dir_path(state_dir, key)}/net{index}.sock"
