"""``dpdk-oci-runtime``: a runc-compatible runtime wrapper for engines that read no hooks.d.

Docker and containerd never look at ``hooks.d``; they call an OCI runtime binary.  Registered
as that binary, this wrapper does one thing: on ``create`` (and ``run``) of a container whose
``config.json`` carries an annotation under ``dpdk-oci-hook/``, it adds the hook to
``hooks.createRuntime`` and ``hooks.poststop`` (once) and rewrites ``config.json``
atomically.  Then it ``execv``s the real runtime with the very same argv, so stdio, signals
and the exit code are the runtime's own.  Every other call is the same exec and nothing else.

All the work (reservation, ports, mounts, release) is done by the hook, exactly as under
podman or a hand-written bundle: one code path for every engine.  A Kubernetes pod's sandbox
(pause) container, which CRI gives the pod's annotations too, is left alone.

The hook entry runs the wrapper's own interpreter (its venv) on the hook's script
(``hook.entry``) with ``args[0]`` the interpreter's full path, an explicit env (PATH, plus
``DPDK_OCI_HOOK_CONFIG``/``DPDK_OCI_HOOK_CACHE_DIR`` when the wrapper has them) and a timeout.
A setup hook of ours already in ``prestart`` or ``createRuntime`` counts as present.

The real runtime: ``$DPDK_OCI_RUNTIME``, else ``"runtime"`` in
``/etc/dpdk-oci-hook/runtime.json`` (``{"runtime": "/usr/bin/crun"}``), else
``/usr/sbin/runc``.  ``$DPDK_OCI_RUNTIME_DEBUG_LOG`` (or ``"debug_log"`` in that file) names a
file that gets one JSON line per call: what was asked and what the wrapper did.

Only ``os`` and ``sys`` are imported on every call; ``json`` only when a bundle is read or
the runtime file exists.
"""

from __future__ import annotations

import os
import sys

from hook.constants import PREFIX
from hook.errors import WrapperError, exit_code
from hook.host.fsutil import append_line, replace_file
from hook.runtime.spec import apply_modifiers, is_ours

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on every runtime call: only for the checker
    from collections.abc import Mapping
    from typing import Any

DEFAULT_RUNTIME = "/usr/sbin/runc"
RUNTIME_FILE = "/etc/dpdk-oci-hook/runtime.json"
ENV_RUNTIME = "DPDK_OCI_RUNTIME"
ENV_DEBUG_LOG = "DPDK_OCI_RUNTIME_DEBUG_LOG"
MAX_CONFIG_BYTES = 16 << 20

# runc and crun global options that take a value (``--root X`` or ``--root=X``; Go also
# accepts one dash).  Any other option before the command is a switch.
GLOBAL_VALUE_OPTIONS = frozenset({"log", "log-format", "root", "criu", "rootless", "cgroup-manager"})
# ``create``/``run`` options that take a value
CREATE_VALUE_OPTIONS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds"})
INJECT_COMMANDS = frozenset({"create", "run"})


def _option(arg: str) -> tuple[str, str | None] | None:
    """``("root", "/x")`` for ``--root=/x``, ``("root", None)`` for ``--root``; None if not an option."""
    if len(arg) < 2 or arg[0] != "-" or arg == "--":
        return None
    name = arg[2:] if arg.startswith("--") else arg[1:]
    key, sep, value = name.partition("=")
    return (key, value) if sep else (key, None)


def parse_command(argv: list[str]) -> tuple[dict[str, str], str | None, list[str]]:
    """Split runtime arguments into (global options with values, command, the command's arguments)."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        opt = _option(arg)
        if opt is None:
            return options, arg, argv[i + 1 :]
        key, value = opt
        if key in GLOBAL_VALUE_OPTIONS:
            if value is None:
                i += 1
                value = argv[i] if i < len(argv) else ""
            options[key] = value
        i += 1
    if i < len(argv):
        return options, argv[i], argv[i + 1 :]
    return options, None, []


def bundle_dir(command_args: list[str], cwd: str) -> str:
    """The bundle of ``create``/``run``: ``--bundle``/``-b`` or the working directory."""
    bundle = ""
    i = 0
    while i < len(command_args):
        arg = command_args[i]
        if arg == "--":
            break
        opt = _option(arg)
        if opt is not None and opt[0] in CREATE_VALUE_OPTIONS:
            key, value = opt
            if value is None:
                i += 1
                value = command_args[i] if i < len(command_args) else ""
            if key in ("bundle", "b"):
                bundle = value
        i += 1
    return os.path.normpath(os.path.join(cwd, bundle)) if bundle else cwd


def prepare_bundle(bundle: str, python: str, environ: Mapping[str, str]) -> str:
    """Inject our hooks into ``bundle/config.json`` if the container is ours; returns what was done."""
    import json

    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return "no-config"  # the runtime reports it
    if len(raw) > MAX_CONFIG_BYTES or PREFIX.encode() not in raw:
        return "not-ours"  # cheap: our prefix appears nowhere in the file
    try:
        spec = json.loads(raw)
    except ValueError:
        return "not-ours"  # the runtime reports a broken config.json
    if not is_ours(spec):
        return "not-ours"
    added = apply_modifiers(spec, python, environ)
    if not added:
        return "present"
    try:
        replace_file(path, json.dumps(spec, separators=(",", ":")).encode(), keep_owner=True)
    except OSError as exc:
        raise WrapperError(reason=f"cannot rewrite {path}: {exc.strerror or exc}") from exc
    return "injected " + ",".join(added)


def runtime_settings(environ: Mapping[str, str], settings_file: str = RUNTIME_FILE) -> tuple[str, str]:
    """(real runtime, debug log path or "") from the environment, the runtime file, the default."""
    runtime = environ.get(ENV_RUNTIME, "")
    debug_log = environ.get(ENV_DEBUG_LOG, "")
    if not runtime or not debug_log:
        try:
            with open(settings_file, "rb") as fh:
                raw = fh.read(65536)
        except OSError:
            raw = b""
        if raw:
            import json

            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise WrapperError(reason=f"{settings_file}: not valid JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise WrapperError(reason=f"{settings_file}: expected a JSON object")
            runtime = runtime or str(data.get("runtime") or "")
            debug_log = debug_log or str(data.get("debug_log") or "")
    runtime = runtime or DEFAULT_RUNTIME
    if not os.path.isabs(runtime):
        raise WrapperError(reason=f"the real runtime must be an absolute path, got {runtime!r}")
    return runtime, debug_log


def _debug(log_path: str, record: dict[str, Any]) -> None:
    if not log_path:
        return
    import json
    import time

    record = {"time": time.time(), "pid": os.getpid(), **record}
    try:
        append_line(log_path, json.dumps(record), 0o600)
    except OSError:
        pass  # a debug log never fails a container


def _report(message: str, options: dict[str, str]) -> None:
    """Tell the caller: stderr, and runc's ``--log`` file (containerd reads errors from it)."""
    sys.stderr.write(f"dpdk-oci-runtime: {message}\n")
    log_path = options.get("log")
    if not log_path:
        return
    import json
    import time

    if options.get("log-format") == "json":
        line = json.dumps({"level": "error", "msg": f"dpdk-oci-runtime: {message}", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    else:
        line = f'level=error msg="dpdk-oci-runtime: {message}"'
    try:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Inject hooks when asked to create an annotated container, then become the real runtime."""
    argv = sys.argv if argv is None else argv
    args = argv[1:]
    options, command, command_args = parse_command(args)
    environ = os.environ
    debug_log = environ.get(ENV_DEBUG_LOG, "")
    action = "pass"
    bundle = ""
    try:
        runtime, debug_log = runtime_settings(environ)
        if os.path.realpath(runtime) == os.path.realpath(argv[0]):
            raise WrapperError(reason=f"the real runtime {runtime} is this wrapper itself")
        if command in INJECT_COMMANDS:
            bundle = bundle_dir(command_args, os.getcwd())
            action = prepare_bundle(bundle, sys.executable, environ)
    except WrapperError as exc:
        _debug(debug_log, {"argv": args, "command": command, "bundle": bundle, "action": "error", "error": str(exc)})
        _report(str(exc), options)
        return exit_code(exc)
    _debug(debug_log, {"argv": args, "command": command, "bundle": bundle, "action": action, "runtime": runtime})
    try:
        os.execv(runtime, [runtime, *args])
    except OSError as exc:
        _report(f"cannot run {runtime}: {exc.strerror or exc}", options)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
