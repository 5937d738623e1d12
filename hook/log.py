"""The hook's event log: one JSON object per line, appended to the configured log file.

The records have structlog's JSON shape (``event``, ``level``, ``timestamp`` plus bound
fields) so the admin commands, which do use structlog, and log tooling read them alike.
The hot path writes them itself: importing structlog costs ~90 ms, four times the whole
``runc run`` it would slow down.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Protocol


class Log(Protocol):
    """What the lifecycle needs from a logger: EventLog on the hot path, structlog elsewhere."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...

    def error(self, event: str, **fields: Any) -> Any: ...


class EventLog:
    """Appends events bound to a container id and stage; never fails the hook."""

    def __init__(self, path: str | None, **bound: Any) -> None:
        self.path = path
        self.bound = bound

    def bind(self, **more: Any) -> EventLog:
        return EventLog(self.path, **{**self.bound, **more})

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        record = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "level": level,
            "event": event,
            **self.bound,
            **fields,
        }
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        if not self.path:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, line.encode())  # one write() of an O_APPEND fd: lines never interleave
            finally:
                os.close(fd)
        except OSError as exc:
            sys.stderr.write(f"dpdk-oci-hook: cannot write log {self.path}: {exc.strerror}\n")
            self.path = None

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", event, fields)


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
