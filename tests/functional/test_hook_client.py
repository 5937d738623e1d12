"""The native hook client: decides only "certainly not ours", speaks the agent's protocol, else
runs the Python hook on the very same state bytes.

Real processes: the client compiled from the repository's source; a stand-in for the Python
hook (a shell that records its argv and stdin); a stand-in agent on a private socket that
records the request and answers as the agent does.  The real agent is in test_agent.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook.stage.agent_client import decode_request

NO_PYTHON = "/nonexistent/python3"  # the fallback would fail loudly: proves it never ran


def run(client: str, argv: list[str], state: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_AGENT_SOCKET": "/nonexistent/agent.sock"}
    return subprocess.run([client, *argv], input=state, env={**base, **(env or {})}, capture_output=True, timeout=60, cwd="/tmp")


def state(bundle: Path, annotations: dict[str, str] | None) -> bytes:
    body: dict[str, object] = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": str(bundle)}
    if annotations is not None:
        body["annotations"] = annotations
    return json.dumps(body).encode()


def bundle_with(tmp_path: Path, annotations: dict[str, str]) -> Path:
    path = tmp_path / "bundle"
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations}))
    return path


def recorder(tmp_path: Path) -> list[str]:
    """argv for the client's fallback: a shell that saves its stdin and arguments, then exits 7."""
    script = 'cat > "$0.stdin"; printf "%s\\n" "$@" > "$0.args"; exit 7'
    return ["/bin/sh", "-c", script, str(tmp_path / "fallback"), "createRuntime"]


def test_not_ours_exits_at_once_without_python(tmp_path: Path, hook_client: str) -> None:
    """Foreign annotations in the state, or (runc) none in the state and none of ours in config.json."""
    argv = [NO_PYTHON, "-I", "/x/hook/__main__.py", "createRuntime"]
    foreign = run(hook_client, argv, state(tmp_path, {"org.example/a": "dpdk-oci-hook"}))
    assert (foreign.returncode, foreign.stderr) == (0, b"")
    plain = bundle_with(tmp_path, {"org.example/a": "1"})
    from_config = run(hook_client, argv, state(plain, None))
    assert (from_config.returncode, from_config.stderr) == (0, b"")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "c1", "annotations": {"dpdk-oci-hook/cpus": "1"}}',  # ours in the state
        b'{"id": "c1", "bundle": "/nonexistent"}',  # no annotations and no config.json to read
        b'{"id": "c1", "bundle": "/a\\"b"}',  # an escaped bundle path: not decided by bytes
        b"not json at all",
    ],
)
def test_anything_not_plainly_foreign_goes_to_the_python_hook(tmp_path: Path, hook_client: str, raw: bytes) -> None:
    proc = run(hook_client, recorder(tmp_path), raw)
    assert proc.returncode == 7, proc.stderr
    assert (tmp_path / "fallback.stdin").read_bytes() == raw


def test_ours_in_config_json_goes_to_the_python_hook_with_the_same_stdin_and_argv(tmp_path: Path, hook_client: str) -> None:
    """The state is handed on byte for byte, also past a pipe's buffer (a 300 KiB annotation)."""
    path = bundle_with(tmp_path, {"dpdk-oci-hook/cpus": "1"})
    raw = state(path, None)[:-1] + b', "pad": "' + b"x" * 300_000 + b'"}'
    proc = run(hook_client, recorder(tmp_path), raw)
    assert proc.returncode == 7, proc.stderr
    assert (tmp_path / "fallback.stdin").read_bytes() == raw
    assert (tmp_path / "fallback.args").read_text().split() == ["createRuntime"]


def test_a_python_that_cannot_start_is_one_clear_line(tmp_path: Path, hook_client: str) -> None:
    proc = run(hook_client, [NO_PYTHON, "-I", "/x/hook/__main__.py", "createRuntime"], b'{"annotations": {"dpdk-oci-hook/cpus": "1"}}')
    assert proc.returncode == 1
    assert proc.stderr == f"dpdk-oci-hook: cannot run {NO_PYTHON}: No such file or directory\n".encode()


class FakeAgent:
    """Accepts one connection at a time, records the request, answers ``reply`` (None: hang up)."""

    def __init__(self, path: Path, reply: bytes | None) -> None:
        self.path, self.reply = path, reply
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.requests.append(data)
                if self.reply is not None:
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def agent_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    yield path
    path.unlink(missing_ok=True)


def test_the_agent_gets_the_stage_env_and_state_and_its_answer_is_final(tmp_path: Path, hook_client: str, agent_path: Path) -> None:
    agent = FakeAgent(agent_path, b"6\ndpdk-oci-hook: not enough free cores\n")
    try:
        raw = b'{"id": "c1", "annotations": {"dpdk-oci-hook/cpus": "64"}}'
        env = {"DPDK_OCI_HOOK_AGENT_SOCKET": str(agent_path), "DPDK_OCI_HOOK_CONFIG": "/etc/x.hcl", "DPDK_OCI_HOOK_FAULT": "", "OTHER": "1"}
        proc = run(hook_client, recorder(tmp_path), raw, env)
    finally:
        agent.close()
    assert proc.returncode == 6
    assert proc.stderr == b"dpdk-oci-hook: not enough free cores\n"
    assert not (tmp_path / "fallback.stdin").exists()  # the agent's answer is final
    (request,) = agent.requests
    assert int.from_bytes(request[:4], "big") == len(request) - 4
    assert decode_request(request[4:]) == ("createRuntime", {"DPDK_OCI_HOOK_CONFIG": "/etc/x.hcl"}, raw)


def test_an_agent_that_hangs_up_fails_the_stage_and_python_does_not_run_it_twice(tmp_path: Path, hook_client: str, agent_path: Path) -> None:
    agent = FakeAgent(agent_path, None)
    try:
        proc = run(hook_client, recorder(tmp_path), b'{"annotations": {"dpdk-oci-hook/cpus": "1"}}', {"DPDK_OCI_HOOK_AGENT_SOCKET": str(agent_path)})
    finally:
        agent.close()
    assert proc.returncode == 1
    assert b"ended the stage without an answer" in proc.stderr
    assert not (tmp_path / "fallback.stdin").exists()


def test_a_stale_socket_file_means_the_python_hook(tmp_path: Path, hook_client: str, agent_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(agent_path))  # bound, never listening, then closed: connect is refused
    proc = run(hook_client, recorder(tmp_path), b'{"annotations": {"dpdk-oci-hook/cpus": "1"}}', {"DPDK_OCI_HOOK_AGENT_SOCKET": str(agent_path)})
    assert proc.returncode == 7
    assert os.path.exists(tmp_path / "fallback.stdin")
