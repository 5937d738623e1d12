"""Validators shared by the annotation parsers: JSON without duplicate keys, MACs, counts or lists.

Pure.  Every rejection is an AnnotationError naming the key.
"""

from __future__ import annotations

import json
from typing import Any

from hook.errors import AnnotationError
from hook.units import NAME_CHARS

_HEX = frozenset("0123456789abcdef")


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for json: a key given twice is an error, not "last one wins"."""
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise ValueError(f"field {name!r} given twice")
        seen[name] = value
    return seen


def parse_mac(key: str, value: Any, where: str = "mac") -> str:
    """A unicast, non-zero MAC in lower case, or AnnotationError."""
    parts = value.lower().split(":") if isinstance(value, str) else []
    if len(parts) != 6 or not all(len(p) == 2 and set(p) <= _HEX for p in parts):
        raise AnnotationError(key=key, reason=f"{where} {str(value)[:40]!r} is not like 02:00:00:00:00:01")
    if int(parts[0], 16) & 1:
        raise AnnotationError(key=key, reason=f"{where} {value} is a multicast address")
    if parts == ["00"] * 6:
        raise AnnotationError(key=key, reason=f"{where} 00:00:00:00:00:00 is not usable")
    return ":".join(parts)


def count_or_list(key: str, text: str, max_items: int) -> int | list[Any]:
    """A ports annotation: a count ``N`` (0..max_items) or a JSON list of at most max_items items."""
    text = text.strip()
    if not text.startswith("["):
        if not (text.isascii() and text.isdigit()) or len(text) > 6:
            raise AnnotationError(key=key, reason=f"{text[:40]!r} is not a count or a JSON list of ports")
        count = int(text)
        if count > max_items:
            raise AnnotationError(key=key, reason=f"{count} is outside 0..{max_items}")
        return count
    try:
        raw = json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except ValueError as exc:
        raise AnnotationError(key=key, reason=f"not a count or a JSON list of ports: {exc}") from None
    except RecursionError:
        raise AnnotationError(key=key, reason="JSON nested too deeply") from None
    if not isinstance(raw, list):
        raise AnnotationError(key=key, reason="must be a count or a JSON list of port objects")
    if len(raw) > max_items:
        raise AnnotationError(key=key, reason=f"{len(raw)} ports is more than the limit of {max_items}")
    return raw


def name_field(key: str, field: str, value: Any) -> str:
    """A name the user may give (a bridge, a link): 1-15 of [A-Za-z0-9_.-], not starting with '-' or '.', no '..'."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 15
        or not set(value) <= NAME_CHARS
        or value[0] in "-."
        or ".." in value
    ):
        raise AnnotationError(key=key, reason=f"{field} {str(value)[:40]!r} is not a name of 1-15 letters, digits, '-', '_', '.'")
    return value


def int_field(key: str, field: str, value: Any, low: int, high: int) -> int:
    """A whole number (not a bool) in low..high."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise AnnotationError(key=key, reason=f"{field} must be a whole number in {low}..{high}, got {str(value)[:40]!r}")
    return value
