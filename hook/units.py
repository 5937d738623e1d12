"""Parsing and formatting of the small value syntaxes: memory sizes and CPU lists."""

from __future__ import annotations

import re
from collections.abc import Iterable

_SIZE_RE = re.compile(r"([0-9]{1,7})(Ki|Mi|Gi|Ti)?")
_SIZE_KIB = {None: 1 / 1024, "Ki": 1, "Mi": 1024, "Gi": 1024 * 1024, "Ti": 1024 * 1024 * 1024}

# characters allowed in names the user may give (bridges, interfaces): no "/", ",", "=", spaces
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_CPU_ID = 8191  # the kernel's NR_CPUS ceiling on x86-64 builds


def parse_size_kib(text: str) -> int:
    """Parse ``512Mi``, ``1Gi``, ``2048Ki`` (binary units) into KiB; ValueError if malformed.

    A bare number is bytes and must be a whole number of KiB.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size like 512Mi or 1Gi")
    number, unit = int(match.group(1)), match.group(2)
    if unit is None:
        if number % 1024:
            raise ValueError(f"{text!r} bytes is not a whole number of KiB")
        return number // 1024
    return number * int(_SIZE_KIB[unit])


def format_size_kib(kib: int) -> str:
    """The shortest exact binary-unit spelling of a size in KiB (``524288`` -> ``512Mi``)."""
    for unit, factor in (("Ti", 1 << 30), ("Gi", 1 << 20), ("Mi", 1 << 10)):
        if kib and kib % factor == 0:
            return f"{kib // factor}{unit}"
    return f"{kib}Ki"


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a kernel cpulist (``0-3,6``); ValueError on anything malformed or absurd."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        bounds = part.split("-")
        if len(bounds) > 2 or not all(b.isdigit() and len(b) <= 5 for b in bounds):
            raise ValueError(f"{text!r} is not a CPU list like 0-3,6")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high or high > MAX_CPU_ID:
            raise ValueError(f"{text!r}: range {part!r} is empty or beyond CPU {MAX_CPU_ID}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU ids as a compact kernel cpulist (``[0, 1, 2, 5]`` -> ``0-2,5``)."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:  # type: ignore[operator]
            prev = cpu
        else:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = cpu
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)
