"""The OCI side: the state JSON a runtime writes on a hook's stdin, and the bundle's config.

Logic never keys on ``status`` (runc says "creating", crun "created"; poststop has no pid).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from hook.errors import StateError

MAX_STATE_BYTES = 1 << 20
MAX_ID_LEN = 1024


@dataclass(frozen=True)
class State:
    """What the runtime told the hook about the container."""

    container_id: str
    bundle: str
    pid: int | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    has_annotations: bool = False  # the state itself carried an annotations object


def parse_state(raw: bytes) -> State:
    """Validate the state JSON from stdin."""
    if len(raw) > MAX_STATE_BYTES:
        raise StateError(reason=f"state is larger than {MAX_STATE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StateError(reason=f"stdin is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(reason="stdin is not a JSON object")
    cid = data.get("id")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_ID_LEN or "\x00" in cid:
        raise StateError(reason="missing or invalid container id")
    bundle = data.get("bundle", "")
    if not isinstance(bundle, str) or (bundle and not os.path.isabs(bundle)):
        raise StateError(reason="bundle must be an absolute path")
    pid = data.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        pid = None  # poststop may carry 0 or nothing
    annotations = data.get("annotations")
    has = isinstance(annotations, dict)
    return State(cid, bundle, pid, annotations if isinstance(annotations, dict) else {}, has)


def read_bundle_config(bundle: str) -> dict[str, Any]:
    """The bundle's config.json as a dict."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise StateError(reason=f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(reason=f"{path} is not a JSON object")
    return data


def rootfs_path(bundle: str, config: dict[str, Any]) -> str:
    """The absolute host path of the container's root (root.path is bundle-relative)."""
    root = config.get("root", {}).get("path", "rootfs")
    if not isinstance(root, str) or not root:
        raise StateError(reason="config.json has no root.path")
    return os.path.normpath(os.path.join(bundle, root))


def process_user(config: dict[str, Any]) -> tuple[int, int]:
    """uid and gid of the container's process (0, 0 when unset)."""
    user = config.get("process", {}).get("user", {}) or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    if not isinstance(uid, int) or not isinstance(gid, int) or uid < 0 or gid < 0:
        raise StateError(reason="config.json process.user has a bad uid/gid")
    return uid, gid



def map_id(value: int, id_map: str, what: str) -> int:
    """``value`` of a user namespace as the host sees it, from ``/proc/<pid>/{uid,gid}_map`` text."""
    for line in id_map.splitlines():
        fields = line.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            continue
        inner, outer, size = (int(f) for f in fields)
        if inner <= value < inner + size:
            return outer + (value - inner)
    raise StateError(reason=f"the container's {what} {value} is not mapped into the host's user namespace")
