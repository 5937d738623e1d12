"""Shared fixtures.  ``ovs``: one private OVS-DPDK instance for the whole session.

Only one OVS-DPDK can run on a host, so a switch the host already runs (install.sh's
embedded one, bridge br-dpdk) is paused while the private instance runs and restarted
after, with the same database and bridges, also when the session fails or is interrupted
(``tests.helpers.ovs_instance.host_switch_paused``).  Pausing rather than sharing it: the
tests restart, freeze (SIGSTOP) and measure their switch, gc every owner-tagged port on it,
and count its hugepages, none of which may touch the host's bridge or its ports.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.helpers.ovs_instance import OvsInstance, host_switch_paused

pytest_plugins = ["tests.helpers.engines_fixtures", "tests.helpers.hook_client"]


def _say(config: pytest.Config, text: str) -> None:
    """A line on the terminal even while output is captured."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(f"\n{text}")
        return
    with capture.global_and_fixture_disabled():
        print(f"\n{text}", flush=True)


@pytest.fixture(scope="session")
def ovs(request: pytest.FixtureRequest) -> Iterator[OvsInstance]:
    """A running private OVS-DPDK (ovsdb-server + ovs-vswitchd), stopped at session end.

    The host's own switch, if one runs, is paused for the session and restored at its end.
    """
    missing = [b for b in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl") if not shutil.which(b)]
    if missing:
        pytest.skip(f"Open vSwitch is not installed ({', '.join(missing)} missing)")
    if os.geteuid() != 0:
        pytest.skip("a private OVS-DPDK needs root (hugepages, vhost sockets)")
    with host_switch_paused(say=lambda text: _say(request.config, f"tests: {text}")):
        instance = OvsInstance().start()
        try:
            yield instance
        finally:
            instance.stop()
