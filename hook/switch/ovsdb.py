"""A minimal OVSDB JSON-RPC client (RFC 7047) over a unix or tcp socket: transact and monitor.

Starting ``ovs-vsctl`` costs a process start (~8 ms) per call; one request on an open socket
costs a fraction of a millisecond.  The python ``ovs`` package does the same but takes ~50 ms
to import, too much for the hook's hot path, so this speaks the protocol itself with
``_socket`` (``socket`` imports ``enum``) and ``json``.

Every wait is bounded by one deadline for the whole connection; a timeout or a broken
connection is an :class:`OvsdbError`, which the backend turns into a SwitchError.
"""

from __future__ import annotations

import _socket
import codecs
import json
import time
from collections.abc import Callable
from typing import Any

DB = "Open_vSwitch"
_DECODER = json.JSONDecoder()


class OvsdbError(Exception):
    """The database could not be reached or answered with an error (internal)."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def default_target(rundir: str) -> str:
    """Where ovsdb-server listens by default: ``db.sock`` in the OVS run directory."""
    return f"unix:{rundir.rstrip('/')}/db.sock"


class Connection:
    """One JSON-RPC session; use as a context manager."""

    def __init__(self, target: str, timeout_s: float) -> None:
        self.target = target
        self.deadline = time.monotonic() + timeout_s
        self._buf = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._next_id = 0
        self._updates: list[dict[str, Any]] = []
        kind, _, where = target.partition(":")
        try:
            if kind == "unix":
                self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                self._arm()
                self._sock.connect(where)
            elif kind == "tcp":
                host, _, port = where.rpartition(":")
                self._sock = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
                self._arm()
                self._sock.connect((host.strip("[]"), int(port)))
            else:
                raise OvsdbError(f"database {target!r}: only unix:PATH and tcp:HOST:PORT are supported")
        except OvsdbError:
            raise
        except TimeoutError:
            self.close()
            raise OvsdbError(f"database {target}: no answer within the timeout", True) from None
        except (OSError, ValueError) as exc:
            self.close()
            raise OvsdbError(f"cannot connect to the database {target}: {getattr(exc, 'strerror', None) or exc}") from None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()
            del self._sock

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)

    # --- messages -------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._arm()
            self._sock.sendall(json.dumps(message, separators=(",", ":")).encode())
        except TimeoutError:
            raise OvsdbError(f"database {self.target}: no answer within the timeout", True) from None
        except OSError as exc:
            raise OvsdbError(f"database {self.target}: {exc.strerror or exc}") from None

    def _receive(self) -> dict[str, Any]:
        """The next JSON message; answers the server's echo requests on the way."""
        while True:
            text = self._buf = self._buf.lstrip()
            if text:
                try:
                    message, end = _DECODER.raw_decode(text)
                except ValueError:
                    message = None  # incomplete: read more
                if message is not None:
                    self._buf = text[end:]
                    if not isinstance(message, dict):
                        raise OvsdbError(f"database {self.target}: not a JSON-RPC message")
                    if message.get("method") == "echo" and "id" in message:
                        self._send({"result": message.get("params", []), "error": None, "id": message["id"]})
                        continue
                    return message
            try:
                self._arm()
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise OvsdbError(f"database {self.target}: no answer within the timeout", True) from None
            except OSError as exc:
                raise OvsdbError(f"database {self.target}: {exc.strerror or exc}") from None
            if not chunk:
                raise OvsdbError(f"database {self.target} closed the connection")
            self._buf += self._utf8.decode(chunk)

    def call(self, method: str, params: list[Any]) -> Any:
        """One request; its result, or OvsdbError with the server's error."""
        self._next_id += 1
        rid = self._next_id
        self._send({"method": method, "params": params, "id": rid})
        while True:
            reply = self._receive()
            if reply.get("id") == rid:
                break
            if reply.get("method") == "update":
                self._updates.append(reply)
        if reply.get("error") is not None:
            raise OvsdbError(f"database {self.target}: {method}: {reply['error']}")
        return reply.get("result")

    def transact(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The results of ``ops`` in one transaction; OvsdbError names the first failed op."""
        if not ops:
            return []
        results = self.call("transact", [DB, *ops])
        if not isinstance(results, list):
            raise OvsdbError(f"database {self.target}: transact answered {results!r}")
        for i, result in enumerate(results):
            if isinstance(result, dict) and result.get("error"):
                op = ops[i] if i < len(ops) else {"op": "commit"}
                detail = result.get("details") or ""
                raise TransactError(result["error"], detail, i, op)
        return results

    def wait_until(self, table: str, columns: list[str], done: Callable[[dict[str, Any]], bool]) -> None:
        """Monitor ``table`` until ``done(row)`` holds for some row (or the deadline passes)."""
        monitor = f"wait{self._next_id}"  # unique per session: a finished monitor keeps sending updates
        initial = self.call("monitor", [DB, monitor, {table: {"columns": columns}}])
        rows = [r for r in ((initial or {}).get(table) or {}).values()]
        if any(done(r.get("new") or {}) for r in rows):
            return
        while True:
            update = self._updates.pop(0) if self._updates else self._receive()
            params = update.get("params") or [None, {}]
            if update.get("method") != "update" or params[0] != monitor:
                continue
            for change in ((params[1] or {}).get(table) or {}).values():
                if done((change or {}).get("new") or {}):
                    return


class TransactError(OvsdbError):
    """One operation of a transaction failed, and with it the whole transaction."""

    def __init__(self, error: str, details: str, index: int, op: dict[str, Any]) -> None:
        super().__init__(f"{error}{': ' + details if details else ''}")
        self.error = error
        self.details = details
        self.index = index
        self.op = op


# --- values -------------------------------------------------------------------


def omap(values: dict[str, str]) -> list[Any]:
    """A map column value in OVSDB's JSON notation."""
    return ["map", [[k, v] for k, v in values.items()]]


def oset(values: list[Any]) -> list[Any]:
    """A set column value in OVSDB's JSON notation."""
    return ["set", list(values)]


def decode(cell: Any) -> Any:
    """An OVSDB JSON cell as plain Python: map -> dict, set -> list, uuid -> str."""
    if isinstance(cell, list) and len(cell) == 2:
        kind, value = cell
        if kind == "map":
            return {decode(k): decode(v) for k, v in value}
        if kind == "set":
            return [decode(v) for v in value]
        if kind in ("uuid", "named-uuid"):
            return value
    return cell
