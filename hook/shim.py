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

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on every runtime call: only for the checker
    from collections.abc import Mapping
    from typing import Any

PREFIX = "dpdk-oci-hook/"
DEFAULT_RUNTIME = "/usr/sbin/runc"
RUNTIME_FILE = "/etc/dpdk-oci-hook/runtime.json"
ENV_RUNTIME = "DPDK_OCI_RUNTIME"
ENV_DEBUG_LOG = "DPDK_OCI_RUNTIME_DEBUG_LOG"
HOOK_STAGES = ("createRuntime", "poststop")
SETUP_STAGES = ("prestart", "createRuntime")  # either one already running our hook counts
HOOK_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
PASS_ENV = ("DPDK_OCI_HOOK_CONFIG", "DPDK_OCI_HOOK_CACHE_DIR")  # handed on to the hook when set
HOOK_TIMEOUT_S = 30
MAX_CONFIG_BYTES = 16 << 20
EXIT_FAILED = 1

# runc and crun global options that take a value (``--root X`` or ``--root=X``; Go also
# accepts one dash).  Any other option before the command is a switch.
GLOBAL_VALUE_OPTIONS = frozenset({"log", "log-format", "root", "criu", "rootless", "cgroup-manager"})
# ``create``/``run`` options that take a value
CREATE_VALUE_OPTIONS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds"})
INJECT_COMMANDS = frozenset({"create", "run"})
# containerd's and CRI-O's marker of a pod's sandbox container, which gets no DPDK resources
SANDBOX_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")


class ShimError(Exception):
    """The wrapper cannot do what an annotated container needs: the create must fail."""


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


def is_ours(spec: Any) -> bool:
    """True when the spec carries any annotation under our prefix (and is no pod sandbox)."""
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    if not isinstance(annotations, dict) or is_sandbox(annotations):
        return False
    return any(isinstance(k, str) and k.startswith(PREFIX) for k in annotations)


def is_sandbox(annotations: dict[str, Any]) -> bool:
    """A Kubernetes pod's sandbox (pause) container: CRI copies pod annotations onto it too."""
    return any(annotations.get(key) == "sandbox" for key in SANDBOX_KEYS)


def hook_entry(stage: str, python: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The OCI hook entry that runs the hook stage under ``python``, isolated, with an explicit env."""
    from hook.entry import stage_argv

    env = [HOOK_PATH] + [f"{name}={environ[name]}" for name in PASS_ENV if environ.get(name)]
    return {
        "path": python,
        "args": stage_argv(python, stage),
        "env": env,
        "timeout": HOOK_TIMEOUT_S,
    }


def _same_hook(entry: Any, python: str, stage: str) -> bool:
    """Is ``entry`` our hook for ``stage`` under the same interpreter (either registered form)?"""
    from hook.entry import hook_stage

    if not isinstance(entry, dict) or hook_stage(entry.get("args")) != stage:
        return False
    path = entry.get("path")
    return isinstance(path, str) and (path == python or _interpreter(path) == _interpreter(python))


def _interpreter(path: str) -> str:
    """``path`` with its directory resolved but not its last link: a venv's ``bin/python3``
    links to the system interpreter, and resolving it would lose which venv it is."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _has_hook(hooks: dict[str, Any], stage: str, python: str) -> bool:
    """Our hook for ``stage`` is there; for setup, ours under prestart or createRuntime counts."""
    kinds = SETUP_STAGES if stage in SETUP_STAGES else (stage,)
    for where in kinds:
        entries = hooks.get(where)
        if isinstance(entries, list) and any(_same_hook(e, python, kind) for e in entries for kind in kinds):
            return True
    return False


def inject_hooks(spec: dict[str, Any], python: str, environ: Mapping[str, str]) -> list[str]:
    """Add our createRuntime and poststop hooks to ``spec`` unless there; returns the stages added.

    A setup hook of ours already in ``prestart`` or ``createRuntime`` (e.g. put there by a
    hooks.d file) counts as present, so setup never runs twice.
    """
    hooks = spec.get("hooks")
    if hooks is None:
        hooks = spec["hooks"] = {}
    if not isinstance(hooks, dict):
        raise ShimError("config.json: 'hooks' is not an object")
    added = []
    for stage in HOOK_STAGES:
        if _has_hook(hooks, stage, python):
            continue
        entries = hooks.setdefault(stage, [])
        if not isinstance(entries, list):
            raise ShimError(f"config.json: 'hooks.{stage}' is not a list")
        entries.append(hook_entry(stage, python, environ))
        added.append(stage)
    return added


NUMA_SYSCALLS = ("get_mempolicy", "mbind", "set_mempolicy")


def allow_numa_syscalls(spec: dict[str, Any]) -> bool:
    """Let DPDK's EAL set its memory policy under a seccomp profile; True if the spec changed.

    Docker's (and containerd CRI's) default profile allows these three calls only with
    CAP_SYS_NICE, and EAL then fails with "set_mempolicy: Operation not permitted ... Cannot
    init memory".  Allowing the three calls grants far less than CAP_SYS_NICE would.
    """
    seccomp = spec.get("linux", {}).get("seccomp") if isinstance(spec.get("linux"), dict) else None
    if not isinstance(seccomp, dict) or seccomp.get("defaultAction") == "SCMP_ACT_ALLOW":
        return False
    rules = seccomp.setdefault("syscalls", [])
    if not isinstance(rules, list):
        return False
    allowed = {name for rule in rules if isinstance(rule, dict) and rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("args")
               for name in rule.get("names", [])}
    missing = [name for name in NUMA_SYSCALLS if name not in allowed]
    if not missing:
        return False
    rules.append({"names": missing, "action": "SCMP_ACT_ALLOW"})
    return True


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file beside it, fsync, rename; mode and owner kept."""
    st = os.stat(path)
    tmp = f"{path}.dpdk-oci-runtime.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, st.st_mode & 0o7777)
    try:
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
        except PermissionError:
            pass  # rootless: the file is ours anyway
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


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
    added = inject_hooks(spec, python, environ)
    if allow_numa_syscalls(spec):
        added.append("numa-syscalls")
    if not added:
        return "present"
    try:
        write_atomic(path, json.dumps(spec, separators=(",", ":")).encode())
    except OSError as exc:
        raise ShimError(f"cannot rewrite {path}: {exc.strerror or exc}") from exc
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
                raise ShimError(f"{settings_file}: not valid JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise ShimError(f"{settings_file}: expected a JSON object")
            runtime = runtime or str(data.get("runtime") or "")
            debug_log = debug_log or str(data.get("debug_log") or "")
    runtime = runtime or DEFAULT_RUNTIME
    if not os.path.isabs(runtime):
        raise ShimError(f"the real runtime must be an absolute path, got {runtime!r}")
    return runtime, debug_log


def _debug(log_path: str, record: dict[str, Any]) -> None:
    if not log_path:
        return
    import json
    import time

    record = {"time": time.time(), "pid": os.getpid(), **record}
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
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
            raise ShimError(f"the real runtime {runtime} is this wrapper itself")
        if command in INJECT_COMMANDS:
            bundle = bundle_dir(command_args, os.getcwd())
            action = prepare_bundle(bundle, sys.executable, environ)
    except ShimError as exc:
        _debug(debug_log, {"argv": args, "command": command, "bundle": bundle, "action": "error", "error": str(exc)})
        _report(str(exc), options)
        return EXIT_FAILED
    _debug(debug_log, {"argv": args, "command": command, "bundle": bundle, "action": action, "runtime": runtime})
    try:
        os.execv(runtime, [runtime, *args])
    except OSError as exc:
        _report(f"cannot run {runtime}: {exc.strerror or exc}", options)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return EXIT_FAILED  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
