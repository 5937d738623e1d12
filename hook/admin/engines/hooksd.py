"""podman (and CRI-O): two OCI hooks.d files, createRuntime and poststop.

They go into ``/usr/share/containers/oci/hooks.d``, the directory podman and CRI-O both read
by default; a file of the same name in ``/etc/containers/oci/hooks.d`` would override ours,
which ``doctor`` looks at.  Only files that run our hook are ever replaced or removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hook.admin.engines.base import (
    ERROR,
    HOOK_FILES,
    OK,
    OVERRIDE_HOOKS_DIR,
    REREGISTER,
    WARN,
    Check,
    Engine,
    Layout,
    Say,
    Settings,
    Version,
    format_version,
)
from hook.admin.engines.crio import Crio
from hook.admin.engines.files import read_text, show, write_text_atomic
from hook.admin.engines.merge import hook_file_is_ours, render_hook
from hook.errors import EngineConfigError

LABEL = "hooks.d (podman, CRI-O)"


class HooksDir(Engine):
    name = "podman"
    label = LABEL
    binaries = ("podman",)
    config_dir = "/etc/containers"

    def detect(self, layout: Layout) -> bool:
        return super().detect(layout) or Crio().detect(layout)  # CRI-O reads the same hooks.d

    def render(self, stage: str, settings: Settings) -> str:
        """The hooks.d file of ``stage`` for these settings."""
        template_path = Path(settings.templates) / HOOK_FILES[stage]
        try:
            template = template_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise EngineConfigError(reason=f"hook template {template_path}: {exc.strerror or exc}") from exc
        return render_hook(template, settings.python, settings.config)

    def register(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        for stage, name in HOOK_FILES.items():
            text = self.render(stage, settings)
            target = layout.at(layout.hooks_dir) / name
            current = read_text(target)
            if current == text:
                say(f"{LABEL}: {target} is up to date")
                continue
            if current is not None and not hook_file_is_ours(current):
                raise EngineConfigError(reason=f"{target} exists and is not ours; move it away, then install again")
            if dry_run:
                say(f"{LABEL}: would write {target} ({stage}):")
                show(say, text)
                continue
            write_text_atomic(target, text)
            say(f"{LABEL}: wrote {target} ({stage}); podman and CRI-O read it on their next container")

    def unregister(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        for name in HOOK_FILES.values():
            target = layout.at(layout.hooks_dir) / name
            current = read_text(target)
            if current is None:
                say(f"{LABEL}: {target} is not there")
            elif not hook_file_is_ours(current):
                say(f"{LABEL}: {target} is not ours: left alone")
            elif dry_run:
                say(f"{LABEL}: would remove {target}")
            else:
                target.unlink()
                say(f"{LABEL}: removed {target}")

    def check(self, layout: Layout, settings: Settings) -> list[Check]:
        found: list[Check] = []
        for stage, name in HOOK_FILES.items():
            override = layout.at(OVERRIDE_HOOKS_DIR) / name
            target = override if override.exists() else layout.at(layout.hooks_dir) / name
            try:
                hook = json.loads(target.read_text(encoding="utf-8")).get("hook", {})
            except (OSError, ValueError, AttributeError):
                found.append(Check(WARN, f"hooks.d: {target} missing or unreadable (podman/CRI-O will not run the {stage} hook)", REREGISTER))
                continue
            if not os.access(str(layout.at(hook.get("path", "") or "/nonexistent")), os.X_OK):
                found.append(Check(ERROR, f"hooks.d: {target} runs {hook.get('path')!r}, which is not executable", REREGISTER))
            else:
                found.append(Check(OK, f"hooks.d: {target} ({stage})"))
        return found

    def version_checks(self, path: str | None, version: Version | None) -> list[Check]:
        if path is None:
            return []
        return [Check(OK, f"podman {format_version(version)}: uses hooks.d (podman run --annotation dpdk-oci-hook/...)")]
