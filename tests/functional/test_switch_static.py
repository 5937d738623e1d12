"""StaticSwitch: pre-made sockets of another host DPDK app, checked on the real filesystem."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

from hook.config import SwitchConfig
from hook.errors import SwitchError
from hook.model import MODE_CLIENT, MODE_SERVER, PortLease
from hook.switch.factory import make_switch
from hook.switch.static import StaticSwitch


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dpst", dir="/tmp")  # short: sun_path is 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listening(sock_dir: str) -> Iterator[str]:
    """A socket some host app listens on (as a vhost-user server would)."""
    path = os.path.join(sock_dir, "vhost0.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    yield path
    srv.close()


def lease(path: str, mode: str = MODE_CLIENT, name: str = "st0", index: int = 0) -> PortLease:
    return PortLease(
        index=index,
        name=name,
        mode=mode,
        bridge="br-dpdk",
        socket_host_path=path,
        container_path=f"/run/dpdk/net{index}.sock",
        mac="02:00:00:00:01:01",
        static=True,
    )


def static(*sockets: str) -> StaticSwitch:
    return StaticSwitch(SwitchConfig(backend="static", static_sockets=tuple(sockets)))


def test_factory_picks_static(listening: str) -> None:
    switch = make_switch(SwitchConfig(backend="static", static_sockets=(listening,)))
    assert isinstance(switch, StaticSwitch) and switch.name == "static"


def test_real_socket_is_accepted(sock_dir: str, listening: str) -> None:
    second = os.path.join(sock_dir, "vhost1.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s2:
        s2.bind(second)
        sw = static(listening, second)
        sw.add_ports("ctr-st", [lease(listening), lease(second, name="st1", index=1)])
        sw.remove_ports("ctr-st", [lease(listening)])
        sw.remove_ports("ctr-st", [lease(listening)])
        assert sw.owned_ports() == {}
    assert os.path.exists(listening)  # never touched


def test_server_mode_is_refused(listening: str) -> None:
    with pytest.raises(SwitchError, match="mode 'server' is not possible"):
        static(listening).add_ports("ctr-st", [lease(listening, MODE_SERVER)])


def test_regular_file_is_refused(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "file.sock")
    with open(path, "w", encoding="ascii"):
        pass
    with pytest.raises(SwitchError, match="is not a socket"):
        static(path).add_ports("ctr-st", [lease(path)])


def test_directory_is_refused(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "dir.sock")
    os.mkdir(path)
    with pytest.raises(SwitchError, match="is not a socket"):
        static(path).add_ports("ctr-st", [lease(path)])


def test_missing_socket_is_refused(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "gone.sock")
    with pytest.raises(SwitchError, match="No such file or directory"):
        static(path).add_ports("ctr-st", [lease(path)])


def test_symlink_to_socket_is_refused(sock_dir: str, listening: str) -> None:
    link = os.path.join(sock_dir, "link.sock")
    os.symlink(listening, link)
    with pytest.raises(SwitchError, match="is a symlink"):
        static(link).add_ports("ctr-st", [lease(link)])


def test_socket_not_in_config_is_refused(sock_dir: str, listening: str) -> None:
    with pytest.raises(SwitchError, match="not one of switch.static_sockets"):
        static(os.path.join(sock_dir, "other.sock")).add_ports("ctr-st", [lease(listening)])


def test_relative_path_is_refused() -> None:
    with pytest.raises(SwitchError, match="not absolute"):
        static().add_ports("ctr-st", [lease("vhost0.sock")])


def test_one_bad_port_fails_the_call(sock_dir: str, listening: str) -> None:
    missing = os.path.join(sock_dir, "gone.sock")
    with pytest.raises(SwitchError, match="port st1"):
        static(listening, missing).add_ports("ctr-st", [lease(listening), lease(missing, name="st1", index=1)])


def test_client_socket_path_is_not_meaningful() -> None:
    with pytest.raises(SwitchError, match="socket_host_path"):
        static().client_socket_path("st0")
