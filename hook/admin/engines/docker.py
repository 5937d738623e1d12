"""Docker: ``daemon.json`` names the ``dpdk-oci-runtime`` wrapper as runtime ``dpdk``.

Docker reads no hooks.d, so ``docker run --runtime dpdk --annotation dpdk-oci-hook/...`` goes
through the wrapper, which adds our hooks to annotated containers.  Docker hands
``--annotation`` to the runtime only from version 24 (API 1.43): an older dockerd drops the
annotations, so the hook never sees them.  Install and ``doctor`` both say so, with the way
to a newer engine (:func:`version_advice`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hook.admin.engines.base import (
    ERROR,
    INFO,
    OK,
    REREGISTER,
    RUNTIME_NAME,
    WARN,
    Check,
    Engine,
    Layout,
    Say,
    Settings,
    Version,
    format_version,
)
from hook.admin.engines.files import merge_file, revert_file
from hook.admin.engines.merge import docker_had_runtimes, docker_has_ours, docker_merge, docker_unmerge

MIN_ANNOTATIONS = (24, 0)  # docker run --annotation reaches the runtime (API 1.43)
NEWER_DOCKER = (
    "install Docker >= 24: Debian 13's docker.io (26) or Docker's own docker-ce packages "
    "(https://docs.docker.com/engine/install/debian/); until then use podman or ctr"
)


def drops_annotations(version: Version | None) -> bool:
    """A dockerd of this version runs containers without their annotations."""
    return version is not None and version[:2] < MIN_ANNOTATIONS


def version_advice(path: str | None, version: Version | None) -> Check:
    """What to say about the installed dockerd (``path`` None: not installed), from plain values."""
    if path is None:
        return Check(INFO, "Docker: not installed (optional: podman, ctr and runc work without it)")
    if drops_annotations(version):
        return Check(WARN, f"Docker {format_version(version)} is older than 24: it drops --annotation, "
                           "so DPDK containers get none of what they ask for", NEWER_DOCKER)
    if version is None:
        return Check(WARN, f"Docker: {path} --version gives no version: docker run --annotation needs Docker >= 24",
                     "check that dockerd runs; " + NEWER_DOCKER)
    return Check(OK, f"Docker {format_version(version)}: docker run --runtime {RUNTIME_NAME} --annotation dpdk-oci-hook/...")


class Docker(Engine):
    name = "docker"
    label = "Docker"
    binaries = ("dockerd",)
    config_dir = "/etc/docker"

    def register(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        path = layout.at(layout.docker_config)
        changed = merge_file(path, lambda text: docker_merge(text, settings.shim, str(path)), docker_has_ours, dry_run, say, self.label)
        if changed and not dry_run:
            say(f"Docker: reload dockerd to use it (systemctl reload docker, or kill -HUP its pid); "
                f"then: docker run --runtime {RUNTIME_NAME} --annotation dpdk-oci-hook/cpus=1 ... (needs Docker >= 24)")
        dockerd, version = self.version()
        if dockerd is not None and drops_annotations(version):
            advice = version_advice(dockerd, version)
            say(f"WARNING: {advice.what} -- {advice.fix}")

    def unregister(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        path = layout.at(layout.docker_config)
        revert_file(
            path,
            lambda text: docker_merge(text, settings.shim, str(path)),
            lambda text, original: docker_unmerge(text, docker_had_runtimes(original), str(path)),
            docker_has_ours,
            dry_run,
            say,
            self.label,
        )

    def check(self, layout: Layout, settings: Settings) -> list[Check]:
        path = layout.at(layout.docker_config)
        try:
            text: str | None = path.read_text(encoding="utf-8")
        except OSError:
            text = None
        entry: Any = None
        try:
            entry = ((json.loads(text) if text else {}).get("runtimes") or {}).get(RUNTIME_NAME)
        except (ValueError, AttributeError):
            return [Check(ERROR, f"Docker: {path} is not valid JSON", "fix the file; dockerd will not start with it")]
        if isinstance(entry, dict) and entry.get("path"):
            shim = str(entry["path"])
            if os.access(str(layout.at(shim)), os.X_OK):
                return [Check(OK, f"Docker: runtime {RUNTIME_NAME} -> {shim}")]
            return [Check(ERROR, f"Docker: runtime {RUNTIME_NAME} -> {shim}, which is not executable", REREGISTER)]
        return [Check(WARN, f"Docker: no runtime {RUNTIME_NAME} in {path}", REREGISTER)]

    def version_checks(self, path: str | None, version: Version | None) -> list[Check]:
        return [version_advice(path, version)]
