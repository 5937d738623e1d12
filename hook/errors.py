"""The one error hierarchy of dpdk-oci-hook, and the one map from errors to exit codes.

Every expected failure is a :class:`HookError` subclass with a ``msg_fmt`` template,
structured fields and its ``exit_code``.  :func:`exit_code` is the only place a process's
status is derived from an error; anything that is not a ``HookError`` is a bug and keeps its
traceback.  Imported by the runtime wrapper on every call: no typing import at run time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HookError(Exception):
    """Base of every expected failure: a message template filled from keyword fields."""

    msg_fmt = "dpdk-oci-hook failed"
    exit_code = 1

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
    exit_code = 2


class PolicyError(AnnotationError):
    """The host policy does not allow what the annotations ask for."""

    msg_fmt = "annotation {key}: {reason} (host policy: {rule})"


class ConfigError(HookError):
    """The host configuration cannot be read or is invalid."""

    msg_fmt = "config {path}: {reason}"
    exit_code = 3


class StateError(HookError):
    """The OCI state on stdin or the bundle's config.json is unusable."""

    msg_fmt = "OCI state: {reason}"
    exit_code = 4


class LedgerCorrupt(HookError):
    """The ledger failed its checksum or invariants: fail closed."""

    msg_fmt = (
        "ledger {path} is corrupt ({reason}); refusing to allocate. "
        "Inspect it, then run 'dpdk-oci-hook gc --rebuild' to rebuild it from the host"
    )
    exit_code = 5


class ResourceExhausted(HookError):
    """Not enough free cores, hugepage memory or sockets to satisfy a request."""

    msg_fmt = "not enough {resource}: asked for {wanted}, {available} available"
    exit_code = 6


class SwitchError(HookError):
    """The host DPDK switch refused or failed an operation."""

    msg_fmt = "switch {backend}: {reason}"
    exit_code = 7


class MountError(HookError):
    """A mount into the container could not be made safely."""

    msg_fmt = "mount {target}: {reason}"
    exit_code = 8


class CgroupError(HookError):
    """The container's cores could not be pinned."""

    msg_fmt = "cpuset {path}: {reason}"
    exit_code = 9


class HugepageError(HookError):
    """The kernel hugepage pool could not be grown or inspected."""

    msg_fmt = "hugepages: {reason}"
    exit_code = 10


class ImageRequirementError(HookError):
    """The image's labels ask for more than the annotations give."""

    msg_fmt = "image requires {label}={required}, but the annotations give {given}"
    exit_code = 11


class EngineError(HookError):
    """A container engine is unreachable or an image operation failed."""

    msg_fmt = "{engine}: {reason}"
    exit_code = 12


class EngineConfigError(EngineError):
    """An engine's configuration cannot be changed safely; nothing was written."""

    msg_fmt = "{reason}"


class WrapperError(EngineError):
    """The runtime wrapper cannot do what an annotated container needs: the create must fail."""

    msg_fmt = "{reason}"
    exit_code = 1  # a runc-compatible runtime fails with 1, as runc does


class HostIOError(HookError):
    """A file or directory of the host could not be read or written (full disk, permissions)."""

    msg_fmt = "{path}: {reason}"
    exit_code = 13

    @classmethod
    def from_os(cls, exc: OSError, path: str | None = None, doing: str = "") -> HostIOError:
        import errno

        name = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
        reason = f"{doing}: " if doing else ""
        reason += exc.strerror or str(exc)
        if name:
            reason += f" ({name})"
        return cls(path=path or exc.filename or "?", reason=reason, errno=exc.errno)


def exit_code(exc: BaseException) -> int:
    """The process exit status for an error: its class's code, 1 for anything else."""
    return exc.exit_code if isinstance(exc, HookError) else 1
