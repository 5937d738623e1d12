"""``dpdk-oci-hook agent``: a resident process that runs hook stages with everything imported.

The agent listens on a unix socket (root only; peers must be uid 0), imports the whole hot
path once, and forks one child per stage: the child runs exactly what the hook runs
in-process (:func:`hook.stage.run.run_stage`), with the caller's config and environment,
takes the same ledger lock as every other hook, and reports its exit status and message.
So a stage through the agent and a stage in-process are the same code, serialised by the
same lock; the agent keeps no state of its own and can die at any time.
"""

from __future__ import annotations

import gc
import io
import os
import signal
import socket
import struct
import sys
import time

from hook.stage.agent_client import MAX_REPLY, PASS_ENV, decode_request, socket_path

MAX_REQUEST = (1 << 20) + 65536
ACCEPT_TIMEOUT_S = 1.0


def _preload() -> None:
    """Import what a stage uses, so the forked children do not."""
    import hook.config  # noqa: F401
    import hook.decide.allocate  # noqa: F401
    import hook.decide.plan  # noqa: F401
    import hook.host.cgroups  # noqa: F401
    import hook.host.hugepages  # noqa: F401
    import hook.host.ledger  # noqa: F401
    import hook.host.mounts
    import hook.host.topology  # noqa: F401
    import hook.request.annotations  # noqa: F401
    import hook.stage.eventlog  # noqa: F401
    import hook.stage.lifecycle  # noqa: F401
    import hook.stage.oci  # noqa: F401
    import hook.stage.run  # noqa: F401
    import hook.switch.factory  # noqa: F401
    import hook.switch.ovs  # noqa: F401
    import hook.switch.static  # noqa: F401

    hook.host.mounts._libc()  # dlopen before any fork
    # What is imported now is shared with every child: kept out of the cyclic collector, a
    # child's collection (they disable it, see run_stage) never copies those pages.
    gc.collect()
    gc.freeze()


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _read_request(conn: socket.socket) -> bytes:
    conn.settimeout(5.0)
    head = b""
    while len(head) < 4:
        chunk = conn.recv(4 - len(head))
        if not chunk:
            raise ValueError("short request")
        head += chunk
    size = int.from_bytes(head, "big")
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = b""
    while len(body) < size:
        chunk = conn.recv(min(65536, size - len(body)))
        if not chunk:
            raise ValueError("short request")
        body += chunk
    return body


def _serve_child(conn: socket.socket) -> int:
    """In the forked child: run the stage, answer "STATUS\\nMESSAGE"."""
    status, message = 1, ""
    try:
        stage, environ, raw = decode_request(_read_request(conn))
        for name in PASS_ENV:
            os.environ.pop(name, None)
        os.environ.update(environ)
        from hook.constants import STAGES
        from hook.stage.run import run_stage

        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        captured = io.StringIO()
        sys.stderr = captured
        try:
            os.chdir("/")
            status = run_stage(stage, raw)
        finally:
            sys.stderr = sys.__stderr__
        message = captured.getvalue()
    except Exception as exc:  # a bug or a bad request: report it rather than hang the hook
        status, message = 1, f"dpdk-oci-hook: agent: {type(exc).__name__}: {exc}\n"
    sys.stdout.write(f"stage {stage if 'stage' in locals() else '?'}: exit {status} (child {os.getpid()})\n")
    sys.stdout.flush()
    reply = f"{status}\n{message}".encode()[:MAX_REPLY]
    try:
        conn.settimeout(5.0)
        conn.sendall(reply)
    except OSError:
        pass
    return status


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(path: str | None = None) -> int:
    """Listen until SIGTERM/SIGINT; one forked child per stage."""
    path = path or socket_path()
    _preload()
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(64)
    server.settimeout(ACCEPT_TIMEOUT_S)
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.stdout.write(f"dpdk-oci-hook agent: listening on {path} (pid {os.getpid()})\n")
    sys.stdout.flush()
    try:
        while not stop:
            _reap()
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            try:
                if _peer_uid(conn) != 0:
                    conn.close()
                    continue
                child = os.fork()
            except OSError:
                conn.close()
                continue
            if child == 0:  # pragma: no cover - runs in the forked child
                code = 1
                try:
                    server.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    code = _serve_child(conn)
                finally:
                    os._exit(0 if code == 0 else 1)
            conn.close()
    finally:
        server.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # let running stages finish: they hold the lock
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.05)
            except ChildProcessError:
                break
    return 0
