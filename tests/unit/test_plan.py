"""Planning turns a reservation into mounts, EAL arguments and the app's config file."""

from __future__ import annotations

import json

from hook.decide.plan import make_plan
from hook.model import PortLease, Reservation


def reservation(cpus: list[int], ports: list[PortLease], mib: int = 512, uid: int = 0, gid: int = 0) -> Reservation:
    return Reservation(
        key="0123456789abcdef", container_id="c1", state="pending", backend="ovs", numa_node=0, cpus=cpus,
        hugepage_size_kib=2048, hugepages_mib=mib, ports=ports, uid=uid, gid=gid, run_dir="/run/h/run/0123456789abcdef",
    )


def lease(i: int, mode: str) -> PortLease:
    return PortLease(index=i, name=f"p{i}", mode=mode, bridge="br", socket_host_path=f"/host/{i}.sock",
                     container_path=f"/run/dpdk/net{i}.sock", mac=f"02:00:00:00:00:0{i}", queues=2)


def test_eal_args_for_two_cores_and_a_server_port() -> None:
    """Each lcore gets a core, the main lcore is 0, and a server-mode port says server=1."""
    plan = make_plan(reservation([2, 3], [lease(0, "server")]))
    args = plan.eal_args
    assert args[:4] == ("--lcores", "0@2,1@3", "--main-lcore", "0")
    assert "--huge-dir=/dev/hugepages" in args and "--single-file-segments" in args and "--no-pci" in args
    assert args[args.index("-m") + 1] == "512"
    assert "--vdev=net_virtio_user0,path=/run/dpdk/net0.sock,mac=02:00:00:00:00:00,queues=2,server=1" in args
    assert "--file-prefix=dpk0123456789ab" in args  # from the instance key, not the container id
    assert plan.files["eal.args"] == " ".join(args) + "\n"


def test_single_core_shares_main_and_worker() -> None:
    """With one core the main lcore and one worker share it, so testpmd still runs."""
    assert make_plan(reservation([5], [])).eal_args[:2] == ("--lcores", "0@5,1@5")


def test_mounts_and_compat_socket() -> None:
    """A private capped tmpfs holding the app's files, a capped pre-reserved hugetlbfs; a lone client socket also at /var/run/usvhost."""
    plan = make_plan(reservation([1], [lease(0, "client")], mib=64, uid=101000, gid=101000))
    kinds = [(m.kind, m.target) for m in plan.mounts]
    assert kinds == [("tree", "/run/dpdk"), ("hugetlbfs", "/dev/hugepages")]
    assert plan.mounts[0].source == "/run/h/run/0123456789abcdef"
    assert plan.mounts[1].options == "pagesize=2M,size=64M,min_size=64M,mode=0700,uid=101000,gid=101000"
    assert [(m.target, m.source, m.file) for m in plan.socket_mounts] == [
        ("/run/dpdk/net0.sock", "/host/0.sock", True),
        ("/var/run/usvhost", "/host/0.sock", True),
    ]
    assert "server=1" not in plan.files["eal.args"]


def test_no_compat_path_with_two_client_ports() -> None:
    """The how-to path is only for exactly one client-mode port."""
    plan = make_plan(reservation([1], [lease(0, "client"), lease(1, "client")]))
    assert "/var/run/usvhost" not in [m.target for m in plan.socket_mounts]


def test_app_config_schema() -> None:
    """config.json tells the app its cores, hugepages and each port's socket, mode, MAC and queues."""
    plan = make_plan(reservation([2, 3], [lease(0, "server")]))
    doc = json.loads(plan.files["config.json"])
    assert doc["version"] == 1 and doc["cpus"] == [2, 3] and doc["numa_node"] == 0
    assert doc["hugepages"] == {"dir": "/dev/hugepages", "page_size": "2Mi", "size_mib": 512}
    port = doc["ports"][0]
    assert port["vhost-user"] == {"mode": "server", "path": "/run/dpdk/net0.sock"}
    assert (port["name"], port["mac"], port["queues"]) == ("net0", "02:00:00:00:00:00", 2)
    assert doc["eal_args"] == list(plan.eal_args)
