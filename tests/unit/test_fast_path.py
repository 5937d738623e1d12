"""The hook's fast path: which containers are certainly not ours, decided before heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hook.stage.run import _bundle_path, _not_ours

ROOT = Path(__file__).resolve().parents[2]
# what a bundle's config.json holds when the hook is installed under a path with our name
HOOKS = {"createRuntime": [{"path": "/opt/dpdk-oci-hook/venv/bin/python3", "args": ["python3", "-I", "-m", "hook", "createRuntime"]}]}


def bundle(tmp_path: Path, config: object) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return str(tmp_path)


def state(**fields: object) -> bytes:
    return json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, **fields}).encode()


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, True),
        (None, True),
        ({"org.example/x": "1"}, True),
        ({"dpdk-oci-hook/cpus": "1"}, False),
        ({"dpdk-oci-hook/cpus": "1", "io.kubernetes.cri.container-type": "sandbox"}, True),
        ({"org.example/path": "/opt/dpdk-oci-hook/x"}, True),  # our bytes in a value, not a key
        (["dpdk-oci-hook/cpus"], False),  # not an object: the full path reports it
    ],
)
def test_annotations_in_the_state_decide(annotations: object, expected: bool, tmp_path: Path) -> None:
    assert _not_ours(state(bundle=str(tmp_path), annotations=annotations)) is expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"ociVersion": "1.0.2"}, True),
        ({"ociVersion": "1.0.2", "hooks": HOOKS}, True),  # our name in the hook's path only
        ({"ociVersion": "1.0.2", "hooks": HOOKS, "annotations": {"org.example/x": "1"}}, True),
        ({"ociVersion": "1.0.2", "hooks": HOOKS, "annotations": {"dpdk-oci-hook/cpus": "1"}}, False),
        ('{"dpdk-oci-hook/": ', False),  # unreadable: the full path reports it
    ],
)
def test_without_annotations_in_the_state_the_bundle_decides(config: object, expected: bool, tmp_path: Path) -> None:
    """runc leaves "annotations" out of the state when the container has none."""
    assert _not_ours(state(bundle=bundle(tmp_path, config))) is expected


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', state(), state(bundle="/nonexistent/bundle")])
def test_what_cannot_be_read_goes_to_the_full_path(raw: bytes) -> None:
    assert _not_ours(raw) is False


@pytest.mark.parametrize("in_state", [True, False])
def test_a_container_not_ours_imports_neither_json_nor_more_of_the_hook(in_state: bool, tmp_path: Path) -> None:
    """The point of the fast path: no lifecycle, config or logging import, not even json (~17 ms).

    Our name in the hook's own path, in the bundle path and inside a foreign key does not count.
    """
    path = bundle(tmp_path / "dpdk-oci-hook", {"ociVersion": "1.0.2", "hooks": HOOKS})
    raw = state(bundle=path, annotations={"io.example/dpdk-oci-hook/x": "1"}) if in_state else state(bundle=path)
    code = (
        "import sys; from hook.stage.run import run_stage; rc = run_stage('createRuntime', sys.stdin.buffer.read()); "
        "print(rc, 'json' in sys.modules, sorted(m for m in sys.modules if m.startswith('hook')))"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], input=raw, capture_output=True, cwd=ROOT, timeout=60, check=True)
    assert proc.stdout.decode().strip() == "0 False ['hook', 'hook.constants', 'hook.stage', 'hook.stage.run']"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"c1","bundle":"/run/b/c1","pid":1}',
        b'{"id": "c1", "bundle" :  "/run/b/c1"}',
        b'{"bundle":"/run/dpdk-oci-hook/x"}',
        b'{"id":"bundle","bundle":"/b"}',  # "bundle" as a value first
        b'{"id":"x\\"bundle\\":\\"/evil\\"","bundle":"/b"}',  # a key-like text inside a string
        '{"id":"c1","bundle":"/run/bündel"}'.encode(),
    ],
)
def test_bundle_path_finds_what_json_finds(raw: bytes) -> None:
    assert _bundle_path(raw) == json.loads(raw)["bundle"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"c1"}',
        b'{"bundle":"/run/b\\u0031"}',  # escapes: left to json
        b'{"bundle":"/run/b\\\\x"}',
        b'{"bundle":null}',
        b'{"bundle":"/unterminated',
        b'{"bundle":"\xff\xfe"}',
    ],
)
def test_bundle_path_leaves_anything_less_plain_to_json(raw: bytes) -> None:
    assert _bundle_path(raw) is None


def test_a_bundle_that_cannot_be_read_goes_to_the_full_path(tmp_path: Path) -> None:
    assert _not_ours(state(bundle=str(tmp_path / "gone"))) is False
