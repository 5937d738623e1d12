"""A container's run directory on the host: a real capped tmpfs whose symlinks nothing follows."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook.host import run_dirs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


@pytest.fixture()
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for key in run_dirs.keys(str(tmp_path)):
        run_dirs.remove(str(tmp_path), key)


def test_files_are_written_and_the_dir_goes_with_remove(state: Path) -> None:
    path = Path(run_dirs.create(str(state), "k1", 10001, 10001, {"eal.args": "--no-pci\n", "config.json": "{}\n"}))
    assert (path / "eal.args").read_text() == "--no-pci\n" and oct((path / "eal.args").stat().st_mode & 0o777) == "0o644"
    assert (path.stat().st_uid, path.stat().st_gid) == (10001, 10001)
    assert run_dirs.keys(str(state)) == ["k1"]
    run_dirs.remove(str(state), "k1")
    assert not path.exists() and run_dirs.keys(str(state)) == []
    run_dirs.remove(str(state), "k1")  # twice is fine


def test_a_socket_swapped_for_a_symlink_is_not_followed(state: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """What the switch does (connect to net0.sock) fails with ELOOP when the container planted a symlink there."""
    victim_dir = tmp_path_factory.mktemp("victim")
    victim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    victim.bind(str(victim_dir / "net0.sock"))
    victim.listen(1)
    path = Path(run_dirs.create(str(state), "k2", 0, 0, {}))
    os.symlink(victim_dir / "net0.sock", path / "net0.sock")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError) as err:
            client.connect(str(path / "net0.sock"))
        assert err.value.errno == errno.ELOOP
        client.connect(str(victim_dir / "net0.sock"))  # the victim itself is reachable: the refusal is the mount's
    finally:
        client.close()
        victim.close()


def test_the_cap_holds(state: Path) -> None:
    """A container filling its run directory gets ENOSPC at 16 MiB; the host's disk is not touched."""
    path = Path(run_dirs.create(str(state), "k3", 0, 0, {}))
    with pytest.raises(OSError) as err, open(path / "fill", "wb") as fh:
        for _ in range(64):
            fh.write(b"\0" * (1 << 20))
            fh.flush()
    assert err.value.errno == errno.ENOSPC
    assert os.statvfs(path).f_blocks * os.statvfs(path).f_frsize == 16 << 20
