"""CRI-O: it reads the same hooks.d files as podman; a drop-in only when its ``hooks_dir`` leaves ours out.

CRI-O's default ``hooks_dir`` is the directory the hooks.d engine writes to, so usually there
is nothing to do here.  A site that set ``hooks_dir`` to other directories gets
``crio.conf.d/99-dpdk-oci-hook.conf``, which keeps those and adds ours.
"""

from __future__ import annotations

from pathlib import Path

from hook.admin.engines.base import OK, REREGISTER, WARN, Check, Engine, Layout, Say, Settings
from hook.admin.engines.files import read_text, show, write_text_atomic
from hook.admin.engines.merge import crio_dropin, crio_hooks_dirs, crio_reads
from hook.errors import EngineConfigError


class Crio(Engine):
    name = "crio"
    label = "CRI-O"
    binaries = ("crio",)
    config_dir = "/etc/crio"

    @staticmethod
    def dropin_path(layout: Layout) -> Path:
        return layout.at(layout.crio_dropin_dir) / layout.crio_dropin_name

    def effective_hooks_dirs(self, layout: Layout, with_ours: bool = False) -> list[str]:
        """CRI-O's ``hooks_dir`` from crio.conf and its drop-ins (ours only if ``with_ours``)."""
        ours = self.dropin_path(layout)
        dropin_dir = layout.at(layout.crio_dropin_dir)
        dropins = []
        if dropin_dir.is_dir():
            for entry in sorted(dropin_dir.glob("*.conf")):
                if with_ours or entry.name != ours.name:
                    dropins.append((entry.name, read_text(entry) or ""))
        return crio_hooks_dirs(read_text(layout.at(layout.crio_config)), dropins)

    def register(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        ours = self.dropin_path(layout)
        effective = self.effective_hooks_dirs(layout)
        text = crio_dropin(effective, layout.hooks_dir)
        current = read_text(ours)
        if text is None:
            say(f"CRI-O: reads {layout.hooks_dir} already (hooks_dir = {effective}): nothing to add")
            if current is not None:
                self.unregister(layout, settings, dry_run, say)
            return
        if current == text:
            say(f"CRI-O: {ours} is up to date")
            return
        if dry_run:
            say(f"CRI-O: would write {ours}:")
            show(say, text)
            return
        write_text_atomic(ours, text)
        say(f"CRI-O: wrote {ours} (adds {layout.hooks_dir} to hooks_dir); restart crio to use it")

    def unregister(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        ours = self.dropin_path(layout)
        if not ours.exists():
            say(f"CRI-O: {ours} is not there")
        elif dry_run:
            say(f"CRI-O: would remove {ours}")
        else:
            ours.unlink()
            say(f"CRI-O: removed {ours}")

    def check(self, layout: Layout, settings: Settings) -> list[Check]:
        try:
            effective = self.effective_hooks_dirs(layout, with_ours=True)
        except EngineConfigError as exc:
            return [Check(WARN, f"CRI-O: cannot read its configuration ({exc})", "fix crio.conf, then: " + REREGISTER)]
        if crio_reads(effective, layout.hooks_dir):
            return [Check(OK, f"CRI-O: hooks_dir includes {layout.hooks_dir}")]
        return [Check(WARN, f"CRI-O: hooks_dir = {effective} leaves out {layout.hooks_dir}", REREGISTER)]
