"""Edits the runtime wrapper makes to an annotated container's OCI spec, as small modifiers.

Each modifier takes the spec (a dict, changed in place) and says what it did; the wrapper
applies them in order and rewrites ``config.json`` once if any changed it.  Only ``os`` is
imported here: the wrapper runs on every runtime call.
"""

from __future__ import annotations

import os

from hook.constants import HOOK_STAGES, SETUP_STAGES, wants_us
from hook.entry import CLIENT_NAME, hook_entry, hook_stage
from hook.errors import WrapperError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def is_ours(spec: Any) -> bool:
    """True when the spec carries any annotation under our prefix (and is no pod sandbox)."""
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    return isinstance(annotations, dict) and wants_us(annotations)


def _same_hook(entry: Any, python: str, stage: str) -> bool:
    """Is ``entry`` our hook for ``stage`` under the same interpreter (either registered form)?"""
    if not isinstance(entry, dict) or hook_stage(entry.get("args")) != stage:
        return False
    path = entry.get("path")
    if isinstance(path, str) and os.path.basename(path) == CLIENT_NAME:  # the native client runs args[1]
        path = entry["args"][1]
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
        raise WrapperError(reason="config.json: 'hooks' is not an object")
    added = []
    for stage in HOOK_STAGES:
        if _has_hook(hooks, stage, python):
            continue
        entries = hooks.setdefault(stage, [])
        if not isinstance(entries, list):
            raise WrapperError(reason=f"config.json: 'hooks.{stage}' is not a list")
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


def apply_modifiers(spec: dict[str, Any], python: str, environ: Mapping[str, str]) -> list[str]:
    """Apply every modifier to an annotated container's spec; what each changed, in order."""
    modifiers: list[Callable[[dict[str, Any]], list[str]]] = [
        lambda s: inject_hooks(s, python, environ),
        lambda s: ["numa-syscalls"] if allow_numa_syscalls(s) else [],
    ]
    done: list[str] = []
    for modify in modifiers:
        done += modify(spec)
    return done
