"""Shared fixtures.  ``ovs``: one private OVS-DPDK instance for the whole session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.helpers.ovs_instance import OvsInstance

pytest_plugins = ["tests.helpers.engines_fixtures"]


@pytest.fixture(scope="session")
def ovs() -> Iterator[OvsInstance]:
    """A running private OVS-DPDK (ovsdb-server + ovs-vswitchd), stopped at session end."""
    missing = [b for b in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl") if not shutil.which(b)]
    if missing:
        pytest.skip(f"Open vSwitch is not installed ({', '.join(missing)} missing)")
    if os.geteuid() != 0:
        pytest.skip("a private OVS-DPDK needs root (hugepages, vhost sockets)")
    instance = OvsInstance().start()
    try:
        yield instance
    finally:
        instance.stop()
