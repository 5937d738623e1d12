"""The host DPDK switch behind one small interface, and the factory that picks a backend.

A backend plugs a container's :class:`~hook.model.PortLease` values into the switch in one
all-or-nothing step, removes them idempotently, and lists what it holds by owner tag so
``gc`` can find orphans from the switch side.  Owner tags are scoped to the installation
(``SwitchConfig.scope``): two installations sharing one switch never see each other's ports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hook.config import SwitchConfig
from hook.model import KernelPortSpec, PortLease


class Switch(Protocol):
    """What the hook needs from a host switch."""

    name: str

    def client_socket_path(self, port_name: str) -> str:
        """Where the switch itself creates the socket of a client-mode port."""
        ...

    def add_ports(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        """Plug all ports (vhost-user, and host ends of kernel veths) in one step; on failure none stays.

        ``owner`` is an opaque instance key (1..64 characters of ``A-Za-z0-9._:-``) recorded with
        the ports; only bridges the host policy allows are used, and none is changed.
        """
        ...

    def remove_ports(self, owner: str, ports: Sequence[PortLease], kernel: Sequence[KernelPortSpec] = ()) -> None:
        """Unplug those of the ports that ``owner`` holds in this installation; ports already gone are fine."""
        ...

    def owned_ports(self) -> dict[str, list[str]]:
        """Owner -> names of ports the switch holds for it in this installation (by owner and scope tags)."""
        ...

    def restore_rules(self) -> list[str]:
        """Reinstall per-port rules the switch lost (ovs-vswitchd restarted); the ports' names."""
        ...

    def remove_port_names(self, names: Sequence[str]) -> None:
        """Delete this installation's ports by name whoever owns them (``gc``, names from :meth:`owned_ports`)."""
        ...


def client_socket_path(config: SwitchConfig, port_name: str) -> str:
    """Where the switch creates the socket of a client-mode port (pure: a path, no I/O).

    OVS makes a ``dpdkvhostuser`` port's socket in its run directory under the port's name.
    """
    import os

    return os.path.join(config.ovs_rundir, port_name)


