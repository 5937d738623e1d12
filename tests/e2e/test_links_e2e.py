"""Direct links end to end on real runc: two containers pass packets with no switch at all.

The hook's config points at an OVS database that does not exist: a link-only container
must never need the switch.  testpmd txonly in one container, rxonly in the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook.admin.demo import testpmd_command as demo_testpmd
from hook.admin.runc_bundle import Container, make_bundle, run_to_end
from tests.helpers.hook_env import HookEnv, hugetlbfs_mounts, make_env

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed"),
    pytest.mark.skipif(not shutil.which("dpdk-testpmd"), reason="dpdk-testpmd is not installed"),
]
P = "dpdk-oci-hook/"
LINK = "e2e-fast"


def link_mounts(env: HookEnv) -> list[str]:
    """Mount points under the test's state_dir/links in the host's namespace."""
    top = str(env.state_dir / "links") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(top)]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[HookEnv]:
    # No OVS behind this database: a link-only container must never touch the switch.
    hook_env = make_env(tmp_path, ovs_db=f"unix:{tmp_path}/no-ovs/db.sock", pool="0-1", reserved="")
    with open(hook_env.config_path, "a", encoding="utf-8") as fh:
        fh.write('links {\n  allow = ["e2e-*"]\n}\n')
    yield hook_env
    leftover = link_mounts(hook_env)
    for point in leftover:  # never leave a mount behind, even when an assertion failed
        subprocess.run(["umount", "-l", point], check=False, timeout=30)
    assert not leftover, f"link directories left mounted: {leftover}"


@pytest.fixture
def runc_root(tmp_path: Path) -> str:
    root = tmp_path / "runc"
    root.mkdir()
    return str(root)


def annotations(link: str = LINK) -> dict[str, str]:
    return {P + "link": link, P + "cpus": "1", P + "hugepages": "64Mi"}


class Side:
    """testpmd in a container holding one side of the link."""

    def __init__(self, env: HookEnv, runc_root: str, tmp_path: Path, cid: str, sides: list[Side], link: str = LINK,
                 wait: bool = True) -> None:
        bundle = make_bundle(str(tmp_path / f"bundle-{cid}"), demo_testpmd(), annotations(link), env.config_path)
        self.ctr = Container(runc_root, bundle, cid)
        sides.append(self)  # quit by the test's cleanup even when it never comes up
        if wait:
            self.ready()

    def ready(self) -> None:
        self.ctr.wait_for("testpmd> ", timeout_s=60)

    def cmd(self, command: str, done: str = "testpmd> ") -> None:
        self.ctr.send(command)
        if done != "testpmd> ":
            self.ctr.wait_for(done, timeout_s=20)
        self.ctr.wait_for("testpmd> ", timeout_s=20)

    def rx_packets(self) -> int:
        self.ctr.send("show port stats 0")
        line = self.ctr.wait_for("RX-packets:", timeout_s=20)
        self.ctr.wait_for("testpmd> ", timeout_s=20)
        return int(line.split("RX-packets:")[1].split()[0])

    def link_up(self, timeout_s: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.ctr.send("show port info 0")
            line = self.ctr.wait_for("Link status:", timeout_s=20)
            self.ctr.wait_for("testpmd> ", timeout_s=20)
            if "up" in line:
                return True
            time.sleep(0.5)
        return False

    def quit(self) -> None:
        if self.ctr.proc.poll() is None:
            self.ctr.send("quit")
        self.ctr.finish(timeout_s=30)


def flows(rx: Side, tx: Side, seconds: float = 1.5) -> int:
    """Packets rx received while tx sent for ``seconds``."""
    assert tx.link_up() and rx.link_up()
    before = rx.rx_packets()
    tx.cmd("set fwd txonly")
    tx.cmd("start")
    time.sleep(seconds)
    tx.cmd("stop", done="Done.")
    return rx.rx_packets() - before


def test_link_pair_passes_packets_refuses_a_third_rejoins_and_leaves_nothing(env: HookEnv, runc_root: str, tmp_path: Path) -> None:
    """Two containers naming one link pass packets without any switch; a third is refused; either side
    rejoins after a restart with its role; when both are gone no mount, entry or record is left."""
    huge_before = tuple(hugetlbfs_mounts())
    sides: list[Side] = []
    try:
        server = Side(env, runc_root, tmp_path, "lnk-a", sides)
        client = Side(env, runc_root, tmp_path, "lnk-b", sides)
        ledger = env.ledger()
        links = {cid: entry["links"][0] for cid, entry in ledger.items()}  # type: ignore[index]
        assert {cid: link["role"] for cid, link in links.items()} == {"lnk-a": "server", "lnk-b": "client"}
        assert links["lnk-a"]["link_id"] == links["lnk-b"]["link_id"]
        assert link_mounts(env) == [links["lnk-a"]["host_dir"]]
        assert all(not entry["ports"] for entry in ledger.values())  # type: ignore[index]
        server.cmd("set fwd rxonly")
        server.cmd("start")
        assert flows(server, client) > 10000

        third = make_bundle(str(tmp_path / "bundle-c"), ["/bin/true"], annotations(), env.config_path)
        refused = run_to_end(runc_root, third, "lnk-c")
        assert refused.returncode != 0
        assert "room on link 'e2e-fast': containers 'lnk-a' (server) and 'lnk-b' (client) hold both of its sides" in refused.stderr
        assert set(env.ledger()) == {"lnk-a", "lnk-b"}

        # the client side restarts: it joins again as client, packets flow again.  The server stops
        # polling first: DPDK 22.11's memif unmaps the peer's memory from its interrupt thread on
        # a disconnect while a forwarding lcore may be mid-burst on it (a SIGSEGV race of the PMD,
        # not of the hook; the README's direct links section says so).
        server.cmd("stop", done="Done.")
        client.quit()
        sides.remove(client)
        assert server.ctr.proc.poll() is None, "the server side died with the client side:\n" + server.ctr.stderr[-2000:]
        assert set(env.ledger()) == {"lnk-a"} and len(link_mounts(env)) == 1  # the server keeps the link
        client = Side(env, runc_root, tmp_path, "lnk-b", sides)
        assert env.ledger()["lnk-b"]["links"][0]["role"] == "client"  # type: ignore[index]
        server.cmd("start")
        assert flows(server, client) > 10000

        # the server side restarts: server again (its stale socket cleared); the client side's app
        # sees the link go down, and restarts its port to connect to the new server
        server.quit()
        sides.remove(server)
        server = Side(env, runc_root, tmp_path, "lnk-a", sides)
        assert env.ledger()["lnk-a"]["links"][0]["role"] == "server"  # type: ignore[index]
        server.cmd("set fwd rxonly")
        server.cmd("start")
        client.cmd("port stop 0")
        client.cmd("port start 0")
        assert flows(server, client) > 10000
    finally:
        for side in sides:
            side.quit()
    assert env.ledger() == {}
    assert env.owner_records() == []
    assert link_mounts(env) == []
    assert os.listdir(env.state_dir / "links") == []
    assert tuple(hugetlbfs_mounts()) == huge_before
    events = [e["event"] for e in env.events()]
    assert "switch" not in " ".join(events)


def test_virtio_link_passes_packets_and_reconnects_by_itself(env: HookEnv, runc_root: str, tmp_path: Path) -> None:
    """A virtio link (virtio_user server side, net_vhost client side) passes packets; the server side's EAL
    init waits for the client side; after the server side restarts, the client side reconnects by itself."""
    link = '[{"name": "e2e-v", "mode": "virtio"}]'
    sides: list[Side] = []
    try:
        server = Side(env, runc_root, tmp_path, "lnv-a", sides, link, wait=False)
        deadline = time.monotonic() + 30
        while "lnv-a" not in env.ledger() and time.monotonic() < deadline:  # its hook ran: it holds the server side
            time.sleep(0.05)
        client = Side(env, runc_root, tmp_path, "lnv-b", sides, link)
        server.ready()
        assert {cid: e["links"][0]["role"] for cid, e in env.ledger().items()} == {"lnv-a": "server", "lnv-b": "client"}  # type: ignore[index]
        server.cmd("set fwd rxonly")
        server.cmd("start")
        assert flows(server, client) > 10000
        server.quit()
        sides.remove(server)
        server = Side(env, runc_root, tmp_path, "lnv-a", sides, link)
        server.cmd("set fwd rxonly")
        server.cmd("start")
        assert flows(server, client) > 10000
    finally:
        for side in sides:
            side.quit()
    assert env.ledger() == {} and link_mounts(env) == []


def test_link_name_the_host_does_not_allow_is_refused(env: HookEnv, runc_root: str, tmp_path: Path) -> None:
    """Outside a pod, a link whose name the host policy does not allow is refused; nothing is reserved or mounted."""
    bundle = make_bundle(str(tmp_path / "bundle-x"), ["/bin/true"], annotations("secret-link"), env.config_path)
    refused = run_to_end(runc_root, bundle, "lnk-x")
    assert refused.returncode != 0
    assert "link 'secret-link': outside a Kubernetes pod a link's name must be allowed by the host" in refused.stderr
    assert env.ledger() == {} and env.owner_records() == [] and link_mounts(env) == []


def test_gc_unmounts_a_link_directory_no_entry_holds(env: HookEnv) -> None:
    """A link directory left mounted by a killed release is unmounted by gc."""
    orphan = env.state_dir / "links" / "0123456789abcdef"
    orphan.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "dpdk-oci-hook-link", str(orphan)], check=True, timeout=30)
    result = env.run("gc")  # exits 1: it cannot reach the (absent) switch; the link directory is still judged
    assert "1 orphan link directory" in result.stdout, result.stdout + result.stderr
    assert link_mounts(env) == [] and not orphan.exists()
