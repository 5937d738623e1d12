"""The ``link`` annotation (untrusted input) -> validated :class:`LinkRequest` values.

Pure.  A value is one link name (``fast0``) or a JSON list of link objects with ``name`` and
optional ``queues``, ``mac`` and ``mode`` (``memif``, the default, or ``virtio``).  A name
is the container's label for the link; the hook derives the link's identity and paths from
it together with the pod (or the host policy), never from the name alone.
"""

from __future__ import annotations

import json
from typing import Any

from hook.errors import AnnotationError
from hook.model import LINK_MEMIF, LINK_MODES, LinkRequest
from hook.request.fields import int_field, name_field, parse_mac, reject_duplicate_keys

LINK_FIELDS = ("name", "queues", "mac", "mode")


def link_name(key: str, where: str, value: Any) -> str:
    """A link name: 1-15 letters, digits, '-', '_', '.'; not starting with '-' or '.'."""
    return name_field(key, f"{where}name", value)


def _link(key: str, index: int, raw: Any, max_queues: int) -> LinkRequest:
    where = f"link {index}: "
    if not isinstance(raw, dict):
        raise AnnotationError(key=key, reason=f"{where}must be an object like {{\"name\": \"fast0\"}}")
    unknown = sorted(set(raw) - set(LINK_FIELDS))
    if unknown:
        raise AnnotationError(key=key, reason=f"{where}unknown field {unknown[0][:40]!r} (known: {', '.join(LINK_FIELDS)})")
    if "name" not in raw:
        raise AnnotationError(key=key, reason=f"{where}a link needs a name")
    mode = raw.get("mode", LINK_MEMIF)
    if mode not in LINK_MODES:
        raise AnnotationError(key=key, reason=f"{where}mode must be {' or '.join(LINK_MODES)}, got {str(mode)[:40]!r}")
    return LinkRequest(
        name=link_name(key, where, raw["name"]),
        queues=int_field(key, f"{where}queues", raw.get("queues", 1), 1, max_queues),
        mac=parse_mac(key, raw["mac"], f"{where}mac") if "mac" in raw else None,
        mode=mode,
    )


def parse_links(key: str, text: str, max_links: int, max_queues: int) -> tuple[LinkRequest, ...]:
    """One name or a JSON list of link objects; AnnotationError on the first problem."""
    text = text.strip()
    if not text.startswith("["):
        if max_links < 1:
            raise AnnotationError(key=key, reason="the port limit allows no link")
        return (LinkRequest(name=link_name(key, "", text)),)
    try:
        raw = json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except ValueError as exc:
        raise AnnotationError(key=key, reason=f"not a link name or a JSON list of links: {exc}") from None
    except RecursionError:
        raise AnnotationError(key=key, reason="JSON nested too deeply") from None
    if not isinstance(raw, list) or not raw:
        raise AnnotationError(key=key, reason="must be a link name or a non-empty JSON list of link objects")
    if len(raw) > max_links:
        raise AnnotationError(key=key, reason=f"{len(raw)} links is more than the limit of {max_links} ports")
    links = tuple(_link(key, i, item, max_queues) for i, item in enumerate(raw))
    names = [link.name for link in links]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise AnnotationError(key=key, reason=f"link {twice!r} is named twice: a container holds one side of a link")
    macs = [link.mac for link in links if link.mac]
    if len(set(macs)) != len(macs):
        raise AnnotationError(key=key, reason="the same mac is given to two links")
    return links
