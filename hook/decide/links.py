"""Deciding a container's side of its direct links: the link's identity, the role, the port.

Pure: no I/O.  Runs under the ledger lock (from :func:`hook.decide.allocate.allocate`), so
the sides other containers hold are exact.

A link's id is a digest of the installation's scope, the pod's sandbox id and the link's
name: two containers of one pod that name the same link meet; a container of another pod
that names it gets another id, so a tenant cannot join a link by guessing its name.
Outside a pod (no sandbox) a link is refused unless the host policy allows its name
(``links { allow = [...] }``); the id then derives from the scope and the name alone.

The first container to take a link gets the server side (its app creates the socket), the
second joins as client; a third is refused.  A side that comes back after its container
stopped gets the same role again, since the other side keeps its own.
"""

from __future__ import annotations

import hashlib
import os

from hook.config import Config
from hook.constants import PREFIX
from hook.decide.names import default_mac
from hook.errors import AnnotationError, PolicyError, ResourceExhausted
from hook.model import (
    CONTAINER_RUN_DIR,
    LINK_MEMIF,
    MODE_CLIENT,
    MODE_SERVER,
    LinkLease,
    Request,
    Reservation,
)

LINK_KEY = PREFIX + "link"
LINKS_DIR = "links"  # under state_dir: one directory (a tmpfs) per link
SOCKET_NAME = "link.sock"  # the one socket in a link's directory, made by the server side
LINK_ID_HEX = 16


def link_id(scope: str, sandbox: str, name: str) -> str:
    """The host-side id of link ``name``: of the pod when ``sandbox`` is given, else of the name."""
    where = f"pod\0{sandbox}" if sandbox else "host"
    return hashlib.sha256(f"{scope}\0{where}\0{name}".encode()).hexdigest()[:LINK_ID_HEX]


def links_root(state_dir: str) -> str:
    return os.path.join(state_dir, LINKS_DIR)


def link_host_dir(state_dir: str, lid: str) -> str:
    return os.path.join(links_root(state_dir), lid)


def link_container_dir(name: str) -> str:
    return f"{CONTAINER_RUN_DIR}/link-{name}"


def link_socket(link: LinkLease) -> str:
    """The socket's path inside the container."""
    return f"{link.container_dir}/{SOCKET_NAME}"


def sides(entries: dict[str, Reservation], lid: str) -> list[tuple[Reservation, LinkLease]]:
    """The reservations holding a side of link ``lid``, with their side."""
    return [(res, link) for res in entries.values() for link in res.links if link.link_id == lid]


def _identity(request: Request, config: Config, name: str) -> str:
    if request.sandbox:
        return link_id(config.switch.scope, request.sandbox, name)
    if config.link_allowed(name):
        return link_id(config.switch.scope, "", name)
    allowed = ", ".join(config.link_allow) or "none"
    raise PolicyError(
        key=LINK_KEY,
        reason=f"link {name!r}: outside a Kubernetes pod a link's name must be allowed by the host",
        rule=f"links allow {allowed}",
    )


def lease_links(request: Request, config: Config, entries: dict[str, Reservation], key: str, first_index: int) -> list[LinkLease]:
    """The sides of its links a new instance ``key`` gets; ``entries`` are the other reservations."""
    leases: list[LinkLease] = []
    for i, want in enumerate(request.links):
        lid = _identity(request, config, want.name)
        held = sides(entries, lid)
        if len(held) >= 2:
            held.sort(key=lambda side: side[1].role != MODE_SERVER)
            holders = " and ".join(f"{res.container_id!r} ({link.role})" for res, link in held[:2])
            raise ResourceExhausted(resource=f"room on link {want.name!r}: containers {holders} hold both of its sides",
                                    wanted=1, available=0)
        mac = want.mac or default_mac(key, f"l{i}")
        role, peer = MODE_SERVER, ""
        if held:
            other_res, other = held[0]
            if other.mode != want.mode:
                raise AnnotationError(key=LINK_KEY, reason=f"link {want.name!r} is a {other.mode} link (container "
                                                           f"{other_res.container_id!r} holds it); this container asks for {want.mode}")
            if other.queues != want.queues:
                raise AnnotationError(key=LINK_KEY, reason=f"link {want.name!r} has {other.queues} queue(s) (container "
                                                           f"{other_res.container_id!r} holds it); this container asks for {want.queues}")
            if other.mac == mac:
                raise AnnotationError(key=LINK_KEY, reason=f"link {want.name!r}: mac {mac} is the other side's")
            role = MODE_CLIENT if other.role == MODE_SERVER else MODE_SERVER
            peer = other_res.container_id
        leases.append(
            LinkLease(
                index=first_index + i,
                name=want.name,
                link_id=lid,
                role=role,
                mode=want.mode,
                host_dir=link_host_dir(config.state_dir, lid),
                container_dir=link_container_dir(want.name),
                mac=mac,
                queues=want.queues,
                peer=peer,
            )
        )
    return leases


def check_link_users(res: Reservation, entries: dict[str, Reservation]) -> None:
    """Both sides of a link must run as one host user: the app's socket is only theirs.

    The server's app creates the socket with its own owner and umask; the client must be
    able to connect to it, and the link's directory belongs to that user.
    """
    for link in res.links:
        for other_res, _ in sides({k: r for k, r in entries.items() if k != res.key}, link.link_id):
            if (other_res.uid, other_res.gid) != (res.uid, res.gid):
                raise PolicyError(
                    key=LINK_KEY,
                    reason=f"link {link.name!r}: this container runs as host uid {res.uid} gid {res.gid}, the other side "
                           f"({other_res.container_id!r}) as uid {other_res.uid} gid {other_res.gid}",
                    rule="both sides of a link run as the same user",
                )


def link_vdev(link: LinkLease) -> str:
    """The EAL ``--vdev`` of a link's port, for this side's role and the link's mode."""
    path = link_socket(link)
    if link.mode == LINK_MEMIF:
        # socket-abstract=no: an abstract socket would live in the network namespace, not in
        # the link's directory (and other containers of that namespace could reach it).
        return f"--vdev=net_memif{link.index},role={link.role},id=0,socket={path},socket-abstract=no,mac={link.mac}"
    if link.role == MODE_SERVER:
        return f"--vdev=net_virtio_user{link.index},path={path},server=1,queues={link.queues},mac={link.mac}"
    # the vhost-user side connects, and reconnects every second when the server side restarts
    return f"--vdev=net_vhost{link.index},iface={path},client=1,queues={link.queues}"
