"""The host-wide ledger of reservations, shared by every concurrent hook.

One JSON file guarded by ``flock`` on a sibling lock file (the kernel drops the lock if a
hook dies).  Writes are temp file + fsync + rename + fsync(dir), so a reader sees the old or
the new ledger, never half of one.  A checksum and invariants (disjoint cores, unique port
names and sockets, no negative amounts) are checked on every load: a ledger that fails
them is never written over; the hook fails closed with :class:`LedgerCorrupt`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hook.errors import LedgerCorrupt
from hook.host.fsutil import replace_file
from hook.model import STATES, Reservation

FORMAT = 1


def _digest(entries: dict[str, Any]) -> str:
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class LedgerData:
    """The loaded ledger: reservations by container id, changed in place under the lock."""

    def __init__(self, entries: dict[str, Reservation]) -> None:
        self.entries = entries
        self.dirty = False
        self.lock_wait_s = 0.0

    def put(self, reservation: Reservation) -> None:
        self.entries[reservation.container_id] = reservation
        self.dirty = True

    def drop(self, container_id: str) -> Reservation | None:
        found = self.entries.pop(container_id, None)
        if found is not None:
            self.dirty = True
        return found


def check_invariants(entries: dict[str, Reservation]) -> str | None:
    """The first broken invariant as a sentence, or None when the entries are consistent."""
    cores: dict[int, str] = {}
    names: dict[str, str] = {}
    sockets: dict[str, str] = {}
    for cid, res in entries.items():
        if res.container_id != cid:
            return f"entry {cid!r} holds container {res.container_id!r}"
        if res.state not in STATES:
            return f"entry {cid!r} has unknown state {res.state!r}"
        for cpu in res.cpus:
            if cpu in cores:
                return f"core {cpu} is held by both {cores[cpu]!r} and {cid!r}"
            cores[cpu] = cid
        for port in res.ports:
            if port.name in names:
                return f"port {port.name} is held by both {names[port.name]!r} and {cid!r}"
            names[port.name] = cid
            if port.socket_host_path in sockets:
                return f"socket {port.socket_host_path} is held by both {sockets[port.socket_host_path]!r} and {cid!r}"
            sockets[port.socket_host_path] = cid
        for kport in res.kernel_ports:
            if kport.host_name in names:
                return f"port {kport.host_name} is held by both {names[kport.host_name]!r} and {cid!r}"
            names[kport.host_name] = cid
        if res.hugepages_mib < 0 or res.grown_pages < 0:
            return f"entry {cid!r} holds a negative amount of hugepages"
    return None


class Ledger:
    """The ledger file at ``path``; use :meth:`locked` for every read-modify-write."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _load(self) -> dict[str, Reservation]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LedgerCorrupt(path=self.path, reason=exc.strerror or str(exc)) from exc
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT:
                raise LedgerCorrupt(path=self.path, reason=f"unknown format {raw.get('format')!r}")
            raw_entries = raw["entries"]
            if raw.get("checksum") != _digest(raw_entries):
                raise LedgerCorrupt(path=self.path, reason="checksum mismatch")
            entries = {cid: Reservation.from_dict(e) for cid, e in raw_entries.items()}
        except LedgerCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerCorrupt(path=self.path, reason=f"unreadable: {exc}") from exc
        broken = check_invariants(entries)
        if broken:
            raise LedgerCorrupt(path=self.path, reason=broken)
        return entries

    def _save(self, entries: dict[str, Reservation]) -> None:
        raw_entries = {cid: res.to_dict() for cid, res in sorted(entries.items())}
        payload = {"format": FORMAT, "checksum": _digest(raw_entries), "entries": raw_entries}
        replace_file(self.path, json.dumps(payload, indent=1, sort_keys=True).encode(), 0o600)

    @contextmanager
    def locked(self) -> Iterator[LedgerData]:
        """Hold the host-wide lock; yields the loaded ledger and saves it if changed.

        If the body raises, nothing is written.
        """
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            started = time.monotonic()
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            data = LedgerData(self._load())
            data.lock_wait_s = time.monotonic() - started
            yield data
            if data.dirty:
                broken = check_invariants(data.entries)
                if broken:  # a bug upstream: never persist an inconsistent ledger
                    raise LedgerCorrupt(path=self.path, reason=f"refusing to write: {broken}")
                self._save(data.entries)
        finally:
            os.close(lock_fd)  # closing drops the flock

    def snapshot(self) -> dict[str, Reservation]:
        """A consistent read of all entries (takes the lock briefly)."""
        with self.locked() as data:
            return dict(data.entries)

    def reset(self, entries: dict[str, Reservation]) -> str | None:
        """Replace a ledger (used by ``gc --rebuild``); the old file is kept aside.

        Returns where the old file was moved, if there was one.
        """
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            aside = None
            if os.path.exists(self.path):
                aside = f"{self.path}.corrupt-{int(time.time())}"
                os.replace(self.path, aside)
            self._save(entries)
            return aside
        finally:
            os.close(lock_fd)
