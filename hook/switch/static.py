"""Static backend: pre-made vhost-user sockets of some other host DPDK app.

The host app (e.g. ``dpdk-testpmd --vdev 'net_vhost0,iface=/run/x/vhost0.sock'``) is the
vhost-user server and created the socket, so from the container's side every port is a
client-mode port.  Which socket a container gets is decided by the caller (the lease's
``socket_host_path``); this backend only checks that the socket is really there.

Nothing is tagged on the switch side: the ledger is the only record, so :meth:`owned_ports`
is always empty and :meth:`remove_ports` has nothing to undo.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from hook.config import SwitchConfig
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, KernelPortSpec, PortLease


class StaticSwitch:
    """Hands out sockets listed in ``switch.static_sockets``."""

    name = "static"

    def __init__(self, config: SwitchConfig) -> None:
        self.config = config

    def _error(self, reason: str) -> SwitchError:
        return SwitchError(backend=self.name, reason=reason)

    def client_socket_path(self, port_name: str) -> str:
        """Not meaningful here: static sockets are leased by path, not made per port name."""
        raise self._error(f"port {port_name}: the static backend has no per-port socket; use the lease's socket_host_path")

    def add_ports(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        if kernel:
            raise self._error("kernel ports need the ovs backend")
        for port in ports:
            self._check(port)

    def _check(self, port: PortLease) -> None:
        path = port.socket_host_path
        if port.mode != MODE_CLIENT:
            raise self._error(
                f"port {port.name}: mode {port.mode!r} is not possible; a static socket is served "
                "by the host app, so the container is the vhost-user client (mode client)"
            )
        if not os.path.isabs(path):
            raise self._error(f"port {port.name}: socket path {path!r} is not absolute")
        if self.config.static_sockets and path not in self.config.static_sockets:
            raise self._error(f"port {port.name}: {path} is not one of switch.static_sockets")
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise self._error(f"port {port.name}: socket {path}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(st.st_mode):
            raise self._error(f"port {port.name}: {path} is a symlink, not a socket")
        if not stat.S_ISSOCK(st.st_mode):
            raise self._error(f"port {port.name}: {path} is not a socket (is the host app running?)")

    def remove_ports(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        """Nothing to undo: the host app owns its sockets."""

    def owned_ports(self) -> dict[str, list[str]]:
        """Always empty: nothing on the switch side carries an owner tag."""
        return {}

    def restore_rules(self) -> list[str]:
        """No rules: the host app's sockets are not on a switch the hook manages."""
        return []

    def remove_port_names(self, names: Sequence[str]) -> None:
        """Nothing to remove: the host app owns its sockets."""
