"""DPDK app images: templates, rendered build contexts, Docker builds, requirement labels.

Templates live in ``templates/<name>/Dockerfile`` (plain Dockerfiles; every variable part is
a build ARG).  Rendering copies a template, the shared files of ``templates/common`` and, for
``custom``, the app's sources into a build context, and writes the chosen values into the
defaults of the ``ARG`` lines, so the context builds with a bare ``docker build``.

Images declare what they need in labels (``dpdk-oci-hook.min-ports`` ...).
:func:`check_requirements` compares them with a container's annotations (a
:class:`hook.model.Request`); it is pure, so the hook can refuse a container before anything
is reserved.  Docker (the ``docker`` SDK) is imported only by the functions that build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hook.errors import EngineError
from hook.request.image_requirements import LABEL_DPDK_VERSION, LABEL_PREFIX, image_requirements
from hook.units import parse_size_kib

LABEL_TEMPLATE = LABEL_PREFIX + "template"

COMMON_DIR = "common"
COMMON_FILES = ("dpdk-image-tool", "dpdk-entrypoint")
EXECUTABLES = frozenset(COMMON_FILES)
CONTEXT_MARKER = ".dpdk-oci-hook-context"
CUSTOM = "custom"
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
# Debian release -> the DPDK its archive ships (libdpdk-dev); the builder checks it.
RELEASE_DPDK = {"bookworm": "22.11", "trixie": "24.11"}
# name in images/ -> (template, app directory for custom)
PROVIDED_IMAGES = {"testpmd": ("testpmd", None), "l2fwd": ("l2fwd", None), "l3fwd": ("l3fwd", None), "sample-app": (CUSTOM, "sample-app")}
ENGINE = "docker"
TOOL = "dpdk-oci-hook image"
BUILD_TIMEOUT_S = 1800
TAIL_LINES = 15
APP_UID_GID = "10001:10001"  # the non-root user every template's image runs as

_ARG_RE = re.compile(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$")
_IMAGE_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_VERSION_RE = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?")
_APP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COUNT_RE = re.compile(r"[0-9]{1,6}")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NONZERO_RE = re.compile(r"^The command .* returned a non-zero code: (\d+)$", re.DOTALL)
REQUIREMENT_ARGS = {"min-ports": "MIN_PORTS", "min-cpus": "MIN_CPUS", "min-hugepages": "MIN_HUGEPAGES", "min-queues": "MIN_QUEUES"}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Template:
    """One image template: a directory with a Dockerfile."""

    name: str
    path: Path
    description: str
    defaults: dict[str, str]  # the ARG defaults of its Dockerfile

    def requirements(self) -> dict[str, Any]:
        """What images of this template ask for by default (see :func:`image_requirements`)."""
        labels = {LABEL_PREFIX + key: self.defaults[arg] for key, arg in REQUIREMENT_ARGS.items() if arg in self.defaults}
        labels[LABEL_DPDK_VERSION] = self.defaults.get("DPDK_VERSION", "")
        return image_requirements(labels)


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


def _fail(reason: str) -> EngineError:
    return EngineError(engine=TOOL, reason=reason)


# --- templates -----------------------------------------------------------------------------


def templates_dir() -> Path:
    """Where the templates are: $DPDK_OCI_HOOK_TEMPLATES, the checkout, or an installed copy."""
    candidates = []
    if os.environ.get("DPDK_OCI_HOOK_TEMPLATES"):
        candidates.append(Path(os.environ["DPDK_OCI_HOOK_TEMPLATES"]))
    candidates += [
        Path(__file__).resolve().parent.parent / "templates",
        Path(sys.prefix).parent / "templates",  # install.sh: /opt/dpdk-oci-hook/{venv,templates}
        Path("/usr/share/dpdk-oci-hook/templates"),
    ]
    for candidate in candidates:
        if (candidate / COMMON_DIR / "dpdk-entrypoint").is_file():
            return candidate
    raise _fail("no image templates found (looked in " + ", ".join(str(c) for c in candidates) + "); set DPDK_OCI_HOOK_TEMPLATES")


def dockerfile_args(text: str) -> dict[str, str]:
    """The first default of every ``ARG NAME=VALUE`` line of a Dockerfile."""
    args: dict[str, str] = {}
    for line in text.splitlines():
        match = _ARG_RE.match(line.strip())
        if match and match.group(2) is not None:
            args.setdefault(match.group(1), match.group(2))
    return args


def _description(text: str, name: str) -> str:
    """The Dockerfile's first comment paragraph, without its ``name:`` lead."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if not body:
            break
        words.append(body)
    description = " ".join(words)
    if description.startswith(f"{name}:"):
        description = description[len(name) + 1 :].strip()
    return description.split(". ")[0].rstrip(".")


def list_templates(root: Path | None = None) -> list[Template]:
    """Every template (a directory of ``templates/`` holding a Dockerfile), by name."""
    root = root or templates_dir()
    found = []
    for path in sorted(root.iterdir()):
        dockerfile = path / "Dockerfile"
        if path.name == COMMON_DIR or not dockerfile.is_file():
            continue
        text = dockerfile.read_text()
        found.append(Template(path.name, path, _description(text, path.name), dockerfile_args(text)))
    return found


def get_template(name: str, root: Path | None = None) -> Template:
    templates = {t.name: t for t in list_templates(root)}
    if name not in templates:
        raise _fail(f"unknown template {name[:40]!r} (known: {', '.join(templates) or 'none'})")
    return templates[name]


def dpdk_version_for(base_image: str) -> str | None:
    """The DPDK of the Debian release a base image is named after (``debian:trixie-slim`` -> 24.11)."""
    tag = base_image.rsplit("/", 1)[-1]
    for release, version in RELEASE_DPDK.items():
        if re.search(rf"(^|[:\-_.]){release}($|[:\-_.])", tag):
            return version
    return None


def set_arg_defaults(text: str, values: Mapping[str, str]) -> str:
    """``text`` with the default of each ``ARG NAME=...`` line of ``values`` replaced.

    Every named ARG must have a default line to replace: a silent miss would build something
    else than asked.
    """
    seen: set[str] = set()
    lines = []
    for line in text.splitlines(keepends=True):
        match = _ARG_RE.match(line.strip())
        if match and match.group(2) is not None and match.group(1) in values:
            name = match.group(1)
            seen.add(name)
            line = f"ARG {name}={values[name]}\n"
        lines.append(line)
    missing = sorted(set(values) - seen)
    if missing:
        raise _fail(f"the Dockerfile has no 'ARG NAME=default' line for {', '.join(missing)}")
    return "".join(lines)


def _check_value(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise _fail(f"{kind} {value[:80]!r} is not valid")
    return value


def _requirement_args(requirements: Mapping[str, str | int] | None) -> dict[str, str]:
    args: dict[str, str] = {}
    for key, value in (requirements or {}).items():
        if key not in REQUIREMENT_ARGS:
            raise _fail(f"unknown requirement {key!r} (known: {', '.join(REQUIREMENT_ARGS)})")
        text = str(value).strip()
        if key == "min-hugepages":
            try:
                parse_size_kib(text)
            except ValueError as exc:
                raise _fail(f"min-hugepages: {exc}") from exc
        elif not _COUNT_RE.fullmatch(text):
            raise _fail(f"{key} {text[:40]!r} is not a whole number")
        args[REQUIREMENT_ARGS[key]] = text
    return args


def _copy_tree(src: Path, dest: Path, skip: Iterable[str] = ()) -> None:
    skipped = set(skip)
    for entry in sorted(src.iterdir()):
        if entry.name in skipped:
            continue
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)


def _prepare_context(context: Path, app_dir: Path | None) -> None:
    """Refuse to write into a directory that holds things we did not make."""
    if not context.exists():
        context.mkdir(parents=True)
        return
    if not context.is_dir():
        raise _fail(f"context {context} is not a directory")
    if (context / CONTEXT_MARKER).exists() or (app_dir is not None and context.resolve() == app_dir.resolve()):
        return
    if any(context.iterdir()):
        raise _fail(f"context {context} is not empty and was not made by {TOOL}: give a new or empty directory")


def render(
    template: str,
    dpdk_version: str | None = None,
    base_image: str | None = None,
    context: str | Path | None = None,
    *,
    app_dir: str | Path | None = None,
    app_name: str | None = None,
    requirements: Mapping[str, str | int] | None = None,
    root: Path | None = None,
) -> Path:
    """Write a build context for ``template`` and return its directory.

    ``dpdk_version`` defaults to the DPDK of the base image's Debian release, else the
    template's own default.  For ``custom``, ``app_dir`` is the app's meson or make project
    (copied to the context's top, as in ``COPY . /usr/src/dpdk``; it may be the context
    itself) and ``app_name`` the executable it builds (default: the directory's name).
    ``requirements`` overrides the requirement labels, e.g. ``{"min-hugepages": "256Mi"}``.
    """
    tpl = get_template(template, root)
    common = tpl.path.parent / COMMON_DIR
    base = _check_value("base image", base_image or tpl.defaults.get("BASE_IMAGE", DEFAULT_BASE_IMAGE), _IMAGE_REF_RE)
    dpdk = dpdk_version or dpdk_version_for(base) or tpl.defaults.get("DPDK_VERSION")
    if not dpdk:
        raise _fail(f"cannot tell the DPDK version of {base}: give it (e.g. --dpdk 22.11)")
    values = {"BASE_IMAGE": base, "DPDK_VERSION": _check_value("DPDK version", dpdk, _VERSION_RE)}
    values.update(_requirement_args(requirements))
    app_path = Path(app_dir) if app_dir is not None else None
    if tpl.name == CUSTOM:
        if app_path is None:
            raise _fail("template custom needs the app's source directory (--app DIR)")
        if not app_path.is_dir() or not ((app_path / "meson.build").is_file() or (app_path / "Makefile").is_file()):
            raise _fail(f"app directory {app_path} has neither meson.build nor Makefile")
        values["APP"] = _check_value("app name", app_name or app_path.resolve().name, _APP_RE)
    elif app_path is not None:
        raise _fail(f"template {tpl.name} builds its own app; --app is for template custom")

    ctx = Path(context) if context is not None else Path(tempfile.mkdtemp(prefix=f"dpdk-image-{tpl.name}-"))
    _prepare_context(ctx, app_path)
    if app_path is not None and ctx.resolve() != app_path.resolve():
        _copy_tree(app_path, ctx, skip={"Dockerfile", CONTEXT_MARKER, *COMMON_FILES, ".git", "build", "builddir"})
    for name in COMMON_FILES:
        shutil.copyfile(common / name, ctx / name)
    for entry in sorted(tpl.path.iterdir()):
        if entry.name == "Dockerfile" or not entry.is_file():
            continue
        if entry.name == ".dockerignore" and (ctx / ".dockerignore").exists() and tpl.name == CUSTOM:
            continue  # the app's own ignore rules win
        shutil.copyfile(entry, ctx / entry.name)
    for name in EXECUTABLES:
        if (ctx / name).exists():
            (ctx / name).chmod(0o755)
    header = (
        f"# Generated by {TOOL} from templates/{tpl.name}/Dockerfile: edit the template, then render again.\n"
    )
    (ctx / "Dockerfile").write_text(header + set_arg_defaults((tpl.path / "Dockerfile").read_text(), values))
    marker = {"template": tpl.name, **{k.lower(): v for k, v in sorted(values.items())}}
    (ctx / CONTEXT_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return ctx


def generate_images(images_dir: str | Path | None = None, root: Path | None = None) -> list[Path]:
    """Render the provided build contexts (``images/testpmd`` ... ``images/sample-app``)."""
    root = root or templates_dir()
    out = Path(images_dir) if images_dir is not None else root.parent / "images"
    made = []
    for name, (template, app) in PROVIDED_IMAGES.items():
        target = out / name
        made.append(render(template, context=target, app_dir=target if app else None, app_name=app, root=root))
    return made


# --- requirements (pure) ---------------------------------------------------------------------


# --- building with Docker --------------------------------------------------------------------


def connect(base_url: str | None = None, timeout: int = BUILD_TIMEOUT_S) -> Any:
    """A docker SDK client that answers, or EngineError."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise EngineError(engine=ENGINE, reason=f"the docker Python package is missing ({exc})") from exc
    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=where, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(engine=ENGINE, reason=f"no engine reachable at {where} ({exc}); start dockerd or set DOCKER_HOST") from exc
    return client


def read_labels(image: str, client: Any = None) -> dict[str, str]:
    """The labels of a local image (EngineError if the engine does not have it)."""
    import docker.errors

    client = client or connect()
    try:
        return dict(client.images.get(image).labels or {})
    except docker.errors.ImageNotFound as exc:
        raise EngineError(engine=ENGINE, reason=f"image {image} is not in the engine") from exc
    except docker.errors.APIError as exc:
        raise EngineError(engine=ENGINE, reason=f"inspecting {image}: {exc}") from exc


def _build_network(client: Any) -> str | None:
    """The engine's bridge when it has one; else the host network (dockerd --bridge=none)."""
    names = {net.get("Name") for net in client.api.networks()}
    return None if "bridge" in names else "host"


def _stream_build(client: Any, context: Path, tag: str, network: str | None, nocache: bool, progress: Progress) -> tuple[str, list[str]]:
    """Run the build, feeding ``progress``; return (image id, step lines) or raise EngineError."""
    import docker.errors

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
    no bridge.  Raises EngineError when no engine answers or the build fails (with the failing
    step and its last lines of output).
    """
    import docker.errors

    started = time.monotonic()
    tpl = get_template(template)
    base = base_image or tpl.defaults.get("BASE_IMAGE", DEFAULT_BASE_IMAGE)
    client = client or connect(base_url)
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


# --- command line (wired into hook.admin.cli as "dpdk-oci-hook image ...") --------------------------


def _format_requirements(need: Mapping[str, Any]) -> str:
    parts = [f"ports>={need['min-ports']}", f"cpus>={need['min-cpus']}", f"hugepages>={need['min-hugepages-mib']}Mi"]
    if need["min-queues"] > 1:
        parts.append(f"queues>={need['min-queues']}")
    return " ".join(parts)


def cmd_image_list(args: Any) -> int:
    rows: list[dict[str, Any]] = []
    for tpl in list_templates():
        rows.append({"name": tpl.name, "description": tpl.description, "path": str(tpl.path), "defaults": tpl.defaults, "requirements": tpl.requirements()})
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = max((len(r["name"]) for r in rows), default=8)
    for row in rows:
        need = row["requirements"]
        sys.stdout.write(f"{row['name']:{width}}  {row['description']}\n{'':{width}}  needs {_format_requirements(need)}; "
                         f"DPDK {need['dpdk-version']} on {row['defaults'].get('BASE_IMAGE', DEFAULT_BASE_IMAGE)}\n")
    return 0


def cmd_image_build(args: Any) -> int:
    requirements = {key: value for key, value in (
        ("min-ports", args.min_ports), ("min-cpus", args.min_cpus), ("min-hugepages", args.min_hugepages), ("min-queues", args.min_queues)
    ) if value is not None}
    if args.render_only:
        if not args.context:
            raise _fail("--render-only needs --context DIR")
        ctx = render(args.template, args.dpdk, args.base_image, args.context, app_dir=args.app, app_name=args.app_name, requirements=requirements)
        sys.stdout.write(f"rendered {args.template} into {ctx}; build it with: docker build -t TAG {ctx}\n")
        return 0
    out = sys.stderr if args.json else sys.stdout

    def progress(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    result = build(
        args.template, args.tag, args.dpdk, args.context, progress,
        base_image=args.base_image, app_dir=args.app, app_name=args.app_name, requirements=requirements,
        network=args.network, nocache=args.no_cache,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.__dict__, indent=2) + "\n")
    else:
        need = image_requirements(result.labels)
        sys.stdout.write(f"built {result.tag} ({result.image_id[:19]}, {result.size / 1e6:.0f} MB) in {result.seconds:.0f} s; "
                         f"it needs {_format_requirements(need)}\n")
    return 0


def add_image_parser(subparsers: Any) -> None:
    """Add ``image list`` and ``image build`` to the CLI's subparsers."""
    p = subparsers.add_parser("image", help="DPDK app images: templates, build contexts, builds")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    lst = isub.add_parser("list", help="the image templates and what their images need")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_image_list)
    b = isub.add_parser("build", help="build an image from a template with Docker (or only render its build context)")
    b.add_argument("template", help="a template name (see 'image list')")
    b.add_argument("--tag", help="image tag (default dpdk-oci-hook/NAME:DPDK)")
    b.add_argument("--dpdk", help="DPDK version of the base image's release (default: bookworm 22.11, trixie 24.11)")
    b.add_argument("--base-image", help=f"Debian base image already in the engine (default {DEFAULT_BASE_IMAGE})")
    b.add_argument("--context", help="write the build context to DIR and keep it (default: a temporary directory)")
    b.add_argument("--render-only", action="store_true", help="only write the build context (needs --context)")
    b.add_argument("--app", help="template custom: the app's meson or make project directory")
    b.add_argument("--app-name", help="template custom: the executable it builds (default: the directory's name)")
    b.add_argument("--min-ports", help="override the image's dpdk-oci-hook.min-ports label")
    b.add_argument("--min-cpus", help="override the image's dpdk-oci-hook.min-cpus label")
    b.add_argument("--min-hugepages", help="override the image's dpdk-oci-hook.min-hugepages label, e.g. 256Mi")
    b.add_argument("--min-queues", help="override the image's dpdk-oci-hook.min-queues label")
    b.add_argument("--network", help="network of the RUN steps (default: bridge, or host when the engine has none)")
    b.add_argument("--no-cache", action="store_true", help="do not reuse cached layers")
    b.add_argument("--json", action="store_true", help="print the result as JSON (build output goes to stderr)")
    b.set_defaults(func=cmd_image_build)
