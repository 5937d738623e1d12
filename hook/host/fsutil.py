"""Writing host files safely: atomic replacement and single-write line appends.

Every file the project writes whole (the ledger, config.json of a bundle, engine configs,
the config cache) goes through :func:`replace_file`; every JSON-lines log through
:func:`append_line`.  Only ``os`` is imported: the runtime wrapper uses this on every call.
"""

from __future__ import annotations

import os


def replace_file(path: str, data: bytes, mode: int | None = None, keep_owner: bool = False, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a temp file beside it, fsync, rename, fsync(dir).

    Readers see the old or the new file, never half of one.  ``mode`` defaults to the
    existing file's mode (0o644 for a new one); ``keep_owner`` keeps its uid/gid too.
    ``durable`` False skips the fsyncs (for caches that may be lost).  Raises OSError; the
    temp file is removed on failure.
    """
    tmp = write_temp(path, data, mode, keep_owner, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def write_temp(path: str, data: bytes, mode: int | None = None, keep_owner: bool = False, durable: bool = True) -> str:
    """Write ``data`` to a temp file beside ``path`` (fsynced if ``durable``); its path, for a rename.

    The first half of :func:`replace_file`, for a caller that renames later (the ledger
    writes a snapshot outside its lock and renames it under the lock).
    """
    directory = os.path.dirname(path) or "."
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    if mode is None:
        mode = st.st_mode & 0o7777 if st is not None else 0o644
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # whatever the umask
            if keep_owner and st is not None:
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                except PermissionError:
                    pass  # rootless: the file is ours anyway
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        discard(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a write on an fd: say which file
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    return tmp


def fsync_dir(directory: str) -> None:
    """Make the names in ``directory`` (a rename, a new file) durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def discard(path: str) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass


def append_line(path: str, line: str, mode: int = 0o640) -> None:
    """Append one line with a single ``write()`` on an ``O_APPEND`` fd: concurrent writers never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        os.write(fd, (line if line.endswith("\n") else line + "\n").encode())
    finally:
        os.close(fd)
