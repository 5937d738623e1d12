"""Pure merge logic for engine configs: text in, text out, nothing read or written.

- hooks.d: :func:`render_hook` fills a template; :func:`hook_file_is_ours` recognises ours.
- Docker ``daemon.json``: :func:`docker_merge` / :func:`docker_unmerge` add and remove
  ``runtimes.dpdk``, keeping every other key in order.
- containerd ``config.toml``: :func:`containerd_merge` / :func:`containerd_unmerge` append and
  take out a marked block.  containerd 1.6 ``imports`` replace a plugin's whole section
  (checked: an imported file that names the CRI plugin drops the main file's CRI settings),
  so a drop-in would not do.
- CRI-O: :func:`crio_hooks_dirs` is its effective ``hooks_dir``; :func:`crio_dropin` the
  drop-in that adds ours, when it is missing.

A text that does not parse raises EngineConfigError; such a file is never written.
"""

from __future__ import annotations

import json
import os
import tomllib
from typing import Any

from hook.admin.engines.base import DEFAULT_HOOKS_DIR, RUNTIME_NAME, SHIM_NAME
from hook.entry import MAIN_SCRIPT, client_path, hook_stage
from hook.errors import EngineConfigError

POD_ANNOTATIONS = ["dpdk-oci-hook/*"]
BLOCK_BEGIN = "# BEGIN dpdk-oci-hook: runtime for DPDK containers (install.sh --uninstall removes this block)"
BLOCK_END = "# END dpdk-oci-hook"
CRI_PLUGIN = {1: "cri", 2: '"io.containerd.grpc.v1.cri"', 3: '"io.containerd.cri.v1.runtime"'}


# --- hooks.d -----------------------------------------------------------------------------


def render_hook(template: str, python: str, config: str) -> str:
    """A hooks.d file from its template: the interpreter, the hook's script and config path filled in."""
    for name, value in (("python", python), ("config", config)):
        if not os.path.isabs(value):
            raise EngineConfigError(reason=f"{name} must be an absolute path, got {value!r}")
    text = template.replace("@PYTHON@", python).replace("@HOOK_MAIN@", MAIN_SCRIPT).replace("@CONFIG@", config)
    data = json.loads(text)  # a template that no longer parses is a bug
    client = client_path(python)
    if client is not None:  # the native client runs the same argv behind it (hook/entry.py)
        data["hook"]["path"] = client
        data["hook"]["args"] = [client, *data["hook"]["args"]]
        text = json.dumps(data, indent=2) + "\n"
    return text


def hook_file_is_ours(text: str | None) -> bool:
    """A hooks.d file runs our hook (in this install's form or an earlier one)."""
    try:
        data = json.loads(text or "")
        return isinstance(data, dict) and hook_stage(data.get("hook", {}).get("args")) is not None
    except (ValueError, AttributeError, TypeError):
        return False


# --- Docker daemon.json --------------------------------------------------------------------


def load_daemon_json(text: str | None, path: str) -> dict[str, Any]:
    """daemon.json as a dict ({} for no file or a blank one); refuses what Docker would refuse."""
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
        data = load_daemon_json(text, "daemon.json")
    except EngineConfigError:
        return False
    return _is_our_runtime((data.get("runtimes") or {}).get(RUNTIME_NAME))


def docker_had_runtimes(original: str | None) -> bool:
    """The original daemon.json had a ``runtimes`` key (kept, maybe empty, when ours goes)."""
    try:
        return "runtimes" in load_daemon_json(original, "backup")
    except EngineConfigError:
        return False


def docker_merge(text: str | None, shim: str, path: str = "daemon.json") -> str:
    """daemon.json with ``runtimes.dpdk = {"path": shim}``; every other key kept, in order."""
    data = load_daemon_json(text, path)
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
    data = load_daemon_json(text, path)
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


# --- containerd config.toml ----------------------------------------------------------------


def parse_toml(text: str, path: str) -> dict[str, Any]:
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
            # the device plugin's Allocate gives the container (not the pod) our annotation
            f"  container_annotations = {json.dumps(POD_ANNOTATIONS)}",
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
    data = parse_toml(original, path)
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


# --- CRI-O ---------------------------------------------------------------------------------


def crio_hooks_dirs(main_text: str | None, dropins: list[tuple[str, str]]) -> list[str]:
    """CRI-O's effective ``hooks_dir``: crio.conf, then drop-ins in name order, last one wins."""
    dirs = [DEFAULT_HOOKS_DIR]
    for name, text in [("crio.conf", main_text), *sorted(dropins)]:
        if text is None:
            continue
        data = parse_toml(text, name)
        value = data.get("crio", {}).get("runtime", {}).get("hooks_dir")
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            dirs = list(value)
    return dirs


def crio_reads(effective: list[str], hooks_dir: str) -> bool:
    """CRI-O's effective ``hooks_dir`` list includes ``hooks_dir``."""
    return os.path.normpath(hooks_dir) in [os.path.normpath(d) for d in effective]


def crio_dropin(effective: list[str], hooks_dir: str) -> str | None:
    """The drop-in that adds ``hooks_dir`` to CRI-O's list, or None if CRI-O reads it already."""
    if crio_reads(effective, hooks_dir):
        return None
    return (
        "# dpdk-oci-hook: CRI-O must read the hooks.d directory that holds our hook.\n"
        "# This keeps the directories configured before; install.sh --uninstall removes this file.\n"
        "[crio.runtime]\n"
        f"hooks_dir = {json.dumps([*effective, hooks_dir])}\n"
    )
