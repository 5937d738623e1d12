"""Sizes and CPU lists parse strictly and format compactly."""

from __future__ import annotations

import pytest

from hook.units import format_cpulist, format_size_kib, parse_cpulist, parse_size_kib


@pytest.mark.parametrize(("text", "kib"), [("512Mi", 524288), ("1Gi", 1048576), ("2048Ki", 2048), ("2097152", 2048)])
def test_sizes(text: str, kib: int) -> None:
    """Binary-unit sizes become KiB and format back to their shortest spelling."""
    assert parse_size_kib(text) == kib
    assert parse_size_kib(format_size_kib(kib)) == kib


@pytest.mark.parametrize("text", ["", "1.5Gi", "1GB", "-1Mi", "12345678Mi", "100"])
def test_bad_sizes(text: str) -> None:
    """Malformed, fractional, negative, huge or non-KiB sizes are refused."""
    with pytest.raises(ValueError):
        parse_size_kib(text)


def test_cpulists() -> None:
    """CPU lists round-trip through the kernel syntax."""
    assert parse_cpulist("0-2,5") == {0, 1, 2, 5}
    assert format_cpulist([5, 0, 1, 2]) == "0-2,5"
    assert format_cpulist([]) == ""


@pytest.mark.parametrize("text", ["0-4294967295", "3-1", "a", "1,,2", "1-2-3", "99999"])
def test_bad_cpulists(text: str) -> None:
    """Overflowing, reversed or malformed CPU lists fail fast."""
    with pytest.raises(ValueError):
        parse_cpulist(text)
