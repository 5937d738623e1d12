"""The hook's event log: one JSON object per line, appended to the configured log file.

The records have structlog's JSON shape (``event``, ``level``, ``timestamp`` plus bound
fields) so the admin commands, which do use structlog, and log tooling read them alike.
The hot path writes them itself: importing structlog costs ~90 ms, four times the whole
``runc run`` it would slow down.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol

from hook.host.fsutil import append_line


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
            append_line(self.path, line)
        except OSError as exc:
            sys.stderr.write(f"dpdk-oci-hook: cannot write log {self.path}: {exc.strerror}\n")
            self.path = None

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", event, fields)
