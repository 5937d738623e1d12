"""The Switch protocol's promises, checked against every backend the same way."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from hook.config import SwitchConfig
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, PortLease
from hook.switch.base import Switch
from hook.switch.factory import make_switch
from tests.helpers.ovs_instance import OvsInstance


@dataclass
class Backend:
    switch: Switch
    good: Callable[[int], PortLease]  # a lease the backend accepts
    bad: Callable[[int], PortLease]  # a lease the backend must refuse
    tags: bool  # does owned_ports() see what add_ports() made?
    cleanup: list[Callable[[], object]] = field(default_factory=list)


def _lease(index: int, name: str, bridge: str, path: str) -> PortLease:
    return PortLease(
        index=index,
        name=name,
        mode=MODE_CLIENT,
        bridge=bridge,
        socket_host_path=path,
        container_path=f"/run/dpdk/net{index}.sock",
        mac=f"02:00:00:00:02:{index + 1:02x}",
    )


def _ovs(ovs: OvsInstance) -> Backend:
    bridge = ovs.unique("tbr")
    cfg = SwitchConfig(backend="ovs", ovsdb=ovs.db, ovs_rundir=ovs.rundir, bridge=bridge, bridges=(bridge,), scope="contract")
    sw = make_switch(cfg)

    def good(i: int) -> PortLease:
        name = ovs.unique("tc")
        return _lease(i, name, bridge, sw.client_socket_path(name))

    def bad(i: int) -> PortLease:
        name = ovs.unique("tc")  # a port someone else already holds
        ovs.vsctl(
            "--may-exist",
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
            "--",
            "add-port",
            bridge,
            name,
            "--",
            "set",
            "Interface",
            name,
            "type=internal",
        )
        return _lease(i, name, bridge, sw.client_socket_path(name))

    backend = Backend(sw, good, bad, tags=True)
    backend.cleanup.append(lambda: ovs.vsctl("--if-exists", "del-br", bridge))
    return backend


def _static() -> Backend:
    tmp = tempfile.mkdtemp(prefix="dpct", dir="/tmp")
    socks = []
    for i in range(4):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(tmp, f"vhost{i}.sock"))
        s.listen(1)
        socks.append(s)
    paths = tuple(os.path.join(tmp, f"vhost{i}.sock") for i in range(4))
    missing = os.path.join(tmp, "missing.sock")
    sw = make_switch(SwitchConfig(backend="static", static_sockets=paths + (missing,)))
    backend = Backend(
        sw,
        good=lambda i: _lease(i, f"st{i}", "br-dpdk", paths[i]),
        bad=lambda i: _lease(i, f"st{i}", "br-dpdk", missing),
        tags=False,
    )
    backend.cleanup += [s.close for s in socks]
    backend.cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    return backend


@pytest.fixture(params=["ovs", "static"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = _ovs(request.getfixturevalue("ovs")) if request.param == "ovs" else _static()
    yield b
    for fn in reversed(b.cleanup):
        fn()


def test_name_matches_backend(backend: Backend) -> None:
    assert backend.switch.name in ("ovs", "static")


def test_add_then_remove_twice(backend: Backend) -> None:
    sw = backend.switch
    ports = [backend.good(0), backend.good(1)]
    sw.add_ports("ctr-contract", ports)
    owned = sw.owned_ports()
    if backend.tags:
        assert owned["ctr-contract"] == sorted(p.name for p in ports)
    else:
        assert owned == {}
    sw.remove_ports("ctr-contract", ports)
    sw.remove_ports("ctr-contract", ports)
    assert "ctr-contract" not in sw.owned_ports()


def test_failed_add_leaves_nothing(backend: Backend) -> None:
    sw = backend.switch
    ports = [backend.good(0), backend.bad(1)]
    with pytest.raises(SwitchError) as err:
        sw.add_ports("ctr-contract-bad", ports)
    assert str(err.value).startswith(f"switch {sw.name}: ")
    assert "ctr-contract-bad" not in sw.owned_ports()


def test_empty_calls_are_fine(backend: Backend) -> None:
    backend.switch.add_ports("ctr-contract-empty", [])
    backend.switch.remove_ports("ctr-contract-empty", [])
    assert "ctr-contract-empty" not in backend.switch.owned_ports()
