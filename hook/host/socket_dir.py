"""A container's socket directory on the host and its owner record beside it.

The directory is bind-mounted into the container at ``/run/dpdk``; it holds the app's files
(``eal.args``, ``config.json``) and its server-mode sockets.  The owner record (the
reservation as JSON, beside the directory) is what ``gc --rebuild`` rebuilds a ledger from.
"""

from __future__ import annotations

import json
import os
import shutil

from hook.config import Config
from hook.decide.names import container_key
from hook.decide.plan import ContainerUser
from hook.model import Reservation


def marker_path(config: Config, container_id: str) -> str:
    """The owner record beside (not inside) a container's socket directory."""
    return os.path.join(config.socket_root, container_key(container_id)[:16] + ".owner")


def write_socket_dir(config: Config, res: Reservation, files: dict[str, str], user: ContainerUser) -> None:
    os.makedirs(config.socket_root, mode=0o711, exist_ok=True)
    with open(marker_path(config, res.container_id), "w", encoding="utf-8") as fh:
        json.dump(res.to_dict(), fh)
    os.mkdir(res.socket_dir, 0o750)
    for name, content in files.items():
        path = os.path.join(res.socket_dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.chmod(path, 0o644)
    # the app (maybe not root) creates server-mode sockets here
    os.chown(res.socket_dir, user.uid, user.gid)


def remove_socket_dir(config: Config, container_id: str, socket_dir: str) -> None:
    shutil.rmtree(socket_dir, ignore_errors=True)
    try:
        os.unlink(marker_path(config, container_id))
    except FileNotFoundError:
        pass
