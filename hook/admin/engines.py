"""Register the hook with container engines, as drop-ins that keep what is there.

    python3 -I -m hook.admin.engines register [--dry-run]      (what install.sh runs)
    python3 -I -m hook.admin.engines unregister [--dry-run]    (install.sh --uninstall)

- podman and CRI-O read OCI ``hooks.d``: two files (createRuntime, poststop) go into
  ``/usr/share/containers/oci/hooks.d``, the directory both read by default.  CRI-O gets a
  drop-in only if its ``hooks_dir`` was changed to leave that directory out.
- Docker reads no hooks.d: ``daemon.json`` gets ``runtimes.dpdk`` = the ``dpdk-oci-runtime``
  wrapper (``docker run --runtime dpdk --annotation dpdk-oci-hook/...``).
- containerd reads no hooks.d either: its CRI plugin gets a runtime ``dpdk`` whose
  ``BinaryName`` is the wrapper and whose ``pod_annotations`` let ours through.  containerd
  1.6 ``imports`` replace a plugin's whole section (checked: an imported file that names the
  CRI plugin drops the main file's CRI settings), so this is a marked block appended to
  ``config.toml`` instead.  ``ctr run --runc-binary <wrapper>`` needs no config at all.

Each edit keeps a backup of the original (``<file>.dpdk-oci-hook.bak``) and is undone
exactly: unregister after register, with nothing else changed in between, gives back the
original bytes (or no file, if there was none).  A file that cannot be parsed is never
written.  The merge logic is pure functions of text; the file writers are small.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hook.entry import MAIN_SCRIPT, hook_stage
from hook.errors import EngineConfigError

RUNTIME_NAME = "dpdk"
SHIM_NAME = "dpdk-oci-runtime"
BACKUP_SUFFIX = ".dpdk-oci-hook.bak"
HOOK_FILES = {"createRuntime": "dpdk-oci-hook-createruntime.json", "poststop": "dpdk-oci-hook-poststop.json"}
POD_ANNOTATIONS = ["dpdk-oci-hook/*"]
DEFAULT_CONFIG = "/etc/dpdk-oci-hook/config.hcl"
DEFAULT_HOOKS_DIR = "/usr/share/containers/oci/hooks.d"  # podman's and CRI-O's default
BLOCK_BEGIN = "# BEGIN dpdk-oci-hook: runtime for DPDK containers (install.sh --uninstall removes this block)"
BLOCK_END = "# END dpdk-oci-hook"
CRI_PLUGIN = {1: "cri", 2: '"io.containerd.grpc.v1.cri"', 3: '"io.containerd.cri.v1.runtime"'}
ENGINES = ("podman", "crio", "docker", "containerd")


# ---------------------------------------------------------------------------------------
# Pure merge logic: text in, text out.


def render_hook(template: str, python: str, config: str) -> str:
    """A hooks.d file from its template: the interpreter, the hook's script and config path filled in."""
    for name, value in (("python", python), ("config", config)):
        if not os.path.isabs(value):
            raise EngineConfigError(reason=f"{name} must be an absolute path, got {value!r}")
    text = template.replace("@PYTHON@", python).replace("@HOOK_MAIN@", MAIN_SCRIPT).replace("@CONFIG@", config)
    json.loads(text)  # a template that no longer parses is a bug
    return text


def _load_daemon_json(text: str | None, path: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EngineConfigError(reason=f"{path} is not valid JSON ({exc}); fix it first, nothing was changed") from exc
    if not isinstance(data, dict):
        raise EngineConfigError(reason=f"{path} must hold a JSON object; nothing was changed")
    runtimes = data.get("runtimes")
    if runtimes is not None and not isinstance(runtimes, dict):
        raise EngineConfigError(reason=f'{path}: "runtimes" is not an object; nothing was changed')
    return data


def _is_our_runtime(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("path"), str) and os.path.basename(entry["path"]) == SHIM_NAME


def docker_has_ours(text: str | None) -> bool:
    """daemon.json names our wrapper (at any path) as runtime ``dpdk``."""
    try:
        data = _load_daemon_json(text, "daemon.json")
    except EngineConfigError:
        return False
    return _is_our_runtime((data.get("runtimes") or {}).get(RUNTIME_NAME))


def docker_merge(text: str | None, shim: str, path: str = "daemon.json") -> str:
    """daemon.json with ``runtimes.dpdk = {"path": shim}``; every other key kept, in order."""
    data = _load_daemon_json(text, path)
    runtimes = data.get("runtimes") or {}
    current = runtimes.get(RUNTIME_NAME)
    if current is not None and not _is_our_runtime(current):
        raise EngineConfigError(
            reason=f'{path} already defines a runtime "{RUNTIME_NAME}" that is not {SHIM_NAME} ({json.dumps(current)}); '
            "rename or remove it, then install again"
        )
    if current == {"path": shim} and text is not None:
        return text  # registered already: not a byte changes
    runtimes = dict(runtimes)
    runtimes[RUNTIME_NAME] = {"path": shim}
    data["runtimes"] = runtimes
    return json.dumps(data, indent=2) + "\n"


def docker_unmerge(text: str, had_runtimes: bool, path: str = "daemon.json") -> str | None:
    """daemon.json without our runtime; None when nothing else is left (the file was ours)."""
    data = _load_daemon_json(text, path)
    runtimes = dict(data.get("runtimes") or {})
    if not _is_our_runtime(runtimes.get(RUNTIME_NAME)):
        return text
    del runtimes[RUNTIME_NAME]
    if runtimes or had_runtimes:
        data["runtimes"] = runtimes
    else:
        data.pop("runtimes", None)
    if not data and not had_runtimes:
        return None
    return json.dumps(data, indent=2) + "\n"


def _parse_toml(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EngineConfigError(reason=f"{path} is not valid TOML ({exc}); fix it first, nothing was changed") from exc


def _cri_runtimes(data: dict[str, Any], version: int) -> dict[str, Any]:
    plugin = CRI_PLUGIN[version].strip('"')
    node: Any = data.get("plugins", {}).get(plugin, {})
    for key in ("containerd", "runtimes"):
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _containerd_version(data: dict[str, Any], path: str) -> int:
    version = data.get("version", 1)
    if version not in CRI_PLUGIN:
        raise EngineConfigError(reason=f"{path}: unknown config version {version!r}; nothing was changed")
    return int(version)


def containerd_block(version: int, shim: str) -> str:
    """The marked block that defines runtime ``dpdk`` in the CRI plugin of a config ``version``."""
    table = f"plugins.{CRI_PLUGIN[version]}.containerd.runtimes.{RUNTIME_NAME}"
    return "\n".join(
        [
            BLOCK_BEGIN,
            f"[{table}]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"  pod_annotations = {json.dumps(POD_ANNOTATIONS)}",
            f"[{table}.options]",
            f"  BinaryName = {json.dumps(shim)}",
            BLOCK_END,
            "",
        ]
    )


def _split_block(text: str) -> tuple[str, str | None, str]:
    """(before, our block or None, after) of a config.toml."""
    start = text.find(BLOCK_BEGIN + "\n")
    if start < 0 or (start > 0 and text[start - 1] != "\n"):
        return text, None, ""
    end = text.find(BLOCK_END + "\n", start)
    if end < 0:
        raise EngineConfigError(reason=f"found '{BLOCK_BEGIN[:30]}...' without '{BLOCK_END}': fix the file by hand")
    end += len(BLOCK_END) + 1
    return text[:start], text[start:end], text[end:]


def containerd_merge(text: str | None, shim: str, path: str = "config.toml") -> str:
    """config.toml with our runtime block (appended, or updated in place); all else kept."""
    original = text if text is not None else "version = 2\n"
    data = _parse_toml(original, path)
    version = _containerd_version(data, path)
    before, block, after = _split_block(original)
    if block is None and RUNTIME_NAME in _cri_runtimes(data, version):
        raise EngineConfigError(reason=f'{path} already defines a CRI runtime "{RUNTIME_NAME}"; rename or remove it, then install again')
    new_block = containerd_block(version, shim)
    if block == new_block:
        return original
    if block is None:
        sep = "" if not before else ("\n" if before.endswith("\n") else "\n\n")  # one blank line before it
        merged = before + sep + new_block
    else:
        merged = before + new_block + after
    try:
        check = tomllib.loads(merged)
    except tomllib.TOMLDecodeError as exc:
        raise EngineConfigError(
            reason=f"{path}: adding our runtime would break the file ({exc}); add this yourself:\n{new_block}"
        ) from exc
    runtime = _cri_runtimes(check, version).get(RUNTIME_NAME, {})
    if runtime.get("options", {}).get("BinaryName") != shim:
        raise EngineConfigError(reason=f"{path}: our runtime did not land where containerd reads it; add this yourself:\n{new_block}")
    return merged


def containerd_has_ours(text: str | None) -> bool:
    """config.toml holds our marked block."""
    try:
        return text is not None and _split_block(text)[1] is not None
    except EngineConfigError:
        return True  # half a block: ours, and broken


def containerd_unmerge(text: str) -> str | None:
    """config.toml without our block; None when only what we created is left."""
    before, block, after = _split_block(text)
    if block is None:
        return text
    if before.endswith("\n\n"):
        before = before[:-1]  # the blank line we put in front (a file without a final newline gets one)
    rest = before + after
    return None if rest.strip() in ("", "version = 2") else rest


def crio_hooks_dirs(main_text: str | None, dropins: list[tuple[str, str]]) -> list[str]:
    """CRI-O's effective ``hooks_dir``: crio.conf, then drop-ins in name order, last one wins."""
    dirs = [DEFAULT_HOOKS_DIR]
    for name, text in [("crio.conf", main_text), *sorted(dropins)]:
        if text is None:
            continue
        data = _parse_toml(text, name)
        value = data.get("crio", {}).get("runtime", {}).get("hooks_dir")
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            dirs = list(value)
    return dirs


def crio_dropin(effective: list[str], hooks_dir: str) -> str | None:
    """The drop-in that adds ``hooks_dir`` to CRI-O's list, or None if CRI-O reads it already."""
    norm = [os.path.normpath(d) for d in effective]
    if os.path.normpath(hooks_dir) in norm:
        return None
    return (
        "# dpdk-oci-hook: CRI-O must read the hooks.d directory that holds our hook.\n"
        "# This keeps the directories configured before; install.sh --uninstall removes this file.\n"
        "[crio.runtime]\n"
        f"hooks_dir = {json.dumps([*effective, hooks_dir])}\n"
    )


# ---------------------------------------------------------------------------------------
# Files: where things are, and the small writers.


@dataclass(frozen=True)
class Layout:
    """Where each engine's configuration lives; ``root`` prefixes all of it (tests use a temp dir)."""

    root: str = "/"
    hooks_dir: str = DEFAULT_HOOKS_DIR
    docker_config: str = "/etc/docker/daemon.json"
    containerd_config: str = "/etc/containerd/config.toml"
    crio_config: str = "/etc/crio/crio.conf"
    crio_dropin_dir: str = "/etc/crio/crio.conf.d"
    crio_dropin_name: str = "99-dpdk-oci-hook.conf"

    def at(self, path: str) -> Path:
        return Path(self.root) / path.lstrip("/")


@dataclass
class Settings:
    """What gets registered: the hook interpreter, the wrapper, the host config."""

    python: str = field(default_factory=lambda: sys.executable)
    shim: str = ""
    config: str = DEFAULT_CONFIG
    templates: str = ""

    def __post_init__(self) -> None:
        if not self.shim:
            self.shim = os.path.join(os.path.dirname(self.python), SHIM_NAME)
        if not self.templates:
            self.templates = str(Path(__file__).resolve().parents[1] / "templates" / "hooks.d")


Say = Callable[[str], None]


def _say(line: str) -> None:
    sys.stdout.write(f"    {line}\n")
    sys.stdout.flush()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise EngineConfigError(reason=f"{path} is not UTF-8 text; nothing was changed") from exc


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Temp file beside ``path``, fsync, rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from hook.host.fsutil import replace_file

    replace_file(str(path), text.encode(), None if path.exists() else mode)


def _show(say: Say, text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        say(f"  | {line}")


def merge_file(
    path: Path,
    merge: Callable[[str | None], str],
    registered: Callable[[str | None], bool],
    dry_run: bool,
    say: Say,
    label: str,
) -> bool:
    """Apply ``merge`` to ``path``; back up the original first.  Returns whether it changed."""
    current = _read(path)
    new = merge(current)
    if new == current:
        say(f"{label}: {path} is up to date")
        return False
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    take_backup = current is not None and not backup.exists() and not registered(current)
    if dry_run:
        say(f"{label}: would write {path}" + (f" (original kept as {backup})" if take_backup else "") + ":")
        _show(say, new)
        return True
    if take_backup:
        assert current is not None
        write_text_atomic(backup, current, path.stat().st_mode & 0o7777)
    write_text_atomic(path, new)
    say(f"{label}: wrote {path}" + (f" (original kept as {backup})" if take_backup else ""))
    return True


def revert_file(
    path: Path,
    merge: Callable[[str | None], str],
    unmerge: Callable[[str, str | None], str | None],
    registered: Callable[[str | None], bool],
    dry_run: bool,
    say: Say,
    label: str,
) -> bool:
    """Undo ``merge``: the backup's bytes when nothing else changed since, else only our part."""
    current = _read(path)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    original = _read(backup)
    if current is None or not registered(current):
        say(f"{label}: {path} does not register us: nothing to undo")
        return False
    if original is not None and merge(original) == current:
        action, new, drop_backup = f"restore {path} from {backup}", original, True
    elif original is None and merge(None) == current:
        action, new, drop_backup = f"remove {path} (it was created by install)", None, False
    else:
        new = unmerge(current, original)
        drop_backup = False
        action = f"remove our entry from {path} (changed since install" + (f"; {backup} kept)" if original is not None else ")")
        if new is None:
            action = f"remove {path} (only our entry was left)"
    if dry_run:
        say(f"{label}: would {action}")
        return True
    if new is None:
        path.unlink()
    else:
        write_text_atomic(path, new)
    if drop_backup:
        backup.unlink()
    say(f"{label}: {action.replace('restore', 'restored', 1).replace('remove', 'removed', 1)}")
    return True


# ---------------------------------------------------------------------------------------
# Per engine.


def _hook_file_is_ours(text: str | None) -> bool:
    try:
        data = json.loads(text or "")
        return isinstance(data, dict) and hook_stage(data.get("hook", {}).get("args")) is not None
    except (ValueError, AttributeError, TypeError):
        return False


def register_hooks_d(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    label = "hooks.d (podman, CRI-O)"
    for stage, name in HOOK_FILES.items():
        template_path = Path(settings.templates) / name
        try:
            template = template_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise EngineConfigError(reason=f"hook template {template_path}: {exc.strerror or exc}") from exc
        text = render_hook(template, settings.python, settings.config)
        target = layout.at(layout.hooks_dir) / name
        current = _read(target)
        if current == text:
            say(f"{label}: {target} is up to date")
            continue
        if current is not None and not _hook_file_is_ours(current):
            raise EngineConfigError(reason=f"{target} exists and is not ours; move it away, then install again")
        if dry_run:
            say(f"{label}: would write {target} ({stage}):")
            _show(say, text)
            continue
        write_text_atomic(target, text)
        say(f"{label}: wrote {target} ({stage}); podman and CRI-O read it on their next container")


def unregister_hooks_d(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    label = "hooks.d (podman, CRI-O)"
    for name in HOOK_FILES.values():
        target = layout.at(layout.hooks_dir) / name
        current = _read(target)
        if current is None:
            say(f"{label}: {target} is not there")
        elif not _hook_file_is_ours(current):
            say(f"{label}: {target} is not ours: left alone")
        elif dry_run:
            say(f"{label}: would remove {target}")
        else:
            target.unlink()
            say(f"{label}: removed {target}")


def register_docker(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    path = layout.at(layout.docker_config)
    changed = merge_file(
        path,
        lambda text: docker_merge(text, settings.shim, str(path)),
        docker_has_ours,
        dry_run,
        say,
        "Docker",
    )
    if changed and not dry_run:
        say(f"Docker: reload dockerd to use it (systemctl reload docker, or kill -HUP its pid); "
            f"then: docker run --runtime {RUNTIME_NAME} --annotation dpdk-oci-hook/cpus=1 ... (needs Docker >= 24)")


def _had_runtimes(original: str | None) -> bool:
    try:
        return "runtimes" in _load_daemon_json(original, "backup")
    except EngineConfigError:
        return False


def unregister_docker(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    path = layout.at(layout.docker_config)
    revert_file(
        path,
        lambda text: docker_merge(text, settings.shim, str(path)),
        lambda text, original: docker_unmerge(text, _had_runtimes(original), str(path)),
        docker_has_ours,
        dry_run,
        say,
        "Docker",
    )


def register_containerd(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    path = layout.at(layout.containerd_config)
    changed = merge_file(
        path,
        lambda text: containerd_merge(text, settings.shim, str(path)),
        containerd_has_ours,
        dry_run,
        say,
        "containerd",
    )
    if changed and not dry_run:
        say(f'containerd: restart containerd to use runtime "{RUNTIME_NAME}" (Kubernetes: a RuntimeClass with handler '
            f"{RUNTIME_NAME}); ctr needs no config: ctr run --runc-binary {settings.shim} --annotation dpdk-oci-hook/...")


def unregister_containerd(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    path = layout.at(layout.containerd_config)
    revert_file(
        path,
        lambda text: containerd_merge(text, settings.shim, str(path)),
        lambda text, _original: containerd_unmerge(text),
        containerd_has_ours,
        dry_run,
        say,
        "containerd",
    )


def _crio_dropin_path(layout: Layout) -> Path:
    return layout.at(layout.crio_dropin_dir) / layout.crio_dropin_name


def register_crio(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    ours = _crio_dropin_path(layout)
    dropin_dir = layout.at(layout.crio_dropin_dir)
    dropins = []
    if dropin_dir.is_dir():
        for entry in sorted(dropin_dir.glob("*.conf")):
            if entry.name != ours.name:
                dropins.append((entry.name, _read(entry) or ""))
    effective = crio_hooks_dirs(_read(layout.at(layout.crio_config)), dropins)
    text = crio_dropin(effective, layout.hooks_dir)
    current = _read(ours)
    if text is None:
        say(f"CRI-O: reads {layout.hooks_dir} already (hooks_dir = {effective}): nothing to add")
        if current is not None:
            unregister_crio(layout, settings, dry_run, say)
        return
    if current == text:
        say(f"CRI-O: {ours} is up to date")
        return
    if dry_run:
        say(f"CRI-O: would write {ours}:")
        _show(say, text)
        return
    write_text_atomic(ours, text)
    say(f"CRI-O: wrote {ours} (adds {layout.hooks_dir} to hooks_dir); restart crio to use it")


def unregister_crio(layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
    ours = _crio_dropin_path(layout)
    if not ours.exists():
        say(f"CRI-O: {ours} is not there")
    elif dry_run:
        say(f"CRI-O: would remove {ours}")
    else:
        ours.unlink()
        say(f"CRI-O: removed {ours}")


REGISTER: dict[str, Callable[[Layout, Settings, bool, Say], None]] = {
    "podman": register_hooks_d,
    "crio": register_crio,
    "docker": register_docker,
    "containerd": register_containerd,
}
UNREGISTER: dict[str, Callable[[Layout, Settings, bool, Say], None]] = {
    "podman": unregister_hooks_d,
    "crio": unregister_crio,
    "docker": unregister_docker,
    "containerd": unregister_containerd,
}


def detect(layout: Layout | None = None) -> dict[str, bool]:
    """Which engines this host has (a binary on PATH or its config directory)."""
    layout = layout or Layout()

    def present(binaries: tuple[str, ...], config_dir: str) -> bool:
        return any(shutil.which(b) for b in binaries) or layout.at(config_dir).is_dir()

    crio = present(("crio",), "/etc/crio")
    return {
        "podman": present(("podman",), "/etc/containers") or crio,  # CRI-O reads the same hooks.d
        "crio": crio,
        "docker": present(("dockerd",), "/etc/docker"),
        "containerd": present(("containerd",), "/etc/containerd"),
    }


def _run_all(
    table: dict[str, Callable[[Layout, Settings, bool, Say], None]],
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
        try:
            table[name](layout, settings, dry_run, say)
        except EngineConfigError as exc:
            say(f"{name}: ERROR: {exc}")
            failures += 1
    return failures


def register_all(
    dry_run: bool = False,
    engines: list[str] | None = None,
    layout: Layout | None = None,
    settings: Settings | None = None,
    say: Say = _say,
) -> int:
    """Register with every engine present (or those named); returns how many failed."""
    return _run_all(REGISTER, engines, dry_run, layout, settings, say)


def unregister_all(
    dry_run: bool = False,
    engines: list[str] | None = None,
    layout: Layout | None = None,
    settings: Settings | None = None,
    say: Say = _say,
) -> int:
    """Undo :func:`register_all`; returns how many engines failed."""
    return _run_all(UNREGISTER, engines, dry_run, layout, settings, say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hook.admin.engines", description="Register dpdk-oci-hook with container engines.")
    parser.add_argument("action", choices=("register", "unregister", "detect"))
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--engines", help=f"comma-separated subset of {','.join(ENGINES)} (default: those installed)")
    parser.add_argument("--root", default="/", help="prefix for every engine config path (default /)")
    parser.add_argument("--python", default=sys.executable, help="hook interpreter (default: this one)")
    parser.add_argument("--shim", default="", help=f"runtime wrapper (default: {SHIM_NAME} beside the interpreter)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="host config the hook reads")
    parser.add_argument("--templates", default="", help="directory of the hooks.d templates")
    args = parser.parse_args(argv)
    layout = Layout(root=args.root)
    if args.action == "detect":
        for name, present in detect(layout).items():
            _say(f"{name}: {'installed' if present else 'not installed'}")
        return 0
    engines = None
    if args.engines:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        unknown = sorted(set(engines) - set(ENGINES))
        if unknown:
            parser.error(f"unknown engine(s): {', '.join(unknown)}")
    settings = Settings(python=args.python, shim=args.shim, config=args.config, templates=args.templates)
    run = register_all if args.action == "register" else unregister_all
    failures = run(dry_run=args.dry_run, engines=engines, layout=layout, settings=settings)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
