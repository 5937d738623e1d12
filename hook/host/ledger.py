"""The host-wide ledger of reservations, shared by every concurrent hook.

A snapshot file plus a write-ahead journal, guarded by ``flock`` on a sibling lock file
(the kernel drops the lock if a hook dies):

- the snapshot (``ledger.json``): a header line (format, the sequence number it holds, the
  name of its journal, a checksum of the entries line) and the entries line;
- its journal (``ledger.json.journal.<generation>``): one line per change made since,
  ``<checksum> {"seq": n, "put": entry}`` or ``{"seq": n, "drop": key}``.

Under the lock a hook reads both, decides, and appends its change: one ``write()``, no
fsync.  The fsync (``fdatasync`` of the journal) comes right after the lock is let go and
before the hook returns to what it does next, so a change is durable before any effect
that depends on it, and hooks that append at once share one flush.  Whoever sees a long
journal writes a new snapshot and starts a new journal (:meth:`Ledger.rewrite`): the
snapshot is written and fsynced outside the lock, and renamed under it only if nothing
changed in between (temp file + fsync + rename + fsync(dir), so a reader sees the old or
the new snapshot, never half of one).

Checksums and invariants (disjoint cores, unique port names and sockets, no negative
amounts) are checked on every load: a ledger that fails them is never written over; the
hook fails closed with :class:`LedgerCorrupt`.  A journal's last line cut short (a hook
killed in its write, a crash before the flush) was never acknowledged: it is dropped;
a bad line anywhere else is corruption.

Entries are keyed by the instance key (random, host-unique), not by container id: ids are
unique only per runtime root or namespace.  Ledgers of format 1 (keyed by id) and 2 (one
JSON document, no journal) are read and rewritten as format 3.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hook.errors import HookError, LedgerCorrupt
from hook.host.fsutil import discard, fsync_dir, replace_file, write_temp
from hook.model import STATES, Reservation

try:  # built into the interpreter: hashlib loads OpenSSL, ~3 ms per hook start
    from _sha256 import sha256
except ImportError:  # Python 3.12+ calls it _sha2; hashlib where neither is built in
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

FORMAT = 3
# Journal lines after which a user of the ledger folds the journal into a new snapshot.  A
# line costs every later hold ~10 µs to read; a rewrite costs its user four fsyncs (outside
# the lock), so a container start leaves it to releases and gc unless the journal is long.
REWRITE_AFTER = 64
REWRITE_AFTER_AT_START = 256
REWRITE_LOCK_WAIT_S = 0.25  # a rewrite is optional: it waits this long for the lock at most
_JOURNAL_NAME = re.compile(r"\.journal\.([0-9]{1,18})\Z")


class LedgerBusy(HookError):
    """The ledger lock was not free within the stage's time budget."""

    msg_fmt = "ledger {path}: still locked by another hook after {waited:.1f}s; nothing was changed"
    exit_code = 6


def _digest(entries: dict[str, Any]) -> str:
    """Formats 1 and 2: the checksum over the entries' canonical JSON."""
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return sha256(canonical.encode()).hexdigest()


def _line_sum(body: bytes) -> bytes:
    return sha256(body).hexdigest()[:16].encode()


def journal_name(ledger_path: str, generation: int) -> str:
    return f"{os.path.basename(ledger_path)}.journal.{generation}"


def _new_generation() -> int:
    # random, not counted: a rewrite and a first write under the lock never pick the same name
    return int.from_bytes(os.urandom(6), "big") | 1


class _State:
    """The ledger as read under the lock: its entries, and where the next change goes."""

    __slots__ = ("entries", "seq", "generation", "journal_lines", "journal_end", "journal_size")

    def __init__(self, entries: dict[str, Reservation], seq: int, generation: int) -> None:
        self.entries = entries
        self.seq = seq  # the last change the entries hold
        self.generation = generation  # the journal's; 0: none yet (no ledger, or format 1/2)
        self.journal_lines = 0
        self.journal_end = 0  # where the last whole, checked line ends
        self.journal_size = 0  # the file's size (more than journal_end: a cut-short tail)


class LedgerData:
    """The loaded ledger: reservations by instance key, changed in place under the lock."""

    def __init__(self, ledger: Ledger, state: _State) -> None:
        self._ledger = ledger
        self._state = state
        self.entries = state.entries
        self._changed: dict[str, None] = {}  # keys put or dropped since the last append, in order
        self.lock_wait_s = 0.0
        self.locked_at = time.monotonic()  # when the lock was taken (before the ledger was read)
        self.released_at = 0.0  # when it was let go (before the flush)
        self.lock_cpu_s = 0.0  # the CPU time the holder used meanwhile (the rest: waiting for I/O or a CPU)

    @property
    def dirty(self) -> bool:
        return bool(self._changed)

    def put(self, reservation: Reservation) -> None:
        self.entries[reservation.key] = reservation
        self._changed[reservation.key] = None

    def drop(self, key: str) -> Reservation | None:
        found = self.entries.pop(key, None)
        if found is not None:
            self._changed[key] = None
        return found

    def by_container(self, container_id: str, bundle: str | None = None) -> list[Reservation]:
        """Entries of instances with this container id (and bundle, when given)."""
        return [
            res for res in self.entries.values()
            if res.container_id == container_id and (not bundle or not res.bundle or res.bundle == bundle)
        ]

    def save(self) -> None:
        """Append what changed to the journal (flushed once the lock is let go)."""
        if self._changed:
            self._ledger._append(self._state, list(self._changed))
            self._changed.clear()

    def commit(self) -> None:
        """Save and flush now, still holding the lock: for a record that must be durable
        before an effect made under the lock."""
        self.save()
        self._ledger._flush()


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
LOCK_RT_PRIORITY = 1  # the lowest real-time priority: above every normal task, below the kernel's own


def _boost() -> Any:
    """Run ahead of normal tasks while holding the lock; what :func:`_unboost` restores, or None.

    A burst of container starts is many CPU-bound processes on few cores, and a holder that
    loses its CPU keeps every waiter waiting.  Measured at 16 simultaneous starts on 2 vCPUs
    (the hold is 1-3 ms of CPU, with no I/O that waits: the journal's flush comes after the
    release): at nice -20 the holder still spent up to 13 ms runnable but not running, and
    the hold's p99 was 17-37 ms through the agent; as SCHED_FIFO it never waited, p99 2-4 ms.
    (SCHED_FIFO was tried when the hold still fsynced and made the tail worse: a real-time
    task waiting for I/O.)  SCHED_RESET_ON_FORK: a process the body starts runs normally.
    Where real-time is refused (no CAP_SYS_NICE, a cgroup without real-time time) nice -20;
    else nothing.
    """
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return None  # started real-time (or batch, idle) by whoever runs the hook: left as it is
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(LOCK_RT_PRIORITY))
        return _REALTIME
    except OSError:
        pass
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        if before <= LOCK_NICE:
            return None
        os.setpriority(os.PRIO_PROCESS, 0, LOCK_NICE)
    except OSError:
        return None
    return before


_REALTIME = "realtime"


def _unboost(before: Any) -> None:
    try:
        if before == _REALTIME:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, 0, before)
    except OSError:
        pass


def _raw_entries(entries: dict[str, Reservation]) -> dict[str, Any]:
    return {key: res.to_dict() for key, res in sorted(entries.items())}


def _snapshot_bytes(entries: dict[str, Reservation], seq: int, journal: str) -> bytes:
    line = json.dumps(_raw_entries(entries), separators=(",", ":")).encode() + b"\n"
    header = {"format": FORMAT, "seq": seq, "journal": journal, "checksum": sha256(line).hexdigest()}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + line


class Ledger:
    """The ledger at ``path``; use :meth:`locked` for every read-modify-write."""

    def __init__(self, path: str, timeout_s: float | None = None) -> None:
        self.path = path
        self.directory = os.path.dirname(path) or "."
        self.timeout_s = timeout_s  # None: wait for the lock as long as it takes
        self.released_at = 0.0  # when the lock was last let go (before the priority was lowered again)
        self.released_cpu = 0.0  # this thread's CPU time then
        self.rewrite_after: int | None = None  # None: REWRITE_AFTER (read when used, so tests can lower it)
        self._unflushed: int | None = None  # the journal fd appended to under the lock, to fdatasync after it

    # --- reading --------------------------------------------------------------------------

    def _corrupt(self, reason: str, path: str | None = None) -> LedgerCorrupt:
        return LedgerCorrupt(path=path or self.path, reason=reason)

    def _read(self) -> _State:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return _State({}, 0, 0)
        except OSError as exc:
            raise self._corrupt(exc.strerror or str(exc)) from exc
        header_line, _, entries_line = data.partition(b"\n")
        try:
            header = json.loads(header_line)
            fmt = header.get("format")
            if fmt in (1, 2):
                return _State(self._entries(self._legacy_entries(json.loads(data))), 0, 0)
            if fmt != FORMAT:
                raise self._corrupt(f"unknown format {fmt!r}")
            if header.get("checksum") != sha256(entries_line).hexdigest():
                raise self._corrupt("checksum mismatch")
            seq, journal = header["seq"], header["journal"]
            match = _JOURNAL_NAME.search(journal) if isinstance(journal, str) else None
            if not isinstance(seq, int) or match is None or journal != journal_name(self.path, int(match.group(1))):
                raise self._corrupt("bad header")
            raw_entries = json.loads(entries_line)
            if not isinstance(raw_entries, dict):
                raise self._corrupt("bad entries")
        except LedgerCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._corrupt(f"unreadable: {exc}") from exc
        state = _State({}, seq, int(match.group(1)))
        self._replay(state, raw_entries)
        state.entries = self._entries(raw_entries)
        return state

    def _legacy_entries(self, raw: dict[str, Any]) -> dict[str, Any]:
        raw_entries = raw["entries"]
        if raw.get("checksum") != _digest(raw_entries):
            raise self._corrupt("checksum mismatch")
        if raw["format"] == 1:
            from hook.decide.names import legacy_key

            raw_entries = {legacy_key(cid): {**e, "key": legacy_key(cid)} for cid, e in raw_entries.items()}
        return dict(raw_entries)

    def _entries(self, raw_entries: dict[str, Any]) -> dict[str, Reservation]:
        try:
            entries = {key: Reservation.from_dict(e) for key, e in raw_entries.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._corrupt(f"unreadable: {exc}") from exc
        broken = check_invariants(entries)
        if broken:
            raise self._corrupt(broken)
        return entries

    def _journal_path(self, generation: int) -> str:
        return os.path.join(self.directory, journal_name(self.path, generation))

    def _replay(self, state: _State, raw_entries: dict[str, Any]) -> None:
        """Apply the journal's whole lines to ``raw_entries``; note where the next one goes."""
        path = self._journal_path(state.generation)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise self._corrupt("its journal is missing", path) from None
        except OSError as exc:
            raise self._corrupt(exc.strerror or str(exc), path) from exc
        state.journal_size = len(data)
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # cut short: never acknowledged
            line = data[pos:end]
            total, _, body = line.partition(b" ")
            if total != _line_sum(body):
                if data.find(b"\n", end + 1) < 0 and not data[end + 1:].strip(b"\0"):
                    break  # the last line, damaged by a crash before its flush
                raise self._corrupt(f"journal line {state.journal_lines + 1}: checksum mismatch", path)
            try:
                record = json.loads(body)
                seq = record["seq"]
                if seq != state.seq + 1:
                    raise ValueError(f"sequence {seq} after {state.seq}")
                if "put" in record:
                    entry = record["put"]
                    raw_entries[entry["key"]] = entry
                else:
                    raw_entries.pop(record["drop"], None)
            except (ValueError, KeyError, TypeError) as exc:
                raise self._corrupt(f"journal line {state.journal_lines + 1}: {exc}", path) from exc
            state.seq = seq
            state.journal_lines += 1
            pos = end + 1
        state.journal_end = pos

    # --- writing --------------------------------------------------------------------------

    def _append(self, state: _State, keys: list[str]) -> None:
        """Append the changes of ``keys`` (under the lock; flushed by :meth:`_flush`)."""
        broken = check_invariants(state.entries)
        if broken:  # a bug upstream: never persist an inconsistent ledger
            raise self._corrupt(f"refusing to write: {broken}")
        if state.generation == 0:  # no journal yet: the first write makes a snapshot, as a rewrite would
            self._write_snapshot_locked(state)
            return
        lines = []
        for key in keys:
            state.seq += 1
            res = state.entries.get(key)
            record: dict[str, Any] = {"seq": state.seq, "put": res.to_dict()} if res is not None else {"seq": state.seq, "drop": key}
            body = json.dumps(record, separators=(",", ":")).encode()
            lines.append(_line_sum(body) + b" " + body + b"\n")
        path = self._journal_path(state.generation)
        fd = self._unflushed
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._unflushed = fd
        try:
            if state.journal_end < state.journal_size:  # a cut-short tail: its writer died
                os.ftruncate(fd, state.journal_end)
            view = memoryview(b"".join(lines))
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from exc
        state.journal_lines += len(lines)
        state.journal_end = state.journal_size = state.journal_end + sum(map(len, lines))

    def _flush(self) -> None:
        """Make what this hook appended durable (``fdatasync``), and close the journal."""
        fd, self._unflushed = self._unflushed, None
        if fd is None:
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _write_snapshot_locked(self, state: _State) -> None:
        """A new snapshot of ``state`` with a new, empty journal, all under the lock."""
        generation = _new_generation()
        journal = self._journal_path(generation)
        self._create_journal(journal)
        try:
            replace_file(self.path, _snapshot_bytes(state.entries, state.seq, os.path.basename(journal)), 0o600)
        except BaseException:
            discard(journal)
            raise
        state.generation, state.journal_lines, state.journal_end, state.journal_size = generation, 0, 0, 0

    @staticmethod
    def _create_journal(path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _journals(self) -> list[str]:
        """The journal files beside the ledger (the current one and any left over)."""
        prefix = os.path.basename(self.path) + ".journal."
        return [os.path.join(self.directory, name) for name in os.listdir(self.directory)
                if name.startswith(prefix) and _JOURNAL_NAME.search(name)]

    def _version(self, state: _State) -> tuple[object, ...]:
        """What changes whenever the ledger does: the snapshot's identity and its journal's size."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (None,)
        journal = os.path.getsize(self._journal_path(state.generation)) if state.generation else 0
        return (st.st_ino, st.st_size, st.st_mtime_ns, journal)

    def rewrite(self) -> bool:
        """Fold the journal into a new snapshot; False if the ledger changed meanwhile or another
        rewrite runs (a later one will do it).

        The lock is held three times, briefly: to read the ledger; to rename the new snapshot
        into place if nothing changed since; and, once the rename is durable, to remove
        journals no snapshot names.  Writing and fsyncing the snapshot and its new empty
        journal happen outside it.  One rewrite at a time (its own lock), so no rewrite
        removes another's new journal.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        guard = os.open(f"{self.path}.rewrite.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            with self._lock():
                state = self._read()
                version = self._version(state)
            journal = self._journal_path(_new_generation())
            snapshot = _snapshot_bytes(state.entries, state.seq, os.path.basename(journal))
            self._create_journal(journal)
            tmp, renamed = None, False
            try:
                tmp = write_temp(self.path, snapshot, 0o600)
                fsync_dir(self.directory)
                with self._lock():
                    if self._version(state) == version:
                        os.replace(tmp, self.path)
                        renamed = True
            finally:
                if not renamed:
                    discard(journal)
                    if tmp is not None:
                        discard(tmp)
            if not renamed:
                return False
            fsync_dir(self.directory)
            with self._lock():
                current = self._journal_path(self._read().generation)
                for path in self._journals():
                    if path != current:
                        discard(path)
            return True
        finally:
            os.close(guard)

    # --- the lock -------------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[float]:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        before = None
        try:
            started = time.monotonic()
            try:
                _flock(lock_fd, self.timeout_s)
            except _Timeout:
                raise LedgerBusy(path=self.path, waited=time.monotonic() - started) from None
            before = _boost()
            yield time.monotonic() - started
        finally:
            os.close(lock_fd)  # closing drops the flock
            self.released_at = time.monotonic()
            self.released_cpu = time.thread_time()
            if before is not None:
                _unboost(before)

    @contextmanager
    def locked(self) -> Iterator[LedgerData]:
        """Hold the host-wide lock; yields the loaded ledger and saves it if changed.

        What was saved is flushed to disk after the lock is let go and before this returns.
        If the body raises, nothing more is written (what :meth:`LedgerData.commit` saved stays).
        """
        if not os.path.exists(self.path):
            self._rewrite_quietly()  # the first use on this host: an empty snapshot, made outside the lock
        try:
            with self._lock() as waited:
                locked_at, cpu_at = time.monotonic(), time.thread_time()
                data = LedgerData(self, self._read())
                data.locked_at = locked_at
                data.lock_wait_s = waited
                yield data
                data.save()
            data.released_at = self.released_at
            data.lock_cpu_s = self.released_cpu - cpu_at
        finally:
            self._flush()
        state = data._state
        if state.generation == 0 or state.journal_lines >= (self.rewrite_after or REWRITE_AFTER):
            self._rewrite_quietly()

    def _rewrite_quietly(self) -> None:
        # a rewrite only spares later readers a long journal: a busy lock or a full disk fails nothing
        timeout_s, self.timeout_s = self.timeout_s, REWRITE_LOCK_WAIT_S
        try:
            self.rewrite()
        except (OSError, HookError):
            pass
        finally:
            self.timeout_s = timeout_s

    def peek(self) -> dict[str, Reservation]:
        """The entries as they stand, read without the lock and without side effects (for
        diagnostics and tests: a change being appended right now may be missed)."""
        return self._read().entries

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
        """Replace the ledger; call inside :meth:`locked_for_rebuild`.  The old files are kept aside.

        Returns where the old snapshot was moved, if there was one.
        """
        broken = check_invariants(entries)
        if broken:
            raise self._corrupt(f"refusing to write: {broken}")
        aside = None
        stamp = int(time.time())
        for path in self._journals():
            os.replace(path, f"{path}.corrupt-{stamp}")
        if os.path.exists(self.path):
            aside = f"{self.path}.corrupt-{stamp}"
            os.replace(self.path, aside)
        self._write_snapshot_locked(_State(dict(entries), 0, 0))
        return aside
