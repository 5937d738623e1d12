"""The one error hierarchy of dpdk-oci-hook.

Every expected failure is a :class:`HookError` subclass with a ``msg_fmt`` template and
structured fields.  ``hook.cli`` is the only place that maps them to exit codes; anything
that is not a ``HookError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class HookError(Exception):
    """Base of every expected failure: a message template filled from keyword fields."""

    msg_fmt = "dpdk-oci-hook failed"

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        try:
            message = self.msg_fmt.format(**fields)
        except (KeyError, IndexError):
            message = f"{self.msg_fmt} {fields!r}"
        super().__init__(message)


class AnnotationError(HookError):
    """An annotation of the container is malformed or not allowed."""

    msg_fmt = "annotation {key}: {reason}"


class ConfigError(HookError):
    """The host configuration cannot be read or is invalid."""

    msg_fmt = "config {path}: {reason}"


class StateError(HookError):
    """The OCI state on stdin or the bundle's config.json is unusable."""

    msg_fmt = "OCI state: {reason}"


class LedgerCorrupt(HookError):
    """The ledger failed its checksum or invariants: fail closed."""

    msg_fmt = (
        "ledger {path} is corrupt ({reason}); refusing to allocate. "
        "Inspect it, then run 'dpdk-oci-hook gc --rebuild' to rebuild it from the host"
    )


class ResourceExhausted(HookError):
    """Not enough free cores, hugepage memory or sockets to satisfy a request."""

    msg_fmt = "not enough {resource}: asked for {wanted}, {available} available"


class SwitchError(HookError):
    """The host DPDK switch refused or failed an operation."""

    msg_fmt = "switch {backend}: {reason}"


class MountError(HookError):
    """A mount into the container could not be made safely."""

    msg_fmt = "mount {target}: {reason}"


class CgroupError(HookError):
    """The container's cores could not be pinned."""

    msg_fmt = "cpuset {path}: {reason}"


class HugepageError(HookError):
    """The kernel hugepage pool could not be grown or inspected."""

    msg_fmt = "hugepages: {reason}"


class ImageRequirementError(HookError):
    """The image's labels ask for more than the annotations give."""

    msg_fmt = "image requires {label}={required}, but the annotations give {given}"


class EngineError(HookError):
    """A container engine is unreachable or an image operation failed."""

    msg_fmt = "{engine}: {reason}"
