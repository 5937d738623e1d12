"""Growing and shrinking the kernel's hugepage pool of one NUMA node.

Only used when the config allows it; what was grown is recorded in the ledger entry and
given back when the container's reservation is released.
"""

from __future__ import annotations

from hook.errors import HugepageError
from hook.host.topology import SYS_ROOT, nr_hugepages_path


def _read(path: str) -> int:
    with open(path, encoding="ascii") as fh:
        return int(fh.read().strip())


def _write(path: str, value: int) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(str(value))


def pool_size(node: int, size_kib: int, sys_root: str = SYS_ROOT) -> int:
    """The node's pool size in pages (nr_hugepages)."""
    path = nr_hugepages_path(node, size_kib, sys_root)
    try:
        return _read(path)
    except OSError as exc:
        raise HugepageError(reason=f"cannot read {path}: {exc.strerror or exc}") from exc


def grow(node: int, size_kib: int, pages: int, sys_root: str = SYS_ROOT) -> None:
    """Add ``pages`` pages to the node's pool, all or nothing."""
    if pages <= 0:
        return
    path = nr_hugepages_path(node, size_kib, sys_root)
    try:
        before = _read(path)
        _write(path, before + pages)
        after = _read(path)
    except OSError as exc:
        raise HugepageError(reason=f"cannot grow {path}: {exc.strerror or exc}") from exc
    if after < before + pages:
        try:
            _write(path, before)
        except OSError:
            pass
        raise HugepageError(
            reason=f"the kernel found only {after - before} of {pages} free {size_kib} KiB pages on node {node} (memory too fragmented or too small)"
        )


def shrink(node: int, size_kib: int, pages: int, sys_root: str = SYS_ROOT) -> None:
    """Give ``pages`` pages back; pages still in use become surplus and go when freed."""
    if pages <= 0:
        return
    path = nr_hugepages_path(node, size_kib, sys_root)
    try:
        _write(path, max(_read(path) - pages, 0))
    except OSError as exc:
        raise HugepageError(reason=f"cannot shrink {path}: {exc.strerror or exc}") from exc
