"""containerd: a CRI runtime ``dpdk`` whose ``BinaryName`` is the wrapper, in a marked block of config.toml.

containerd reads no hooks.d either.  Its CRI plugin passes only allow-listed pod annotations,
so the block also sets ``pod_annotations``.  ``ctr run --runc-binary <wrapper>`` needs no
config at all.
"""

from __future__ import annotations

from hook.admin.engines.base import OK, REREGISTER, RUNTIME_NAME, WARN, Check, Engine, Layout, Say, Settings
from hook.admin.engines.files import merge_file, revert_file
from hook.admin.engines.merge import containerd_has_ours, containerd_merge, containerd_unmerge


class Containerd(Engine):
    name = "containerd"
    label = "containerd"
    binaries = ("containerd",)
    config_dir = "/etc/containerd"

    def register(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        path = layout.at(layout.containerd_config)
        changed = merge_file(path, lambda text: containerd_merge(text, settings.shim, str(path)), containerd_has_ours, dry_run, say, self.label)
        if changed and not dry_run:
            say(f'containerd: restart containerd to use runtime "{RUNTIME_NAME}" (Kubernetes: a RuntimeClass with handler '
                f"{RUNTIME_NAME}); ctr needs no config: ctr run --runc-binary {settings.shim} --annotation dpdk-oci-hook/...")

    def unregister(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        path = layout.at(layout.containerd_config)
        revert_file(
            path,
            lambda text: containerd_merge(text, settings.shim, str(path)),
            lambda text, _original: containerd_unmerge(text),
            containerd_has_ours,
            dry_run,
            say,
            self.label,
        )

    def check(self, layout: Layout, settings: Settings) -> list[Check]:
        path = layout.at(layout.containerd_config)
        try:
            text: str | None = path.read_text(encoding="utf-8")
        except OSError:
            text = None
        if containerd_has_ours(text):
            return [Check(OK, f"containerd: CRI runtime {RUNTIME_NAME} in {path}")]
        return [Check(WARN, f"containerd: no CRI runtime {RUNTIME_NAME} in {path} (ctr still works: ctr run --runc-binary {settings.shim})",
                      REREGISTER)]
