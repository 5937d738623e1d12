"""The ledger: atomic, checksummed, consistent, and safe under many concurrent hooks."""

from __future__ import annotations

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


def test_round_trip_and_checksum(tmp_path: Path) -> None:
    """What is put is read back, and the file carries a checksum over its entries."""
    ledger = Ledger(str(tmp_path / "ledger.json"))
    with ledger.locked() as data:
        data.put(res("a", [1, 2], 64))
    assert ledger.snapshot()["a"].cpus == [1, 2]
    raw = json.loads((tmp_path / "ledger.json").read_text())
    assert raw["format"] == 2 and len(raw["checksum"]) == 64


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
        (lambda raw: raw[: len(raw) // 2], "unreadable"),
        (lambda raw: "\0" * len(raw), "unreadable"),
        (lambda raw: bytes(range(256)).decode("latin-1") * 4, "unreadable"),
        (lambda raw: raw.replace('"format":2', '"format":9'), "unknown format"),
    ],
)
def test_corrupt_ledger_fails_closed(tmp_path: Path, mangle, reason: str) -> None:
    """A tampered, truncated or unknown ledger raises LedgerCorrupt and is not overwritten."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    with ledger.locked() as data:
        data.put(res("a", [1]))
    bad = mangle(path.read_text()).encode("latin-1")  # latin-1: garbage bytes stay bytes, not UTF-8
    path.write_bytes(bad)
    with pytest.raises(LedgerCorrupt, match=reason) as info:
        with ledger.locked() as data:
            data.put(res("b", [2]))
    assert "gc --rebuild" in str(info.value)
    assert path.read_bytes() == bad


def test_invariant_violation_is_corruption(tmp_path: Path) -> None:
    """Two entries holding one core fail the invariants even with a valid checksum."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    with pytest.raises(LedgerCorrupt, match="core 1 is held by both"):
        with ledger.locked() as data:
            data.put(res("a", [1]))
            data.put(res("b", [1]))
    assert not path.exists()


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


def test_fifty_concurrent_reservations_never_double_allocate(tmp_path: Path) -> None:
    """60 processes reserving at once: no core twice, the hugepage budget (40 x 64Mi) never exceeded."""
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


def test_commit_saves_before_the_lock_is_left(tmp_path: Path) -> None:
    """A record that must be durable before an effect is on disk while the lock is still held."""
    path = tmp_path / "ledger.json"
    ledger = Ledger(str(path))
    with ledger.locked() as data:
        data.put(res("a", [1]))
        data.commit()
        assert "id-a" in path.read_text()


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
