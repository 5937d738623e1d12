"""Each engine reaches the hook: podman through hooks.d, Docker 26 and ctr through the wrapper.

These prove the plumbing only, not the DPDK work: the hook is pointed at a config file that
does not exist, so an annotated container fails in createRuntime with the hook's own message,
passed back up through runc and the engine -- which shows the hook ran, from its venv, with
the env we gave it.  The same container without our annotation runs normally.  (The end-to-end
tests with OVS-DPDK and testpmd come with the core hook.)
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook.admin import engines
from hook.entry import MAIN_SCRIPT
from tests.helpers.engines_fixtures import (
    PODMAN_ULIMITS,
    HookInstall,
    Podman,
    Rootfs,
    private_containerd,
    require_ctr,
)

IMAGE = "localhost/dpdkhook-busybox:test"
ANNOTATION = "dpdk-oci-hook/cpus=1"


def _hook_failed(stderr: str, config: Path) -> bool:
    return f"dpdk-oci-hook: config {config}: No such file or directory" in stderr


def _actions(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [f"{r['command']}:{r['action']}" for r in map(json.loads, log.read_text().splitlines()) if r["command"] in ("create", "run")]


SPY = """#!/bin/sh
# Records how the engine called the hook, then runs the real hook with the same stdin.
state=$(cat)
printf '%s' "$state" | "{python}" "$@" 2>"{dir}/stderr.$$"
rc=$?
printf '%s\\t%s\\t%s\\t%s\\n' "$*" "$rc" "$state" "$(tr '\\n' ' ' <"{dir}/stderr.$$")" >>"{dir}/calls.tsv"
cat "{dir}/stderr.$$" >&2
rm -f "{dir}/stderr.$$"
exit $rc
"""


def test_podman_runs_our_hooks_d_files(podman: Podman, busybox_rootfs: Rootfs, hook_install: HookInstall) -> None:
    """podman matches our rendered hooks.d files on our annotations only; both stages reach the hook.

    The files are rendered with a spy in front of the venv interpreter (it records the call,
    then runs the real hook).  createRuntime goes into the OCI config and runc runs it: the
    annotated container fails in the hook.  poststop podman keeps for itself and runs after
    the container is deleted (libpod's post-delete hooks), from its cleanup process, whose
    output nobody sees: the spy's record shows it ran.
    """
    missing = podman.top / "absent.hcl"
    hooks_dir = podman.top / "hooks.d"
    spy = podman.top / "hook-spy"
    spy.write_text(SPY.format(python=hook_install.python, dir=podman.top))
    spy.chmod(0o755)
    for name in engines.HOOK_FILES.values():
        text = engines.render_hook((hook_install.templates / name).read_text(), str(spy), str(missing))
        (hooks_dir / name).write_text(text)
    imported = podman.run("import", str(busybox_rootfs.tarball), IMAGE)
    assert imported.returncode == 0, imported.stderr
    run = ["run", "--rm", "--network", "none", *PODMAN_ULIMITS]

    plain = podman.run(*run, IMAGE, "/bin/echo", "hi")
    assert (plain.returncode, plain.stdout) == (0, "hi\n"), plain.stderr
    other = podman.run(*run, "--annotation", "io.example/dpdk-oci-hook/cpus=1", IMAGE, "/bin/true")
    assert other.returncode == 0, other.stderr
    assert not (podman.top / "calls.tsv").exists()

    ours = podman.run(*run, "--annotation", ANNOTATION, IMAGE, "/bin/echo", "hi")
    assert ours.returncode != 0 and ours.stdout == ""
    assert _hook_failed(ours.stderr, missing), ours.stderr

    (hooks_dir / engines.HOOK_FILES["createRuntime"]).unlink()
    teardown = podman.run(*run, "--annotation", ANNOTATION, IMAGE, "/bin/echo", "hi")
    assert (teardown.returncode, teardown.stdout) == (0, "hi\n"), teardown.stderr
    deadline = time.monotonic() + 30  # the cleanup process may finish after podman run returns
    calls: list[list[str]] = []
    while not any(c[0].endswith("poststop") for c in calls) and time.monotonic() < deadline:
        if (podman.top / "calls.tsv").exists():
            calls = [line.split("\t") for line in (podman.top / "calls.tsv").read_text().splitlines()]
        time.sleep(0.1)
    # the failed start ran createRuntime only (podman runs no post-delete hook for a container
    # that never started); the clean run of the second container ran poststop
    assert [c[0] for c in calls] == [f"-I {MAIN_SCRIPT} createRuntime", f"-I {MAIN_SCRIPT} poststop"], calls
    for args, rc, state, stderr in calls:
        assert rc == "3", (args, stderr)  # ConfigError: the hook itself ran and found no config
        assert json.loads(state)["annotations"]["dpdk-oci-hook/cpus"] == "1"
        assert f"config {missing}: No such file or directory" in stderr


@pytest.fixture
def rootfs_copy(busybox_rootfs: Rootfs, tmp_path: Path) -> Path:
    """A rootfs ctr may write into (it adds /run)."""
    target = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs.dir, target, symlinks=True)
    return target


def test_ctr_run_with_the_wrapper_as_runc_binary(hook_install: HookInstall, rootfs_copy: Path, tmp_path: Path) -> None:
    """``ctr run --runc-binary <wrapper>``: plain containers run, annotated ones get the hook."""
    require_ctr()
    missing, log = tmp_path / "absent.hcl", tmp_path / "wrapper.log"
    env = {"DPDK_OCI_RUNTIME_DEBUG_LOG": str(log), "DPDK_OCI_HOOK_CONFIG": str(missing), "DPDK_OCI_RUNTIME": "/usr/sbin/runc"}
    with private_containerd(env=env) as ctd:
        base = ["run", "--rm", "--runc-binary", hook_install.shim]
        plain = ctd.ctr(*base, "--rootfs", str(rootfs_copy), f"plain-{uuid.uuid4().hex[:8]}", "/bin/echo", "hi")
        assert (plain.returncode, plain.stdout) == (0, "hi\n"), plain.stderr
        ours = ctd.ctr(*base, "--annotation", ANNOTATION, "--rootfs", str(rootfs_copy), f"ours-{uuid.uuid4().hex[:8]}", "/bin/echo", "hi")
        assert ours.returncode != 0 and ours.stdout == ""
        assert _hook_failed(ours.stderr, missing), ours.stderr
    assert _actions(log) == ["create:not-ours", "create:injected createRuntime,poststop"]


@pytest.fixture(scope="module")
def docker(docker_binaries: object, hook_install: HookInstall, busybox_rootfs: Rootfs) -> Iterator[tuple[object, Path]]:
    """A private Docker >= 24 with runtime dpdk = the wrapper (module-scoped: one dockerd)."""
    import tempfile

    from tests.helpers.docker_engine import DockerBinaries, DockerEngine

    assert isinstance(docker_binaries, DockerBinaries)
    top = Path(tempfile.mkdtemp(prefix="dpdkhook-dk-"))
    env = {"DPDK_OCI_RUNTIME_DEBUG_LOG": str(top / "wrapper.log"), "DPDK_OCI_HOOK_CONFIG": str(top / "absent.hcl"),
           "DPDK_OCI_RUNTIME": "/usr/sbin/runc"}
    engine = DockerEngine(docker_binaries, {"dpdk": hook_install.shim}, env=env)
    try:
        engine.start()
        engine.import_image(busybox_rootfs.tarball, IMAGE)
        yield engine, top
    finally:
        try:
            if engine.proc is not None and engine.proc.poll() is None:
                for cid in engine.docker("ps", "-aq", check=False).stdout.split():
                    engine.docker("rm", "-f", cid, check=False)
                engine.docker("rmi", "-f", IMAGE, check=False)
        finally:
            engine.stop()
            shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
def test_docker_run_with_runtime_dpdk_and_annotation(docker: tuple[object, Path]) -> None:
    """``docker run --runtime dpdk --annotation dpdk-oci-hook/...`` reaches the hook; without it, nothing changes."""
    from tests.helpers.docker_engine import DockerEngine

    engine, top = docker
    assert isinstance(engine, DockerEngine)
    assert engine.binaries.version >= (24, 0)
    run = ["run", "--rm", "--network", "none", "--runtime", "dpdk"]
    plain = engine.docker(*run, IMAGE, "/bin/echo", "hi", check=False)
    assert (plain.returncode, plain.stdout) == (0, "hi\n"), plain.stderr
    ours = engine.docker(*run, "--annotation", ANNOTATION, IMAGE, "/bin/echo", "hi", check=False)
    assert ours.returncode != 0 and ours.stdout == ""
    assert _hook_failed(ours.stderr, top / "absent.hcl"), ours.stderr
    assert _actions(top / "wrapper.log") == ["create:not-ours", "create:injected createRuntime,poststop,numa-syscalls"]
    assert engine.docker("ps", "-aq").stdout.strip() == ""
