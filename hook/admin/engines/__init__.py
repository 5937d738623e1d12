"""Register the hook with container engines, as drop-ins that keep what is there.

    python3 -I -m hook.admin.engines register [--dry-run]      (what install.sh runs)
    python3 -I -m hook.admin.engines unregister [--dry-run]    (install.sh --uninstall)

One :class:`~hook.admin.engines.base.Engine` per engine, each in its own module:

- ``hooksd`` (podman, and CRI-O): two OCI hooks.d files in ``/usr/share/containers/oci/hooks.d``;
- ``crio``: a drop-in only if CRI-O's ``hooks_dir`` was changed to leave that directory out;
- ``docker``: ``daemon.json`` ``runtimes.dpdk`` = the ``dpdk-oci-runtime`` wrapper;
- ``containerd``: a CRI runtime ``dpdk`` (wrapper as ``BinaryName``, ``pod_annotations``).

``merge`` holds the pure text-in, text-out merge logic; ``files`` the backup-first writer
and its exact undo.  This package keeps the names the rest of the project uses.
"""

from __future__ import annotations

from hook.admin.engines.base import (
    BACKUP_SUFFIX,
    DEFAULT_CONFIG,
    DEFAULT_HOOKS_DIR,
    HOOK_FILES,
    RUNTIME_NAME,
    SHIM_NAME,
    Check,
    Engine,
    Layout,
    Say,
    Settings,
    say_line,
)
from hook.admin.engines.containerd import Containerd
from hook.admin.engines.crio import Crio
from hook.admin.engines.docker import Docker
from hook.admin.engines.files import write_text_atomic
from hook.admin.engines.hooksd import HooksDir
from hook.admin.engines.merge import (
    BLOCK_BEGIN,
    BLOCK_END,
    POD_ANNOTATIONS,
    containerd_block,
    containerd_has_ours,
    containerd_merge,
    containerd_unmerge,
    crio_dropin,
    crio_hooks_dirs,
    docker_has_ours,
    docker_merge,
    docker_unmerge,
    render_hook,
)
from hook.errors import EngineConfigError

# In the order install.sh registers them (and --engines names them).
ALL_ENGINES: tuple[Engine, ...] = (HooksDir(), Crio(), Docker(), Containerd())
BY_NAME: dict[str, Engine] = {engine.name: engine for engine in ALL_ENGINES}
ENGINES = tuple(BY_NAME)

__all__ = [
    "ALL_ENGINES", "BACKUP_SUFFIX", "BLOCK_BEGIN", "BLOCK_END", "BY_NAME", "DEFAULT_CONFIG", "DEFAULT_HOOKS_DIR", "ENGINES",
    "HOOK_FILES", "POD_ANNOTATIONS", "RUNTIME_NAME", "SHIM_NAME", "Check", "Containerd", "Crio", "Docker", "Engine",
    "EngineConfigError", "HooksDir", "Layout", "Say", "Settings", "containerd_block", "containerd_has_ours", "containerd_merge",
    "containerd_unmerge", "crio_dropin", "crio_hooks_dirs", "detect", "docker_has_ours", "docker_merge", "docker_unmerge",
    "register_all", "render_hook", "say_line", "unregister_all", "write_text_atomic",
]


def detect(layout: Layout | None = None) -> dict[str, bool]:
    """Which engines this host has (a binary on PATH or its config directory)."""
    layout = layout or Layout()
    return {engine.name: engine.detect(layout) for engine in ALL_ENGINES}


def _run_all(
    action: str,
    engines: list[str] | None,
    dry_run: bool,
    layout: Layout | None,
    settings: Settings | None,
    say: Say,
) -> int:
    layout = layout or Layout()
    settings = settings or Settings()
    found = detect(layout)
    names = engines if engines is not None else [name for name in ENGINES if found[name]]
    for name in ENGINES:
        if engines is None and not found[name]:
            say(f"{name}: not installed: skipped")
    failures = 0
    for name in names:
        engine = BY_NAME[name]
        try:
            if action == "register":
                engine.register(layout, settings, dry_run, say)
            else:
                engine.unregister(layout, settings, dry_run, say)
        except EngineConfigError as exc:
            say(f"{name}: ERROR: {exc}")
            failures += 1
    return failures


def register_all(
    dry_run: bool = False,
    engines: list[str] | None = None,
    layout: Layout | None = None,
    settings: Settings | None = None,
    say: Say = say_line,
) -> int:
    """Register with every engine present (or those named); returns how many failed."""
    return _run_all("register", engines, dry_run, layout, settings, say)


def unregister_all(
    dry_run: bool = False,
    engines: list[str] | None = None,
    layout: Layout | None = None,
    settings: Settings | None = None,
    say: Say = say_line,
) -> int:
    """Undo :func:`register_all`; returns how many engines failed."""
    return _run_all("unregister", engines, dry_run, layout, settings, say)
