"""The host-wide ledger of reservations, shared by every concurrent hook.

One JSON file guarded by ``flock`` on a sibling lock file (the kernel drops the lock if a
hook dies).  Writes are temp file + fsync + rename + fsync(dir), so a reader sees the old or
the new ledger, never half of one.  A checksum and invariants (disjoint cores, unique port
names and sockets, no negative amounts) are checked on every load: a ledger that fails
them is never written over; the hook fails closed with :class:`LedgerCorrupt`.

Entries are keyed by the instance key (random, host-unique), not by container id: ids are
unique only per runtime root or namespace.  A ledger of format 1 (keyed by id) is read and
rewritten as format 2.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hook.errors import HookError, LedgerCorrupt
from hook.host.fsutil import replace_file
from hook.model import STATES, Reservation

try:  # built into the interpreter: hashlib loads OpenSSL, ~3 ms per hook start
    from _sha256 import sha256
except ImportError:  # Python 3.12+ calls it _sha2; hashlib where neither is built in
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

FORMAT = 2


class LedgerBusy(HookError):
    """The ledger lock was not free within the stage's time budget."""

    msg_fmt = "ledger {path}: still locked by another hook after {waited:.1f}s; nothing was changed"
    exit_code = 6


def _digest(entries: dict[str, Any]) -> str:
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return sha256(canonical.encode()).hexdigest()


class LedgerData:
    """The loaded ledger: reservations by instance key, changed in place under the lock."""

    def __init__(self, ledger: Ledger, entries: dict[str, Reservation]) -> None:
        self._ledger = ledger
        self.entries = entries
        self.dirty = False
        self.lock_wait_s = 0.0
        self.locked_at = time.monotonic()  # when the lock was taken (before the ledger was read)

    def put(self, reservation: Reservation) -> None:
        self.entries[reservation.key] = reservation
        self.dirty = True

    def drop(self, key: str) -> Reservation | None:
        found = self.entries.pop(key, None)
        if found is not None:
            self.dirty = True
        return found

    def by_container(self, container_id: str, bundle: str | None = None) -> list[Reservation]:
        """Entries of instances with this container id (and bundle, when given)."""
        return [
            res for res in self.entries.values()
            if res.container_id == container_id and (not bundle or not res.bundle or res.bundle == bundle)
        ]

    def commit(self) -> None:
        """Save now, still holding the lock: for a record that must be durable before an effect."""
        if self.dirty:
            self._ledger.save_checked(self.entries)
            self.dirty = False


def check_invariants(entries: dict[str, Reservation]) -> str | None:
    """The first broken invariant as a sentence, or None when the entries are consistent."""
    cores: dict[int, str] = {}
    names: dict[str, str] = {}
    sockets: dict[str, str] = {}
    for key, res in entries.items():
        if res.key != key:
            return f"entry {key!r} holds instance {res.key!r}"
        if res.state not in STATES:
            return f"entry {key!r} has unknown state {res.state!r}"
        for cpu in res.cpus:
            if cpu in cores:
                return f"core {cpu} is held by both {cores[cpu]!r} and {key!r}"
            cores[cpu] = key
        for port in res.ports:
            if port.name in names:
                return f"port {port.name} is held by both {names[port.name]!r} and {key!r}"
            names[port.name] = key
            if port.socket_host_path in sockets:
                return f"socket {port.socket_host_path} is held by both {sockets[port.socket_host_path]!r} and {key!r}"
            sockets[port.socket_host_path] = key
        for kport in res.kernel_ports:
            if kport.host_name in names:
                return f"port {kport.host_name} is held by both {names[kport.host_name]!r} and {key!r}"
            names[kport.host_name] = key
        if res.hugepages_mib < 0 or res.grown_pages < 0:
            return f"entry {key!r} holds a negative amount of hugepages"
    return None


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _flock(fd: int, timeout_s: float | None) -> None:
    """flock(LOCK_EX), giving up after ``timeout_s`` (an interval timer interrupts the wait)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        if timeout_s is not None and timeout_s <= 0:
            raise _Timeout from None
    if timeout_s is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


LOCK_NICE = -20


def _boost() -> int | None:
    """Run at a higher priority while holding the lock; the niceness to restore, or None.

    A burst of container starts is many CPU-bound hooks on few cores: the holder, preempted
    for their imports, would keep every waiter waiting (lock hold p99 at 16 starts on 2 CPUs:
    ~25-50 ms at nice 0, ~13-16 ms at -20; the hold itself is ~1-2 ms of CPU).  Needs
    CAP_SYS_NICE (else a no-op).
    """
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        if before <= LOCK_NICE:
            return None
        os.setpriority(os.PRIO_PROCESS, 0, LOCK_NICE)
    except OSError:
        return None
    return before


def _unboost(niceness: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError:
        pass


class Ledger:
    """The ledger file at ``path``; use :meth:`locked` for every read-modify-write."""

    def __init__(self, path: str, timeout_s: float | None = None) -> None:
        self.path = path
        self.timeout_s = timeout_s  # None: wait for the lock as long as it takes
        self.released_at = 0.0  # when the lock was last let go (before the priority was lowered again)

    def _load(self) -> dict[str, Reservation]:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LedgerCorrupt(path=self.path, reason=exc.strerror or str(exc)) from exc
        try:
            raw = json.loads(data)
            if raw.get("format") not in (1, FORMAT):
                raise LedgerCorrupt(path=self.path, reason=f"unknown format {raw.get('format')!r}")
            raw_entries = raw["entries"]
            if raw.get("checksum") != _digest(raw_entries):
                raise LedgerCorrupt(path=self.path, reason="checksum mismatch")
            if raw["format"] == 1:
                from hook.decide.names import legacy_key

                raw_entries = {legacy_key(cid): {**e, "key": legacy_key(cid)} for cid, e in raw_entries.items()}
            entries = {key: Reservation.from_dict(e) for key, e in raw_entries.items()}
        except LedgerCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerCorrupt(path=self.path, reason=f"unreadable: {exc}") from exc
        broken = check_invariants(entries)
        if broken:
            raise LedgerCorrupt(path=self.path, reason=broken)
        return entries

    def _save(self, entries: dict[str, Reservation]) -> None:
        raw_entries = {key: res.to_dict() for key, res in sorted(entries.items())}
        payload = {"format": FORMAT, "checksum": _digest(raw_entries), "entries": raw_entries}
        replace_file(self.path, json.dumps(payload, separators=(",", ":"), sort_keys=True).encode(), 0o600)

    def save_checked(self, entries: dict[str, Reservation]) -> None:
        broken = check_invariants(entries)
        if broken:  # a bug upstream: never persist an inconsistent ledger
            raise LedgerCorrupt(path=self.path, reason=f"refusing to write: {broken}")
        self._save(entries)

    @contextmanager
    def _lock(self) -> Iterator[float]:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        niceness = None
        try:
            started = time.monotonic()
            try:
                _flock(lock_fd, self.timeout_s)
            except _Timeout:
                raise LedgerBusy(path=self.path, waited=time.monotonic() - started) from None
            niceness = _boost()
            yield time.monotonic() - started
        finally:
            os.close(lock_fd)  # closing drops the flock
            self.released_at = time.monotonic()
            if niceness is not None:
                _unboost(niceness)

    @contextmanager
    def locked(self) -> Iterator[LedgerData]:
        """Hold the host-wide lock; yields the loaded ledger and saves it if changed.

        If the body raises, nothing more is written (what :meth:`LedgerData.commit` saved stays).
        """
        with self._lock() as waited:
            locked_at = time.monotonic()
            data = LedgerData(self, self._load())
            data.locked_at = locked_at
            data.lock_wait_s = waited
            yield data
            if data.dirty:
                self.save_checked(data.entries)

    def snapshot(self) -> dict[str, Reservation]:
        """A consistent read of all entries (takes the lock briefly)."""
        with self.locked() as data:
            return dict(data.entries)

    @contextmanager
    def locked_for_rebuild(self) -> Iterator[None]:
        """Hold the lock without loading (the ledger may be corrupt): for ``gc --rebuild``."""
        with self._lock():
            yield

    def reset_locked(self, entries: dict[str, Reservation]) -> str | None:
        """Replace the ledger; call inside :meth:`locked_for_rebuild`.  The old file is kept aside.

        Returns where the old file was moved, if there was one.
        """
        aside = None
        if os.path.exists(self.path):
            aside = f"{self.path}.corrupt-{int(time.time())}"
            os.replace(self.path, aside)
        self.save_checked(entries)
        return aside
