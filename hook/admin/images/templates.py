"""Image templates and rendering them into build contexts (no engine, no Docker SDK).

Templates live in ``templates/<name>/Dockerfile`` (plain Dockerfiles; every variable part is
a build ARG).  Rendering copies a template, the shared files of ``templates/common`` and, for
``custom``, the app's sources into a build context, and writes the chosen values into the
defaults of the ``ARG`` lines, so the context builds with a bare ``docker build``.

What an image needs is declared in its labels; reading them is
:mod:`hook.request.image_requirements`'s job, and the values given here for those labels are
checked with that same parser, so a rendered image never carries a label the hook refuses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hook.errors import EngineError, ImageRequirementError
from hook.request.image_requirements import LABEL_DPDK_VERSION, LABEL_PREFIX, image_requirements

COMMON_DIR = "common"
COMMON_FILES = ("dpdk-image-tool", "dpdk-entrypoint")
EXECUTABLES = frozenset(COMMON_FILES)
CONTEXT_MARKER = ".dpdk-oci-hook-context"
CUSTOM = "custom"
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
# Debian release -> the DPDK its archive ships (libdpdk-dev); the builder checks it.
RELEASE_DPDK = {"bookworm": "22.11", "trixie": "24.11"}
TOOL = "dpdk-oci-hook image"
APP_UID_GID = "10001:10001"  # the non-root user every template's image runs as
# requirement (a label name without the prefix, as the CLI spells it) -> the ARG that sets it
REQUIREMENT_ARGS = {"min-ports": "MIN_PORTS", "min-cpus": "MIN_CPUS", "min-hugepages": "MIN_HUGEPAGES", "min-queues": "MIN_QUEUES"}
# never copied from an app's directory: ours are written over them, or they are build output
APP_SKIP = frozenset({"Dockerfile", CONTEXT_MARKER, *COMMON_FILES, ".git", "build", "builddir"})

_ARG_RE = re.compile(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$")
_IMAGE_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_VERSION_RE = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?")
_APP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


def fail(reason: str) -> EngineError:
    """The error of a template or rendering problem."""
    return EngineError(engine=TOOL, reason=reason)


def templates_dir() -> Path:
    """Where the templates are: $DPDK_OCI_HOOK_TEMPLATES, the checkout, or an installed copy."""
    candidates = []
    if os.environ.get("DPDK_OCI_HOOK_TEMPLATES"):
        candidates.append(Path(os.environ["DPDK_OCI_HOOK_TEMPLATES"]))
    candidates += [
        Path(__file__).resolve().parents[3] / "templates",  # a checkout: hook/admin/images/ -> templates/
        Path(sys.prefix).parent / "templates",  # install.sh: /opt/dpdk-oci-hook/{venv,templates}
        Path("/usr/share/dpdk-oci-hook/templates"),
    ]
    for candidate in candidates:
        if (candidate / COMMON_DIR / "dpdk-entrypoint").is_file():
            return candidate
    raise fail("no image templates found (looked in " + ", ".join(str(c) for c in candidates) + "); set DPDK_OCI_HOOK_TEMPLATES")


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
        raise fail(f"unknown template {name[:40]!r} (known: {', '.join(templates) or 'none'})")
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
        raise fail(f"the Dockerfile has no 'ARG NAME=default' line for {', '.join(missing)}")
    return "".join(lines)


def _check_value(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise fail(f"{kind} {value[:80]!r} is not valid")
    return value


def requirement_args(requirements: Mapping[str, str | int] | None) -> dict[str, str]:
    """The ARG values for requirement overrides, each checked by the hook's own label parser."""
    args: dict[str, str] = {}
    for key, value in (requirements or {}).items():
        if key not in REQUIREMENT_ARGS:
            raise fail(f"unknown requirement {key!r} (known: {', '.join(REQUIREMENT_ARGS)})")
        text = str(value).strip()
        try:
            image_requirements({LABEL_PREFIX + key: text})
        except ImageRequirementError as exc:
            # "nothing to compare: the image's label is not a whole number" -> why it is refused
            why = str(exc.fields.get("given", exc)).split(": ", 1)[-1]
            raise fail(f"{key} {text[:40]!r} would make a label the hook refuses ({why})") from exc
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


def _check_context(context: Path, app_dir: Path | None) -> None:
    """Refuse a context that holds things we did not make, or that lies in the app's sources."""
    if app_dir is not None:
        resolved, app = context.resolve(), app_dir.resolve()
        if resolved == app or app in resolved.parents:
            raise fail(f"context {context} is inside the app's directory {app_dir}: give a directory outside it")
    if not context.exists():
        return
    if not context.is_dir():
        raise fail(f"context {context} is not a directory")
    if (context / CONTEXT_MARKER).exists():
        return
    if any(context.iterdir()):
        raise fail(f"context {context} is not empty and was not made by {TOOL}: give a new or empty directory")


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

    ``context`` is a new, empty or earlier rendered directory (default: a new temporary one).
    ``dpdk_version`` defaults to the DPDK of the base image's Debian release, else the
    template's own default.  For ``custom``, ``app_dir`` is the app's meson or make project
    (copied to the context's top, as in ``COPY . /usr/src/dpdk``; the context may not lie
    inside it) and ``app_name`` the executable it builds (default: the directory's name).
    ``requirements`` overrides the requirement labels, e.g. ``{"min-hugepages": "256Mi"}``.
    Every value is checked before anything is written.
    """
    tpl = get_template(template, root)
    common = tpl.path.parent / COMMON_DIR
    base = _check_value("base image", base_image or tpl.defaults.get("BASE_IMAGE", DEFAULT_BASE_IMAGE), _IMAGE_REF_RE)
    dpdk = dpdk_version or dpdk_version_for(base) or tpl.defaults.get("DPDK_VERSION")
    if not dpdk:
        raise fail(f"cannot tell the DPDK version of {base}: give it (e.g. --dpdk 22.11)")
    values = {"BASE_IMAGE": base, "DPDK_VERSION": _check_value("DPDK version", dpdk, _VERSION_RE)}
    values.update(requirement_args(requirements))
    app_path = Path(app_dir) if app_dir is not None else None
    if tpl.name == CUSTOM:
        if app_path is None:
            raise fail("template custom needs the app's source directory (--app DIR)")
        if not app_path.is_dir() or not ((app_path / "meson.build").is_file() or (app_path / "Makefile").is_file()):
            raise fail(f"app directory {app_path} has neither meson.build nor Makefile")
        values["APP"] = _check_value("app name", app_name or app_path.resolve().name, _APP_RE)
    elif app_path is not None:
        raise fail(f"template {tpl.name} builds its own app; --app is for template custom")
    dockerfile = set_arg_defaults((tpl.path / "Dockerfile").read_text(), values)

    if context is None:
        ctx = Path(tempfile.mkdtemp(prefix=f"dpdk-image-{tpl.name}-"))
    else:
        ctx = Path(context)
        _check_context(ctx, app_path)
        ctx.mkdir(parents=True, exist_ok=True)
    if app_path is not None:
        _copy_tree(app_path, ctx, skip=APP_SKIP)
    for name in COMMON_FILES:
        shutil.copyfile(common / name, ctx / name)
    for entry in sorted(tpl.path.iterdir()):
        if entry.name == "Dockerfile" or not entry.is_file():
            continue
        if entry.name == ".dockerignore" and app_path is not None and (app_path / ".dockerignore").exists():
            continue  # the app's own ignore rules win
        shutil.copyfile(entry, ctx / entry.name)
    for name in EXECUTABLES:
        if (ctx / name).exists():
            (ctx / name).chmod(0o755)
    header = f"# Generated by {TOOL} from templates/{tpl.name}/Dockerfile: edit the template, then render again.\n"
    (ctx / "Dockerfile").write_text(header + dockerfile)
    marker = {"template": tpl.name, **{k.lower(): v for k, v in sorted(values.items())}}
    (ctx / CONTEXT_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return ctx
