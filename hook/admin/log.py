"""The admin commands' logger: structlog, writing the hook's JSON-lines shape (off the hot path)."""

from __future__ import annotations

import sys
from typing import Any

from hook.stage.eventlog import Log


def admin_log(path: str | None, **bound: Any) -> Log:
    """A structlog logger writing the same JSON lines, for the admin commands (off the hot path)."""
    import structlog

    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(default=str),
    ]
    if not path:
        return structlog.wrap_logger(structlog.ReturnLogger(), processors=processors).bind(**bound)
    try:
        sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the command
    except OSError as exc:
        sys.stderr.write(f"dpdk-oci-hook: cannot write log {path}: {exc.strerror}\n")
        return structlog.wrap_logger(structlog.ReturnLogger(), processors=processors).bind(**bound)
    return structlog.wrap_logger(structlog.WriteLogger(sink), processors=processors).bind(**bound)
