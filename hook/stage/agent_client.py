"""Hand a stage to the resident agent when one runs; the caller falls back to doing it itself.

The agent (``dpdk-oci-hook agent``) has every module imported already and forks a child per
stage, so a container start pays for this small client instead of ~40 ms of imports.  The
agent is never a reason a container cannot start or be cleaned up: when its socket is
missing or refuses the connection, :func:`run` returns None and the hook runs the stage
in-process, exactly as without an agent.  Once the agent accepted a stage its answer is
final (a second attempt could double a reservation).

Only ``os``, ``sys`` and ``_socket`` are imported (``socket`` would add its enum and
selectors imports, ~5 ms per hook start).
"""

from __future__ import annotations

import os
import sys

SOCKET_ENV = "DPDK_OCI_HOOK_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/dpdk-oci-hook-agent.sock"
# handed to the agent's child so it runs as this hook would (config, tests' fault points)
PASS_ENV = ("DPDK_OCI_HOOK_CONFIG", "DPDK_OCI_HOOK_CACHE_DIR", "DPDK_OCI_HOOK_FAULT", "DPDK_OCI_HOOK_BUDGET_S")
MAX_REPLY = 1 << 20
WAIT_S = 28.0  # inside the runtime's 30 s hook timeout; the agent's child keeps its own budget


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def encode_request(stage: str, raw: bytes, environ: dict[str, str]) -> bytes:
    """stage, then NAME=VALUE lines, a blank line, then the state bytes; length-prefixed."""
    head = stage + "\n" + "".join(f"{k}={environ[k]}\n" for k in PASS_ENV if environ.get(k)) + "\n"
    body = head.encode() + raw
    return len(body).to_bytes(4, "big") + body


def decode_request(body: bytes) -> tuple[str, dict[str, str], bytes]:
    """The inverse of :func:`encode_request` (without the length prefix)."""
    head, sep, raw = body.partition(b"\n\n")
    if not sep:
        raise ValueError("no end of header")
    lines = head.decode().split("\n")
    environ = {}
    for line in lines[1:]:
        name, eq, value = line.partition("=")
        if eq and name in PASS_ENV:
            environ[name] = value
    return lines[0], environ, raw


def _recv_all(sock: object, limit: int) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        chunk = sock.recv(65536)  # type: ignore[attr-defined]
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def run(stage: str, raw: bytes) -> int | None:
    """The stage's exit status as the agent's child reports it; None: no agent, do it here."""
    path = socket_path()
    if not os.path.exists(path):
        return None
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(WAIT_S)
        try:
            sock.connect(path)
        except OSError:
            return None  # no agent listening: not an error
        sock.sendall(encode_request(stage, raw, dict(os.environ)))
        sock.shutdown(_socket.SHUT_WR)
        reply = _recv_all(sock, MAX_REPLY)
    except OSError as exc:
        sys.stderr.write(f"dpdk-oci-hook: the agent at {path} failed mid-stage ({exc.strerror or exc}); see its log\n")
        return 1
    finally:
        sock.close()
    status, sep, message = reply.partition(b"\n")
    if not sep or not status.strip().lstrip(b"-").isdigit():
        sys.stderr.write(f"dpdk-oci-hook: the agent at {path} ended the stage without an answer; see its log\n")
        return 1
    if message:
        sys.stderr.write(message.decode(errors="replace"))
    return int(status)
