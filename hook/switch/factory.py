"""Picks the switch backend named in the config (kept apart so backends can import the base)."""

from __future__ import annotations

from hook.config import SwitchConfig
from hook.switch.base import Switch


def make_switch(config: SwitchConfig) -> Switch:
    """The backend named in the config."""
    if config.backend == "static":
        from hook.switch.static import StaticSwitch

        return StaticSwitch(config)
    from hook.switch.ovs import OvsSwitch

    return OvsSwitch(config)
