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
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # a write on an fd: say which file
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    if durable:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def append_line(path: str, line: str, mode: int = 0o640) -> None:
    """Append one line with a single ``write()`` on an ``O_APPEND`` fd: concurrent writers never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        os.write(fd, (line if line.endswith("\n") else line + "\n").encode())
    finally:
        os.close(fd)
