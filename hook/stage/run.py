"""A hook stage from start to exit status: decide "not ours" cheaply, else run the lifecycle.

Runtimes start this on every container (``hook/__main__.py STAGE``).  A container that
carries none of our annotations is decided on the raw state bytes, before even ``json`` is
imported; only ours pay for the rest.
"""

from __future__ import annotations

import gc
import os
import sys

from hook.constants import PREFIX, SETUP_STAGES, wants_us

TYPE_CHECKING = False  # typing (and the re and enum it pulls in) costs ~10 ms per container start
if TYPE_CHECKING:
    from typing import Any


def fail(exc: BaseException, log: Any = None) -> int:
    from hook.errors import exit_code

    sys.stderr.write(f"dpdk-oci-hook: {exc}\n")
    if log is not None:
        log.error("failed", error=str(exc), error_type=type(exc).__name__, **getattr(exc, "fields", {}))
    return exit_code(exc)


def _bundle_path(raw: bytes) -> str | None:
    """The state's ``"bundle"`` when it is a plain string, found without importing json.

    ``import json`` pulls in ``re`` and ``enum``: ~17 ms, more than the rest of the fast path.
    An unescaped ``"bundle"`` followed by ``:`` can only be a key; None (parse it properly)
    for anything less plain.
    """
    at = raw.find(b'"bundle"')
    while at != -1:
        rest = raw[at + 8:].lstrip()
        if rest[:1] == b":" and raw[at - 1:at] != b"\\":
            value = rest[1:].lstrip()
            end = value.find(b'"', 1)
            if value[:1] != b'"' or end == -1 or b"\\" in value[1:end]:
                return None
            try:
                return value[1:end].decode()
            except UnicodeDecodeError:
                return None
        at = raw.find(b'"bundle"', at + 1)
    return None


def _plainly_not_ours(raw: bytes) -> bool | None:
    """True: certainly not ours; None: ask json; False: let the full path decide.  No imports."""
    # where a key of ours starts; our name elsewhere (an install path, a foreign key's middle)
    # does not count.  A key spelled with JSON escapes is missed too: it only means the
    # container gets nothing from us.
    key = b'"' + PREFIX.encode()
    if key in raw:
        return None
    if b'"annotations"' in raw:
        return True
    # runc leaves "annotations" out of the state when there are none: look at the
    # bundle's config.json, where they come from
    bundle = _bundle_path(raw)
    if bundle is None:
        return None
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as fh:
            return True if key not in fh.read() else None
    except OSError:
        return False  # let the full path report it (or ask the ledger at poststop)


def _not_ours(raw: bytes) -> bool:
    """True when the container is certainly not ours: the fast path, before any heavy import."""
    plain = _plainly_not_ours(raw)
    if plain is not None:
        return plain
    import json

    try:
        state = json.loads(raw)
        if "annotations" in state:
            annotations = state["annotations"]
        else:
            with open(os.path.join(state["bundle"], "config.json"), "rb") as fh:
                annotations = json.loads(fh.read()).get("annotations")
    except (ValueError, AttributeError, TypeError, KeyError, OSError):
        return False  # let the full path report it (or ask the ledger at poststop)
    if annotations is None:
        return True
    return isinstance(annotations, dict) and not wants_us(annotations)


def run_stage(stage: str, raw: bytes) -> int:
    """Run one hook stage on the state JSON ``raw``."""
    if _not_ours(raw):
        return 0
    # One short process (or the agent's forked child): a cyclic collection would only cost
    # time, possibly under the ledger lock, and in the agent's child it would touch (and so
    # copy) every page of the parent's heap.
    gc.disable()
    from hook.errors import HookError, HostIOError
    from hook.stage.budget import Budget
    from hook.stage.oci import parse_state, read_bundle_config

    budget = Budget()
    log = None
    try:
        state = parse_state(raw)
        if not state.has_annotations:
            try:
                annotations = read_bundle_config(state.bundle).get("annotations") or {}
            except HookError:
                if stage in SETUP_STAGES:
                    raise
                annotations = {PREFIX: "unknown"}  # bundle gone at poststop: ask the ledger
            if not wants_us(annotations):
                return 0
        from hook import config as config_mod
        from hook.stage import lifecycle
        from hook.stage.eventlog import EventLog

        config = config_mod.load()
        log = EventLog(config.log_file, container_id=state.container_id, stage=stage)
        if stage in SETUP_STAGES:
            lifecycle.prestart(state, config, log, budget)
        else:
            lifecycle.release(state, config, log, budget)
    except HookError as exc:
        return fail(exc, log)
    except OSError as exc:  # a full or read-only state dir, a vanished path: one clear line
        return fail(HostIOError.from_os(exc, doing=f"{stage} failed"), log)
    return 0


def main(stage: str) -> int:
    """Run ``stage`` on the state JSON on stdin; the process's exit status.

    A container that may be ours goes to the resident agent when one listens, else runs here.
    """
    os.chdir("/")
    raw = sys.stdin.buffer.read((1 << 20) + 1)
    # Without json (~6 ms to import, far more on a busy host): what is left undecided here the
    # agent's child decides with run_stage, exactly as run_stage does below without an agent.
    if _plainly_not_ours(raw):
        return 0
    from hook.stage import agent_client

    status = agent_client.run(stage, raw)
    return run_stage(stage, raw) if status is None else status
