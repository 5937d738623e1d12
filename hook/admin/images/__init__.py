"""DPDK app images: templates rendered into build contexts, and Docker builds of them.

- :mod:`.templates`: find the templates (``templates/<name>/Dockerfile``) and render one into a
  build context that builds with a bare ``docker build`` (pure file work: no engine, no SDK);
- :mod:`.docker_build`: render into a temporary directory and build it through the Docker SDK, the
  optional ``[images]`` extra, imported only there;
- :mod:`.cli`: ``dpdk-oci-hook image list | render | build``.

What an image's labels require is read by :mod:`hook.request.image_requirements` (the hook's
hot path uses it; nothing here parses labels again).
"""

from __future__ import annotations

from hook.admin.images.cli import add_image_parser
from hook.admin.images.docker_build import BUILD_TIMEOUT_S, BuildResult, build, connect, docker_sdk
from hook.admin.images.templates import (
    APP_UID_GID,
    COMMON_FILES,
    CONTEXT_MARKER,
    CUSTOM,
    Template,
    dockerfile_args,
    dpdk_version_for,
    get_template,
    list_templates,
    render,
    set_arg_defaults,
    templates_dir,
)

__all__ = [
    "APP_UID_GID",
    "BUILD_TIMEOUT_S",
    "COMMON_FILES",
    "CONTEXT_MARKER",
    "CUSTOM",
    "BuildResult",
    "Template",
    "add_image_parser",
    "build",
    "connect",
    "docker_sdk",
    "dockerfile_args",
    "dpdk_version_for",
    "get_template",
    "list_templates",
    "render",
    "set_arg_defaults",
    "templates_dir",
]
