"""Building a rendered template with Docker, through the Docker SDK.

The SDK (the ``docker`` Python package) is the optional extra ``[images]``: nothing else in
the project needs it, so it is imported here only, inside the functions that talk to an
engine, and its absence is an :class:`EngineError` that says how to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hook.admin.images.templates import CUSTOM, DEFAULT_BASE_IMAGE, dockerfile_args, get_template, render
from hook.errors import EngineError

ENGINE = "docker"
SDK_REQUIREMENT = "docker>=7"  # the [images] extra of pyproject.toml
BUILD_TIMEOUT_S = 1800
TAIL_LINES = 15

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NONZERO_RE = re.compile(r"^The command .* returned a non-zero code: (\d+)$", re.DOTALL)

Progress = Callable[[str], None]


@dataclass
class BuildResult:
    """A finished build."""

    template: str
    tag: str
    image_id: str
    size: int  # bytes, as the engine reports it
    labels: dict[str, str]
    seconds: float
    context: str | None  # None when the context was a temporary directory (removed)
    steps: list[str] = field(default_factory=list)


def docker_sdk() -> ModuleType:
    """The Docker SDK with its ``errors`` module loaded, or an EngineError saying how to install it."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:
        pip = Path(sys.prefix) / "bin" / "pip"
        raise EngineError(
            engine=ENGINE,
            reason=f"building images needs the Docker SDK for Python, which is not installed ({exc}): "
            f"install the project with its images extra (install.sh does), or run: {pip} install '{SDK_REQUIREMENT}'",
        ) from exc
    return docker


def connect(base_url: str | None = None, timeout: int = BUILD_TIMEOUT_S) -> Any:
    """A docker SDK client that answers, or EngineError."""
    docker = docker_sdk()
    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(engine=ENGINE, reason=f"no engine reachable at {where} ({exc}); start dockerd or set DOCKER_HOST") from exc
    return client


def _build_network(client: Any) -> str | None:
    """The engine's bridge when it has one; else the host network (dockerd --bridge=none)."""
    names = {net.get("Name") for net in client.api.networks()}
    return None if "bridge" in names else "host"


def _stream_build(client: Any, context: Path, tag: str, network: str | None, nocache: bool, progress: Progress) -> tuple[str, list[str]]:
    """Run the build, feeding ``progress``; return (image id, step lines) or raise EngineError."""
    docker = docker_sdk()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    steps: list[str] = []
    image_id = ""
    try:
        stream = client.api.build(
            path=str(context), tag=tag, rm=True, forcerm=True, pull=False, nocache=nocache, decode=True, network_mode=network
        )
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail") or {}
                error = _ANSI_RE.sub("", str(chunk.get("error") or detail.get("message") or chunk)).strip()
                nonzero = _NONZERO_RE.match(error)
                if nonzero:
                    error = f"exit code {nonzero.group(1)}"
                step = steps[-1] if steps else "the first step"
                raise EngineError(
                    engine=ENGINE,
                    reason=f"building {tag} failed at {step}: {error}\n  last output:\n" + "\n".join(f"    {line}" for line in tail),
                )
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in _ANSI_RE.sub("", str(text)).splitlines():
                line = line.rstrip()
                if not line:
                    continue
                if line.startswith("Step "):
                    steps.append(line)
                tail.append(line)
                progress(line)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
    except docker.errors.DockerException as exc:
        raise EngineError(engine=ENGINE, reason=f"building {tag}: {exc}") from exc
    return image_id, steps


def _check_base_image(client: Any, base: str) -> None:
    """The base image must be in the engine already: no registry is used."""
    docker = docker_sdk()
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        release = base.rsplit(":", 1)[-1].split("-")[0] if ":" in base else "bookworm"
        raise EngineError(
            engine=ENGINE,
            reason=f"base image {base} is not in the engine and no registry is used: make it with "
            f"'mmdebstrap --variant=minbase {release} - | docker import - {base}'",
        ) from None
    except docker.errors.APIError as exc:
        raise EngineError(engine=ENGINE, reason=f"inspecting {base}: {exc}") from exc


def build(
    template: str,
    tag: str | None = None,
    dpdk: str | None = None,
    context: str | Path | None = None,
    progress: Progress = print,
    *,
    base_image: str | None = None,
    app_dir: str | Path | None = None,
    app_name: str | None = None,
    requirements: Mapping[str, str | int] | None = None,
    client: Any = None,
    base_url: str | None = None,
    network: str | None = None,
    nocache: bool = False,
) -> BuildResult:
    """Render ``template`` (into ``context``, else a temporary directory) and build it.

    Build output goes to ``progress`` line by line.  No registry is used: the base image must
    already be in the engine.  ``network`` is the network of the RUN steps (they need the
    Debian archive); by default the engine's bridge, or the host's network when the engine has
    no bridge.  Raises EngineError when the SDK is missing, no engine answers or the build
    fails (with the failing step and its last lines of output).
    """
    docker = docker_sdk()
    started = time.monotonic()
    tpl = get_template(template)
    base = base_image or tpl.defaults.get("BASE_IMAGE", DEFAULT_BASE_IMAGE)
    client = client or connect(base_url)
    _check_base_image(client, base)
    temporary = context is None
    ctx = render(template, dpdk, base, context, app_dir=app_dir, app_name=app_name, requirements=requirements)
    try:
        rendered = dockerfile_args((ctx / "Dockerfile").read_text())
        name = rendered.get("APP", tpl.name) if tpl.name == CUSTOM else tpl.name
        tag = tag or f"dpdk-oci-hook/{name}:{rendered['DPDK_VERSION']}"
        net = network if network is not None else _build_network(client)
        progress(f"building {tag} from template {tpl.name} (base {base}, DPDK {rendered['DPDK_VERSION']}, context {ctx})")
        image_id, steps = _stream_build(client, ctx, tag, net, nocache, progress)
        try:
            image = client.images.get(tag)
        except docker.errors.DockerException as exc:
            raise EngineError(engine=ENGINE, reason=f"the build of {tag} reported success but the image is missing: {exc}") from exc
        return BuildResult(
            template=tpl.name,
            tag=tag,
            image_id=image.id or image_id,
            size=int(image.attrs.get("Size") or 0),
            labels=dict(image.labels or {}),
            seconds=round(time.monotonic() - started, 1),
            context=None if temporary else str(ctx),
            steps=steps,
        )
    finally:
        if temporary:
            shutil.rmtree(ctx, ignore_errors=True)
