"""The ledger: atomic, checksummed, consistent, and safe under many concurrent hooks."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from hook.config import Config
from hook.decide.allocate import allocate
from hook.errors import LedgerCorrupt, ResourceExhausted
from hook.host.ledger import Ledger
from hook.host.topology import HugepagePool, Node, Topology
from hook.model import Instance, PortLease, PortRequest, Request, Reservation


def res(key: str, cpus: list[int], mib: int = 0, ports: list[PortLease] | None = None) -> Reservation:
    return Reservation(key=key, container_id=f"id-{key}", state="active", backend="ovs", numa_node=0, cpus=cpus, hugepage_size_kib=2048,
                       hugepages_mib=mib, ports=ports or [])


def _files(tmp_path: Path) -> tuple[dict, list[bytes]]:
    """The snapshot's header and the lines of the one journal beside it."""
    header = json.loads((tmp_path / "ledger.json").read_bytes().split(b"\n", 1)[0])
    journals = sorted(tmp_path.glob("ledger.json.journal.*"))
    assert [p.name for p in journals] == [header["journal"]]
    return header, journals[0].read_bytes().splitlines(keepends=True)


def test_round_trip_snapshot_and_journal(tmp_path: Path) -> None:
    """What is put is read back; a change is one checksummed journal line, not a rewritten file."""
    ledger = Ledger(str(tmp_path / "ledger.json"))
    with ledger.locked() as data:
        data.put(res("a", [1, 2], 64))
    with ledger.locked() as data:
        data.put(res("b", [3]))
        data.drop("a")
    assert list(ledger.snapshot()) == ["b"] and ledger.peek()["b"].cpus == [3]
    header, lines = _files(tmp_path)
    assert header["format"] == 3 and header["seq"] == 0 and len(header["checksum"]) == 64
    assert [json.loads(line.split(b" ", 1)[1]) for line in lines] == [
        {"seq": 1, "put": res("a", [1, 2], 64).to_dict()}, {"seq": 2, "put": res("b", [3]).to_dict()}, {"seq": 3, "drop": "a"}]


def test_body_failure_writes_nothing(tmp_path: Path) -> None:
    """If the code under the lock raises, the ledger is unchanged."""
    ledger = Ledger(str(tmp_path / "ledger.json"))
    with pytest.raises(RuntimeError), ledger.locked() as data:
        data.put(res("a", [1]))
        raise RuntimeError("boom")
    assert ledger.snapshot() == {}


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda raw: raw.replace('"cpus":[', '"cpus":[7,', 1), "checksum mismatch"),
        (lambda raw: raw[: len(raw) // 2], "unreadable|checksum mismatch"),
        (lambda raw: "\0" * len(raw), "unreadable"),
        (lambda raw: bytes(range(256)).decode("latin-1") * 4, "unreadable"),
        (lambda raw: raw.replace('"format":3', '"format":9'), "unknown format"),
    ],
)
def test_corrupt_snapshot_fails_closed(tmp_path: Path, mangle, reason: str) -> None:
    """A tampered, truncated or unknown snapshot raises LedgerCorrupt and is not overwritten."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    with ledger.locked() as data:
        data.put(res("a", [1]))
    assert ledger.rewrite()  # the entry is in the snapshot now
    bad = mangle(path.read_text()).encode("latin-1")  # latin-1: garbage bytes stay bytes, not UTF-8
    path.write_bytes(bad)
    with pytest.raises(LedgerCorrupt, match=reason) as info:
        with ledger.locked() as data:
            data.put(res("b", [2]))
    assert "gc --rebuild" in str(info.value)
    assert path.read_bytes() == bad


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda lines: [lines[0].replace(b'"cpus":[', b'"cpus":[7,', 1), *lines[1:]], "journal line 1: checksum mismatch"),
        (lambda lines: [lines[1], lines[0], *lines[2:]], "journal line 1: sequence 2 after 0"),
        (lambda lines: [lines[0], lines[2]], "journal line 2: sequence 3 after 1"),
        (lambda lines: [], "^$"),  # emptied: the entries are gone, which no check can tell (gc --rebuild restores)
    ],
)
def test_corrupt_journal_fails_closed(tmp_path: Path, mangle, reason: str) -> None:
    """A journal line changed, reordered or missing in the middle is corruption, not a tail to drop."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    for key, cpu in (("a", 1), ("b", 2), ("c", 3)):
        with ledger.locked() as data:
            data.put(res(key, [cpu]))
    header, lines = _files(tmp_path)
    journal = tmp_path / header["journal"]
    journal.write_bytes(b"".join(mangle(lines)))
    if reason == "^$":
        assert ledger.peek() == {}
        return
    with pytest.raises(LedgerCorrupt, match=reason):
        ledger.peek()
    with pytest.raises(LedgerCorrupt):
        with ledger.locked() as data:
            data.put(res("d", [4]))
    assert journal.read_bytes() == b"".join(mangle(lines))


@pytest.mark.parametrize("tail", [b'0123456789abcdef {"seq":3,"put":{"key"', b"\0" * 40 + b"\n", b"\0" * 17])
def test_a_cut_short_last_line_is_dropped_and_written_over(tmp_path: Path, tail: bytes) -> None:
    """A writer killed mid-line, or a crash before its flush (zeros), left a last line never acknowledged:
    it is ignored, and the next change takes its place."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    for key, cpu in (("a", 1), ("b", 2)):
        with ledger.locked() as data:
            data.put(res(key, [cpu]))
    header, lines = _files(tmp_path)
    journal = tmp_path / header["journal"]
    with journal.open("ab") as fh:
        fh.write(tail)
    assert sorted(ledger.peek()) == ["a", "b"]
    with ledger.locked() as data:
        data.put(res("c", [3]))
    assert sorted(ledger.peek()) == ["a", "b", "c"]
    assert journal.read_bytes().startswith(b"".join(lines)) and tail not in journal.read_bytes()
    assert len(journal.read_bytes().splitlines()) == 3


def test_a_missing_journal_is_corruption(tmp_path: Path) -> None:
    """A snapshot whose journal is gone may have lost changes: fail closed."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    with ledger.locked() as data:
        data.put(res("a", [1]))
    header, _ = _files(tmp_path)
    (tmp_path / header["journal"]).unlink()
    with pytest.raises(LedgerCorrupt, match="journal is missing"):
        ledger.snapshot()


def test_invariant_violation_is_corruption(tmp_path: Path) -> None:
    """Two entries holding one core fail the invariants even with a valid checksum."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    with pytest.raises(LedgerCorrupt, match="core 1 is held by both"):
        with ledger.locked() as data:
            data.put(res("a", [1]))
            data.put(res("b", [1]))
    assert ledger.peek() == {}


def test_the_flush_comes_after_the_lock_is_let_go(tmp_path: Path) -> None:
    """The fsync is out of the hold, yet done before locked() returns (before any effect)."""
    import fcntl

    seen: list[bool] = []

    class Watched(Ledger):
        def _flush(self) -> None:
            if self._unflushed is not None:
                probe = os.open(f"{self.path}.lock", os.O_RDWR)
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
                    seen.append(True)
                finally:
                    os.close(probe)
            super()._flush()
            if seen:
                seen.append(self._unflushed is None)

    ledger = Watched(str(tmp_path / "ledger.json"))
    with ledger.locked() as data:
        data.put(res("a", [1]))
    assert seen == [True, True]


def test_commit_flushes_before_the_lock_is_left(tmp_path: Path) -> None:
    """A record that must be durable before an effect made under the lock is on disk while it is held."""
    ledger = Ledger(str(tmp_path / "ledger.json"))
    with ledger.locked() as data:
        data.put(res("a", [1]))
        data.commit()
        assert ledger._unflushed is None
        assert b"id-a" in b"".join(_files(tmp_path)[1])
        assert "a" in Ledger(str(tmp_path / "ledger.json")).peek()


def test_a_long_journal_is_folded_into_a_new_snapshot(tmp_path: Path) -> None:
    """After REWRITE_AFTER changes the next user rewrites: the snapshot holds them, one short journal remains."""
    from hook.host.ledger import REWRITE_AFTER

    ledger = Ledger(str(tmp_path / "ledger.json"))
    for i in range(REWRITE_AFTER + 1):
        with ledger.locked() as data:
            data.put(res(f"k{i}", [i]))
    header, lines = _files(tmp_path)
    assert header["seq"] >= REWRITE_AFTER and len(lines) < REWRITE_AFTER
    assert sorted(ledger.peek()) == sorted(f"k{i}" for i in range(REWRITE_AFTER + 1))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_rewrite_gives_up_when_the_ledger_changed_meanwhile(tmp_path: Path) -> None:
    """A change appended while the new snapshot was being written is not lost: that rewrite is dropped."""
    path = str(tmp_path / "ledger.json")
    ledger = Ledger(path)
    with ledger.locked() as data:
        data.put(res("a", [1]))
    before, _ = _files(tmp_path)

    class Interrupted(Ledger):
        def _create_journal(self, journal: str) -> None:
            super()._create_journal(journal)
            with Ledger(path).locked() as other:  # another hook, between the rewrite's two holds
                other.put(res("b", [2]))

    assert Interrupted(path).rewrite() is False
    after, lines = _files(tmp_path)
    assert after == before and len(lines) == 2  # the old snapshot and journal, with the change
    assert sorted(Ledger(path).peek()) == ["a", "b"]
    assert Ledger(path).rewrite() is True
    assert sorted(Ledger(path).peek()) == ["a", "b"] and _files(tmp_path)[1] == []


def test_a_format_2_ledger_is_read_and_rewritten_as_format_3(tmp_path: Path) -> None:
    """An earlier install's single-document ledger keeps its entries across an upgrade."""
    from hook.host.ledger import _digest

    raw = {"a": res("a", [1]).to_dict()}
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"format": 2, "checksum": _digest(raw), "entries": raw}))
    ledger = Ledger(str(path))
    assert list(ledger.peek()) == ["a"]
    with ledger.locked() as data:
        data.put(res("b", [2]))
    header, _ = _files(tmp_path)
    assert header["format"] == 3 and sorted(ledger.snapshot()) == ["a", "b"]


def test_reset_keeps_the_old_file_aside(tmp_path: Path) -> None:
    """A rebuild moves the old ledger aside rather than deleting evidence."""
    path = tmp_path / "ledger.json"
    path.write_text("garbage")
    ledger = Ledger(str(path))
    with ledger.locked_for_rebuild():
        aside = ledger.reset_locked({"a": res("a", [3])})
    assert aside and Path(aside).read_text() == "garbage"
    assert Ledger(str(path)).snapshot()["a"].cpus == [3]


TOPO = Topology({0: Node(0, frozenset(range(64)))}, {2048: HugepagePool(total=100000, free=100000)})
CFG = Config(cpu_pool=frozenset(range(64)), hugepage_budget_kib=40 * 64 * 1024)


def _worker(path: str, cid: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait()
    ledger = Ledger(path)
    try:
        with ledger.locked() as data:
            request = Request(cpus=1, hugepages_mib=64, hugepage_size_kib=2048, ports=(PortRequest(),))
            d = allocate(request, CFG, TOPO, data.entries, Instance(cid, "/b", 1000 + int(cid[1:]), 1), f"{int(cid[1:]):04d}{0:012d}", 0.0)
            data.put(d.reservation)
        out.put((cid, "ok"))
    except ResourceExhausted as exc:
        out.put((cid, str(exc)))


@pytest.mark.parametrize("rewrite_after", [64, 3], ids=["journal", "rewrites-racing"])
def test_fifty_concurrent_reservations_never_double_allocate(tmp_path: Path, rewrite_after: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 processes reserving at once: no core twice, the hugepage budget (40 x 64Mi) never exceeded,
    no change lost, also while rewrites fold the journal between the changes."""
    import hook.host.ledger

    monkeypatch.setattr(hook.host.ledger, "REWRITE_AFTER", rewrite_after)  # the forked workers inherit it
    path = str(tmp_path / "ledger.json")
    n = 60
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, f"c{i}", barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    entries = Ledger(path).snapshot()
    ok = [cid for cid, r in results if r == "ok"]
    refused = [r for _, r in results if r != "ok"]
    assert len(ok) == 40 and len(entries) == 40
    assert all("hugepage budget" in r for r in refused) and len(refused) == 20
    cores = [c for e in entries.values() for c in e.cpus]
    assert len(cores) == len(set(cores)) == 40
    assert sum(e.hugepages_mib for e in entries.values()) <= 40 * 64
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len([f for f in os.listdir(tmp_path) if ".journal." in f]) == 1


def test_a_format_1_ledger_is_read_with_keys_from_the_container_ids(tmp_path: Path) -> None:
    """An earlier install's ledger (keyed by container id) keeps working after an upgrade."""
    from hook.decide.names import legacy_key
    from hook.host.ledger import _digest

    entry = {"container_id": "old", "state": "active", "backend": "ovs", "numa_node": 0, "cpus": [3], "hugepage_size_kib": 2048,
             "hugepages_mib": 64, "socket_dir": "/run/x/sockets/abc", "ports": [], "pid": 1, "pid_start": 1, "grown_pages": 0,
             "created": 0.0, "kernel_ports": []}
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"format": 1, "checksum": _digest({"old": entry}), "entries": {"old": entry}}))
    entries = Ledger(str(path)).snapshot()
    assert list(entries) == [legacy_key("old")] and entries[legacy_key("old")].cpus == [3]


def test_a_busy_lock_gives_up_within_the_timeout(tmp_path: Path) -> None:
    """A hook never waits for the lock beyond its budget: LedgerBusy, nothing written."""
    import fcntl
    import time

    from hook.host.ledger import LedgerBusy

    path = tmp_path / "ledger.json"
    holder = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(LedgerBusy, match="still locked"):
            with Ledger(str(path), timeout_s=0.3).locked():
                pass
        assert 0.25 < time.monotonic() - started < 2.0
    finally:
        os.close(holder)
    assert not path.exists()


def test_a_failed_write_names_the_file(tmp_path: Path) -> None:
    """A full disk while writing (an fd has no name) is reported with the file's path, and no temp file stays."""
    code = (
        "import resource, signal, sys; from hook.host.fsutil import replace_file\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))\n"
        "try:\n    replace_file(sys.argv[1], b'x' * 4096)\nexcept OSError as exc:\n    print(exc.filename, exc.errno)\n"
    )
    import errno
    import subprocess
    import sys

    target = tmp_path / "ledger.json"
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == [str(target), str(errno.EFBIG)]
    assert os.listdir(tmp_path) == []


def test_entries_read_back_equal_whatever_the_record_holds() -> None:
    """from_dict skips __init__ only for a whole record: an older one gets the defaults, an unknown field is refused."""
    lease = PortLease(index=0, name="dpk0", mode="server", bridge="br", socket_host_path="/s", container_path="/c", mac="02:00:00:00:00:01")
    whole = res("a", [1, 2], 64, ports=[lease])
    assert Reservation.from_dict(whole.to_dict()) == whole
    older = whole.to_dict()
    del older["cgroups"], older["links"]
    assert Reservation.from_dict(older) == whole
    with pytest.raises(TypeError):
        Reservation.from_dict({**whole.to_dict(), "unknown": 1})
    with pytest.raises(TypeError):
        Reservation.from_dict({**whole.to_dict(), "ports": [{**lease.__dict__, "unknown": 1}]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        Reservation.from_dict(whole.to_dict()).ports[0].name = "x"  # type: ignore[misc]


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs CAP_SYS_NICE")
def test_the_holder_runs_real_time_only_while_it_holds_the_lock(tmp_path: Path) -> None:
    """A holder is never preempted by the burst's other hooks; before and after, it is a normal task,
    and what it starts under the lock is too (SCHED_RESET_ON_FORK)."""
    import subprocess
    import sys

    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    ledger = Ledger(str(tmp_path / "ledger.json"))
    with ledger.locked() as data:
        held = os.sched_getscheduler(0)
        child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"], capture_output=True, text=True,
                               check=True, timeout=60).stdout.strip()
        data.put(res("a", [1]))
    assert held == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert child == str(os.SCHED_OTHER)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, 0) == niceness
