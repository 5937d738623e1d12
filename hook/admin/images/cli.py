"""``dpdk-oci-hook image list | render | build``: the image commands of the CLI.

``list`` and ``render`` need no engine and no Docker SDK; ``build`` needs both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from hook.admin.images.docker_build import build
from hook.admin.images.templates import DEFAULT_BASE_IMAGE, fail, list_templates, render
from hook.request.image_requirements import image_requirements


def _format_requirements(need: Mapping[str, Any]) -> str:
    parts = [f"ports>={need['min-ports']}", f"cpus>={need['min-cpus']}", f"hugepages>={need['min-hugepages-mib']}Mi"]
    if need["min-queues"] > 1:
        parts.append(f"queues>={need['min-queues']}")
    return " ".join(parts)


def _requirements(args: argparse.Namespace) -> dict[str, str]:
    given = (("min-ports", args.min_ports), ("min-cpus", args.min_cpus), ("min-hugepages", args.min_hugepages), ("min-queues", args.min_queues))
    return {key: value for key, value in given if value is not None}


def cmd_image_list(args: argparse.Namespace) -> int:
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


def _render_to(args: argparse.Namespace, output: str) -> int:
    ctx = render(args.template, args.dpdk, args.base_image, output, app_dir=args.app, app_name=args.app_name, requirements=_requirements(args))
    sys.stdout.write(f"rendered {args.template} into {ctx}; build it with: docker build -t TAG {ctx}\n")
    return 0


def cmd_image_render(args: argparse.Namespace) -> int:
    return _render_to(args, args.output)


def cmd_image_build(args: argparse.Namespace) -> int:
    if args.render_only:
        if not args.context:
            raise fail("--render-only needs --context DIR")
        return _render_to(args, args.context)
    out = sys.stderr if args.json else sys.stdout

    def progress(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    result = build(
        args.template, args.tag, args.dpdk, args.context, progress,
        base_image=args.base_image, app_dir=args.app, app_name=args.app_name, requirements=_requirements(args),
        network=args.network, nocache=args.no_cache,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.__dict__, indent=2) + "\n")
    else:
        need = image_requirements(result.labels)
        sys.stdout.write(f"built {result.tag} ({result.image_id[:19]}, {result.size / 1e6:.0f} MB) in {result.seconds:.0f} s; "
                         f"it needs {_format_requirements(need)}\n")
    return 0


def _add_template_args(p: argparse.ArgumentParser) -> None:
    """What render and build share: the template and the values written into its ARG defaults."""
    p.add_argument("template", help="a template name (see 'image list')")
    p.add_argument("--dpdk", help="DPDK version of the base image's release (default: bookworm 22.11, trixie 24.11)")
    p.add_argument("--base-image", help=f"Debian base image (default {DEFAULT_BASE_IMAGE}); a build needs it in the engine already")
    p.add_argument("--app", help="template custom: the app's meson or make project directory")
    p.add_argument("--app-name", help="template custom: the executable it builds (default: the directory's name)")
    p.add_argument("--min-ports", help="override the image's dpdk-oci-hook.min-ports label")
    p.add_argument("--min-cpus", help="override the image's dpdk-oci-hook.min-cpus label")
    p.add_argument("--min-hugepages", help="override the image's dpdk-oci-hook.min-hugepages label, e.g. 256Mi")
    p.add_argument("--min-queues", help="override the image's dpdk-oci-hook.min-queues label")


def add_image_parser(subparsers: Any) -> None:
    """Add ``image list``, ``image render`` and ``image build`` to the CLI's subparsers."""
    p = subparsers.add_parser("image", help="DPDK app images: templates, build contexts, builds")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    lst = isub.add_parser("list", help="the image templates and what their images need")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_image_list)
    r = isub.add_parser("render", help="write a template's build context (for a bare 'docker build'); needs no engine")
    _add_template_args(r)
    r.add_argument("--output", required=True, metavar="DIR", help="a new or empty directory, or one rendered before")
    r.set_defaults(func=cmd_image_render)
    b = isub.add_parser("build", help="build an image from a template with Docker (needs the Docker SDK: the [images] extra)")
    _add_template_args(b)
    b.add_argument("--tag", help="image tag (default dpdk-oci-hook/NAME:DPDK)")
    b.add_argument("--context", help="write the build context to DIR and keep it (default: a temporary directory)")
    b.add_argument("--render-only", action="store_true", help="only write the build context (needs --context); same as 'image render'")
    b.add_argument("--network", help="network of the RUN steps (default: bridge, or host when the engine has none)")
    b.add_argument("--no-cache", action="store_true", help="do not reuse cached layers")
    b.add_argument("--json", action="store_true", help="print the result as JSON (build output goes to stderr)")
    b.set_defaults(func=cmd_image_build)
