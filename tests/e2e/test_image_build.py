"""Build every image template with the docker SDK and run what it made.

For each of testpmd, l2fwd, l3fwd and the sample app (template custom), one at a time:

- build it against a locally made ``debian:bookworm-slim`` (mmdebstrap + docker import);
- check its labels, its non-root user and its entrypoint;
- ``--eal-help`` runs the app (its libraries resolve); without ``/run/dpdk/eal.args`` the
  entrypoint refuses with exit 78;
- smoke run in Docker as the image's user with no capabilities: a hand-written eal.args
  (``--no-huge``, a ``net_null`` port, two lcores on one CPU) in a bind-mounted /run/dpdk,
  until the app forwards; SIGTERM stops it cleanly;
- the same run under plain ``runc`` from a bundle made with ``docker export`` (read-only
  root filesystem, as ``runc spec`` makes it);
- ``dpdk-oci-hook image render`` writes a context that a bare build (the engine's build API,
  as ``docker build DIR``) turns into the same image: labels, user, entrypoint.

The engine is the ``docker_engine`` fixture (an object with ``.socket``); without it the tests
skip, unless ``DPDK_OCI_HOOK_TEST_DOCKER_HOST`` names an engine (``unix:///path/docker.sock``)
for a manual run.  Images are kept in the engine as a cache (tags ``dpdk-oci-hook-test/*``);
containers, bundles and temporary directories are removed.  Cold on 2 busy cores the module
takes 2.5-5 minutes with overlay2 (most of it the shared builder layer, built once) and about
11 minutes with the vfs storage driver, where every layer is a full copy of a ~700 MB builder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hook.admin import images
from hook.admin.images import docker_build
from hook.request import image_requirements
from tests.helpers.base_image import ensure_base_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RELEASE = "bookworm"
DPDK = "22.11"
UID = 10001
READY_TIMEOUT_S = 60
SMOKE_CPU = 1  # both lcores on one CPU, as the hook does for cpus=1


@dataclass(frozen=True)
class Case:
    template: str
    app_dir: str | None
    app: str  # the program the entrypoint runs
    smoke_args: list[str] | None  # None: the image's default CMD
    ready: str  # a regular expression the app prints once it forwards
    memory_mib: int  # -m for the --no-huge smoke run
    labels: dict[str, str]


def _labels(template: str, hugepages: str = "64Mi", queues: str = "1") -> dict[str, str]:
    return {
        "dpdk-oci-hook.template": template,
        "dpdk-oci-hook.dpdk-version": DPDK,
        "dpdk-oci-hook.min-ports": "1",
        "dpdk-oci-hook.min-cpus": "1",
        "dpdk-oci-hook.min-hugepages": hugepages,
        "dpdk-oci-hook.min-queues": queues,
    }


CASES = {
    "testpmd": Case(
        "testpmd", None, "/usr/bin/dpdk-testpmd",
        ["--forward-mode=macswap", "--stats-period=1", "--total-num-mbufs=2048"],
        r"RX-packets: *[1-9]", 64, _labels("testpmd"),
    ),
    "l2fwd": Case("l2fwd", None, "/usr/local/bin/dpdk-l2fwd", ["-p", "0x1", "-T", "1"], r"Total packets received: *[1-9]", 64, _labels("l2fwd")),
    "l3fwd": Case("l3fwd", None, "/usr/local/bin/dpdk-l3fwd", None, r"L3FWD: entering main loop on lcore 1", 256, _labels("l3fwd", "256Mi", "2")),
    "sample-app": Case("custom", "images/sample-app", "/usr/local/bin/dpdk-app", ["-s", "1"], r"sample-app: running rx=[1-9]", 64, _labels("custom")),
}
SMOKE_EAL = "--lcores 0@{cpu},1@{cpu} --main-lcore 0 --file-prefix=smoke{name} --no-huge -m {mem} --no-pci --vdev=net_null0\n"


@dataclass
class Built:
    tag: str
    attrs: dict[str, Any]
    size: int
    seconds: float


@pytest.fixture(scope="module")
def client(request: pytest.FixtureRequest) -> Any:
    """A docker SDK client for the ``docker_engine`` fixture's engine (or the env override)."""
    docker = pytest.importorskip("docker", reason="the Docker SDK (the [images] extra) is not installed")

    base_url = os.environ.get("DPDK_OCI_HOOK_TEST_DOCKER_HOST")
    if not base_url:
        try:
            engine = request.getfixturevalue("docker_engine")
        except pytest.FixtureLookupError:
            pytest.skip("no docker_engine fixture (tests/engines_fixtures.py) and no DPDK_OCI_HOOK_TEST_DOCKER_HOST")
        socket = getattr(engine, "socket", None) or getattr(engine, "sock", None)
        if socket is None:
            pytest.skip(f"docker_engine fixture gave {engine!r} without a .socket")
        base_url = "unix://" + str(socket)
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed: no way to make a base image without a registry")
    return docker.DockerClient(base_url=base_url, timeout=images.BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def built(client: Any, request: pytest.FixtureRequest) -> Iterator[dict[str, Built]]:
    """Images built so far in this module (one build at a time); sizes are reported at the end."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    started = time.monotonic()
    base = ensure_base_image(client, RELEASE)
    base_seconds = time.monotonic() - started
    cache: dict[str, Built] = {}
    yield cache
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None and cache:
        base_size = client.images.get(base).attrs["Size"]
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(f"image sizes (base {base}: {base_size / 1e6:.1f} MB, made or found in {base_seconds:.0f} s):")
            for item in cache.values():
                reporter.write_line(f"  {item.tag:42} {item.size / 1e6:7.1f} MB  built in {item.seconds:5.0f} s (0: cached)")


def build_once(name: str, client: Any, built: dict[str, Built]) -> Built:
    if name not in built:
        case = CASES[name]
        lines: list[str] = []
        result = images.build(
            case.template, f"dpdk-oci-hook-test/{name}:{DPDK}", DPDK, progress=lines.append,
            base_image=f"debian:{RELEASE}-slim", app_dir=REPO / case.app_dir if case.app_dir else None, client=client,
        )
        image = client.images.get(result.tag)
        built[name] = Built(result.tag, image.attrs, result.size, result.seconds)
    return built[name]


def run_to_end(client: Any, image: str, command: list[str], **kwargs: Any) -> tuple[int, str]:
    container = client.containers.run(image, command, detach=True, network_mode="none", **kwargs)
    try:
        status = container.wait(timeout=120)
        return int(status["StatusCode"]), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A stand-in for the hook's /run/dpdk: owned by the image's user, readable on the way."""
    top = Path(tempfile.mkdtemp(prefix="imgtest-"))
    top.chmod(0o755)
    run = top / "run"
    run.mkdir()
    os.chown(run, UID, UID)
    try:
        yield run
    finally:
        shutil.rmtree(top, ignore_errors=True)


def write_eal_args(run_dir: Path, name: str) -> None:
    case = CASES[name]
    (run_dir / "eal.args").write_text(SMOKE_EAL.format(cpu=SMOKE_CPU, name=name.replace("-", ""), mem=case.memory_mib))
    (run_dir / "eal.args").chmod(0o644)


def wait_for(pattern: str, read: Any, alive: Any) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = read()
        if re.search(pattern, text):
            return text
        if not alive():
            break
        time.sleep(0.5)
    raise AssertionError(f"no {pattern!r} in the output:\n{text[-3000:]}")


NAMES = list(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_build_declares_its_needs_and_runs_non_root(name: str, client: Any, built: dict[str, Built]) -> None:
    """The image carries the requirement labels, runs as 10001 through dpdk-entrypoint."""
    item = build_once(name, client, built)
    config = item.attrs["Config"]
    labels = config["Labels"]
    assert {k: v for k, v in labels.items() if k.startswith("dpdk-oci-hook.")} == CASES[name].labels
    assert image_requirements.image_requirements(labels)["dpdk-version"] == DPDK
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/usr/local/bin/dpdk-entrypoint", CASES[name].app]
    assert item.size < 200e6, f"{item.tag} is {item.size / 1e6:.0f} MB"


@pytest.mark.parametrize("name", NAMES)
def test_rendered_context_builds_the_same_image_with_a_bare_build(name: str, client: Any, built: dict[str, Built], tmp_path: Path) -> None:
    """'dpdk-oci-hook image render' needs no engine; the engine builds its output as it is (no build args)."""
    case = CASES[name]
    context = tmp_path / "ctx"
    cli = Path(sys.executable).with_name("dpdk-oci-hook")
    argv = [str(cli), "image", "render", case.template, "--output", str(context)]
    if case.app_dir:
        argv += ["--app", str(REPO / case.app_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    reference = build_once(name, client, built)
    tag = f"dpdk-oci-hook-test/rendered-{name}:{DPDK}"
    lines: list[str] = []
    docker_build._stream_build(client, context, tag, docker_build._build_network(client), False, lines.append)
    try:
        config = client.images.get(tag).attrs["Config"]
        for key in ("Labels", "User", "Entrypoint", "Cmd", "Env"):
            assert config[key] == reference.attrs["Config"][key], key
        code, out = run_to_end(client, tag, ["--eal-help"])
        assert code == 0 and "EAL common options" in out, out
    finally:
        client.images.remove(tag, noprune=True)


@pytest.mark.parametrize("name", NAMES)
def test_app_help_runs_and_no_hook_is_refused(name: str, client: Any, built: dict[str, Built]) -> None:
    """--eal-help runs the app itself; without eal.args the entrypoint explains and exits 78."""
    tag = build_once(name, client, built).tag
    code, out = run_to_end(client, tag, ["--eal-help"])
    assert code == 0, out
    assert "EAL common options" in out
    code, out = run_to_end(client, tag, ["--version"])
    assert code == 0 and "dpdk: Debian package 22.11." in out, out
    code, out = run_to_end(client, tag, [])
    assert code == 78, out
    assert "run this container with the dpdk-oci-hook annotations" in out


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_in_docker_without_privileges(name: str, client: Any, built: dict[str, Built], run_dir: Path) -> None:
    """With eal.args in /run/dpdk the app initialises EAL (IOVA as VA, no capabilities) and forwards."""
    tag = build_once(name, client, built).tag
    write_eal_args(run_dir, name)
    container = client.containers.run(
        tag, CASES[name].smoke_args, detach=True, network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"],
        volumes={str(run_dir): {"bind": "/run/dpdk", "mode": "rw"}}, name=f"imgtest-{name}-{uuid.uuid4().hex[:8]}",
    )
    try:
        def alive() -> bool:
            container.reload()
            return bool(container.status in ("created", "running"))

        wait_for(CASES[name].ready, lambda: container.logs().decode(errors="replace"), alive)
        container.stop(timeout=15)
        status = container.wait(timeout=30)
        out = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert "Selected IOVA mode 'VA'" in out
    assert status["StatusCode"] == 0, out[-2000:]
    assert (run_dir / "dpdk").is_dir(), "a non-root EAL keeps its runtime files in /run/dpdk"


def export_rootfs(client: Any, tag: str, rootfs: Path) -> None:
    container = client.containers.create(tag)
    try:
        rootfs.mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-x", "--numeric-owner", "-C", str(rootfs)], stdin=subprocess.PIPE)
        assert tar.stdin is not None
        for chunk in container.export():
            tar.stdin.write(chunk)
        tar.stdin.close()
        assert tar.wait(timeout=120) == 0
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_from_a_runc_bundle(name: str, client: Any, built: dict[str, Built], run_dir: Path) -> None:
    """``docker export`` + ``runc spec`` (read-only rootfs): the image's entrypoint and CMD run as they are."""
    runc = shutil.which("runc")
    if os.geteuid() != 0 or runc is None:
        pytest.skip("needs root and runc")
    item = build_once(name, client, built)
    write_eal_args(run_dir, name)
    top = Path(tempfile.mkdtemp(prefix="imgbundle-"))
    cid = f"imgtest-{name}-{uuid.uuid4().hex[:8]}"
    root = top / "runc-root"
    proc: subprocess.Popen[bytes] | None = None
    try:
        export_rootfs(client, item.tag, top / "rootfs")
        subprocess.run([runc, "spec", "--bundle", str(top)], check=True, timeout=30)
        spec = json.loads((top / "config.json").read_text())
        image_config = item.attrs["Config"]
        smoke_args = CASES[name].smoke_args
        args: list[str] = smoke_args if smoke_args is not None else list(image_config.get("Cmd") or [])
        spec["process"].update(
            args=list(image_config["Entrypoint"]) + args,
            env=list(image_config.get("Env") or []),
            user={"uid": UID, "gid": UID},
            terminal=False,
            cwd="/",
        )
        assert spec["root"]["readonly"] is True
        spec["mounts"].append({"destination": "/run/dpdk", "type": "bind", "source": str(run_dir), "options": ["rbind", "rw"]})
        (top / "config.json").write_text(json.dumps(spec))
        log = top / "out.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [runc, "--root", str(root), "run", "--bundle", str(top), cid], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        running = proc
        wait_for(CASES[name].ready, lambda: log.read_text(errors="replace"), lambda: running.poll() is None)
        subprocess.run([runc, "--root", str(root), "kill", cid, "TERM"], check=False, timeout=30)
        code = proc.wait(timeout=30)
        text = log.read_text(errors="replace")
        assert "Selected IOVA mode 'VA'" in text
        assert code == 0, text[-2000:]
    finally:
        if proc is not None and proc.poll() is None:
            subprocess.run([runc, "--root", str(root), "kill", cid, "KILL"], check=False, timeout=30)
            proc.wait(timeout=30)
        subprocess.run([runc, "--root", str(root), "delete", "--force", cid], capture_output=True, check=False, timeout=30)
        shutil.rmtree(top, ignore_errors=True)


# --- through the hook, over OVS-DPDK --------------------------------------------------------


def container_logs(engine: Any, cid: str) -> str:
    """The tail of both of a container's streams: DPDK's EAL writes its errors to stderr."""
    logs = engine.docker("logs", cid, check=False)
    return f"stdout:\n{logs.stdout[-3000:]}\nstderr:\n{logs.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_image_forwards_through_the_hook(name: str, client: Any, built: dict[str, Built], request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    """Each image, run by Docker with runtime dpdk and annotations, forwards packets over OVS-DPDK; nothing is left after.

    A kernel-only container (not a poller) pings the bridge's broadcast address; the app (the only
    busy poller beside the switch's) sends packets back out of its vhost-user port, which the
    switch counts as received from it.
    """
    from hook.admin.runc_bundle import make_bundle
    from hook.admin.runc_bundle import run_to_end as runc_run_to_end

    engine = request.getfixturevalue("docker_engine")
    ovs = request.getfixturevalue("ovs")
    hook_env = engine.hook_env
    item = build_once(name, client, built)
    need = image_requirements.image_requirements(item.attrs["Config"]["Labels"])
    p = "dpdk-oci-hook/"
    annotations = [f"{p}vhost-user=[{{\"queues\": {max(need['min-queues'], 1)}}}]", f"{p}cpus=1",
                   f"{p}hugepages={max(need['min-hugepages-mib'], 64)}Mi"]
    args = [arg for a in annotations for arg in ("--annotation", a)]
    started = engine.docker("run", "-d", "--runtime", "dpdk", "--network", "none", *args, item.tag, check=False)
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    deadline = time.monotonic() + 10
    while not hook_env.reserved_ports(cid) and time.monotonic() < deadline:  # the hook logs the names it made
        time.sleep(0.1)
    port = (hook_env.reserved_ports(cid) or ["(no port reserved)"])[0]
    try:
        deadline = time.monotonic() + 30
        while ovs.vsctl("--if-exists", "get", "Interface", port, "link_state", wait=False).strip() != "up":
            # an app that exits (e.g. short of memory) never brings its link up: say so at once
            running = engine.docker("inspect", "-f", "{{.State.Running}}", cid, check=False).stdout.strip()
            assert running == "true", f"the app exited before its link came up\n{container_logs(engine, cid)}"
            assert time.monotonic() < deadline, f"link of {port} not up within 30 s\n{container_logs(engine, cid)}"
            time.sleep(0.3)
        pinger = make_bundle(str(tmp_path / "pinger"), ["/bin/sh", "-c", "ping -b -c 40 -i 0.05 -W 1 10.77.0.255; true"],
                             {p + "kernel-ports": '[{"addresses": ["10.77.0.1/24"]}]'}, hook_env.config_path, capabilities=("CAP_NET_RAW",))
        proc = runc_run_to_end(str(tmp_path / "runc"), pinger, f"pinger-{name}")
        assert proc.returncode == 0, proc.stderr
        stats = subprocess.run(["ovs-ofctl", "dump-ports", f"unix:{ovs.rundir}/br-img.mgmt", port], capture_output=True, text=True, timeout=10)
        match = re.search(r"rx pkts=(\d+)", stats.stdout)
        assert match and int(match.group(1)) > 0, stats.stdout + stats.stderr + container_logs(engine, cid)
    finally:
        engine.docker("rm", "-f", cid, check=False)
    deadline = time.monotonic() + 30
    while hook_env.ledger() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert hook_env.ledger() == {} and hook_env.owner_records() == []
    owned = ovs.vsctl("--bare", "--columns=name", "find", "Interface", 'external_ids:dpdk-oci-hook-owner!=""', wait=False)
    assert owned.split() == []
