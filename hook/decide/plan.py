"""Turning a reservation into a plan: mounts, files for the app, EAL arguments, cpuset.

Pure: no I/O.  ``/run/dpdk/config.json`` (schema version 1, documented in README) and
``/run/dpdk/eal.args`` are produced here.
"""

from __future__ import annotations

import json

from hook.decide.links import link_socket, link_vdev
from hook.decide.names import file_prefix
from hook.model import (
    COMPAT_SOCKET_PATH,
    CONTAINER_HUGE_DIR,
    CONTAINER_RUN_DIR,
    LINK_VIRTIO,
    MODE_CLIENT,
    MODE_SERVER,
    Mount,
    Plan,
    Reservation,
)
from hook.units import format_size_kib

CONFIG_SCHEMA_VERSION = 1


def eal_args(res: Reservation) -> tuple[str, ...]:
    """EAL arguments that work as they are inside the container."""
    args: list[str] = []
    if res.cpus:
        # lcore 0 is the main lcore; workers 1.. each get a core.  With a single core the
        # main lcore shares it with one worker (it mostly sleeps, so the worker runs at speed).
        cores = res.cpus if len(res.cpus) > 1 else [res.cpus[0], res.cpus[0]]
        args += ["--lcores", ",".join(f"{i}@{cpu}" for i, cpu in enumerate(cores)), "--main-lcore", "0"]
    args.append(f"--file-prefix={file_prefix(res.key)}")
    if res.hugepages_mib:
        args += [f"--huge-dir={CONTAINER_HUGE_DIR}", "-m", str(res.hugepages_mib), "--single-file-segments"]
    else:
        args.append("--no-huge")
    args.append("--no-pci")
    for port in res.ports:
        vdev = f"--vdev=net_virtio_user{port.index},path={port.container_path},mac={port.mac},queues={port.queues}"
        if port.mode == MODE_SERVER:
            vdev += ",server=1"
        args.append(vdev)
    args += [link_vdev(link) for link in res.links]
    return tuple(args)


def app_config(res: Reservation, args: tuple[str, ...]) -> dict[str, object]:
    """What the container got, for the app to read (schema version 1)."""
    return {
        "version": CONFIG_SCHEMA_VERSION,
        "container_id": res.container_id,
        "cpus": list(res.cpus),
        "numa_node": res.numa_node,
        "hugepages": {
            "dir": CONTAINER_HUGE_DIR if res.hugepages_mib else None,
            "page_size": format_size_kib(res.hugepage_size_kib),
            "size_mib": res.hugepages_mib,
        },
        "file_prefix": file_prefix(res.key),
        "ports": [
            {
                "name": f"net{p.index}",
                "type": "vhost-user",
                "vhost-user": {"mode": p.mode, "path": p.container_path},
                "mac": p.mac,
                "queues": p.queues,
                "mtu": p.mtu,
                "vlan": p.vlan,
                "switch": {"backend": res.backend, "bridge": None if p.static else p.bridge, "port": None if p.static else p.name},
            }
            for p in res.ports
        ]
        + [
            {
                "name": f"net{link.index}",
                "type": "link",
                "link": {"name": link.name, "role": link.role, "mode": link.mode, "path": link_socket(link)},
                # net_vhost (the client side of a virtio link) takes no MAC: the PMD picks its own
                "mac": None if (link.mode, link.role) == (LINK_VIRTIO, MODE_CLIENT) else link.mac,
                "queues": link.queues,
                "peer": {"role": MODE_CLIENT if link.role == MODE_SERVER else MODE_SERVER, "container_id": link.peer or None},
            }
            for link in res.links
        ],
        "kernel_ports": [
            {"name": k.ifname, "type": "veth", "mac": k.mac, "mtu": k.mtu, "addresses": list(k.addresses),
             "routes": [{"to": dst, "via": via} for dst, via in k.routes], "switch": {"bridge": k.bridge, "port": k.host_name}}
            for k in res.kernel_ports
        ],
        "eal_args": list(args),
    }


def hugetlbfs_options(res: Reservation) -> str:
    """Mount data for the container's private, size-capped and pre-reserved hugetlbfs.

    ``uid``/``gid`` are host ids (mapped through the container's user namespace).
    """
    size = f"{res.hugepages_mib}M"
    page = "1G" if res.hugepage_size_kib == 1048576 else "2M"
    return f"pagesize={page},size={size},min_size={size},mode=0700,uid={res.uid},gid={res.gid}"


def make_plan(res: Reservation) -> Plan:
    """Everything apply must do for this reservation."""
    args = eal_args(res)
    files = {
        "config.json": json.dumps(app_config(res, args), indent=2) + "\n",
        "eal.args": " ".join(args) + "\n",
    }
    # the instance's run directory (a capped, nosymfollow tmpfs on the host, hook.host.run_dirs):
    # mounted on the host after the container's namespace was made, so it does not show there
    # (private propagation) and is attached as a clone ("tree"), not bound by path
    mounts = [Mount(kind="tree", target=CONTAINER_RUN_DIR, source=res.run_dir)]
    # each link's directory: a clone of its host tmpfs, inside the container's /run/dpdk
    mounts += [Mount(kind="tree", target=link.container_dir, source=link.host_dir) for link in res.links]
    if res.hugepages_mib:
        mounts.append(Mount(kind="hugetlbfs", target=CONTAINER_HUGE_DIR, options=hugetlbfs_options(res)))
    client_ports = [p for p in res.ports if p.mode == MODE_CLIENT]
    socket_mounts = [
        Mount(kind="bind", target=p.container_path, source=p.socket_host_path, file=True) for p in client_ports
    ]
    if len(client_ports) == 1:  # the DPDK how-to's fixed path
        socket_mounts.append(
            Mount(kind="bind", target=COMPAT_SOCKET_PATH, source=client_ports[0].socket_host_path, file=True)
        )
    return Plan(
        reservation=res,
        mounts=tuple(mounts),
        socket_mounts=tuple(socket_mounts),
        files=files,
        eal_args=args,
        cpus=tuple(res.cpus),
        mems=(res.numa_node,),
    )
