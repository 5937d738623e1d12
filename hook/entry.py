"""How a runtime starts the hook: the argv and OCI hook entry of one stage, and recognising ours.

The hook is registered as ``PYTHON -I .../hook/__main__.py STAGE``: a script path, not
``-m hook``, because runpy and what it imports add ~6 ms to every container start.  ``-I``
implies ``-P`` (Python >= 3.11), so the script's own directory is not put on ``sys.path`` and
``hook`` is imported from the interpreter's environment like any installed package.
``PYTHON`` must be a full path: given a bare ``python3``, CPython finds "itself" by searching
PATH and loses the virtual environment the hook is installed in.

Where install.sh built the native client (:data:`CLIENT_NAME`, from ``stage/hook_client.c``)
beside the interpreter, entries run ``CLIENT PYTHON -I .../hook/__main__.py STAGE`` instead: the
client exits at once for a container that is not ours, hands the stage to the resident agent
when one listens, and otherwise runs the rest of its argv, the Python hook, on the same state.
It saves a Python start (~10-14 ms) per stage where the agent runs.

Every place that registers the hook (the runtime wrapper, ``oci-hooks``, the runc bundles of
the demo and tests, the hooks.d files) builds its entry here.  Only ``os`` is imported: the
runtime wrapper imports this on every call.
"""

from __future__ import annotations

import os

from hook.constants import ENV_CACHE_DIR, ENV_CONFIG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
CLIENT_NAME = "dpdk-oci-hook-client"
_MAIN_TAIL = os.sep + os.path.join("hook", "__main__.py")
HOOK_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
PASS_ENV = (ENV_CONFIG, ENV_CACHE_DIR, "DPDK_OCI_HOOK_AGENT_SOCKET")  # handed on to the hook when set
# Runtimes kill a hook at its timeout.  The hook keeps its own budget well inside it.
HOOK_TIMEOUT_S = 30


def stage_argv(python: str, stage: str) -> list[str]:
    """The argv (``args`` of an OCI hook entry) that runs ``stage`` of this installed hook."""
    return [python, "-I", MAIN_SCRIPT, stage]


def client_path(python: str) -> str | None:
    """The native client installed beside ``python`` (in the venv's bin), or None."""
    path = os.path.join(os.path.dirname(python), CLIENT_NAME)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def entry_argv(python: str, stage: str) -> list[str]:
    """``args`` of the hook entry: through the native client when it is installed."""
    client = client_path(python)
    return ([client] if client else []) + stage_argv(python, stage)


def hook_entry(stage: str, python: str, environ: Mapping[str, str], timeout_s: int = HOOK_TIMEOUT_S) -> dict[str, Any]:
    """The OCI hook entry that runs ``stage`` under ``python``, isolated, with an explicit env.

    ``environ`` supplies the config path and cache dir to pass on, when it has them.
    """
    env = [HOOK_PATH] + [f"{name}={environ[name]}" for name in PASS_ENV if environ.get(name)]
    args = entry_argv(python, stage)
    return {"path": args[0], "args": args, "env": env, "timeout": timeout_s}


def hook_stage(args: Any) -> str | None:
    """The stage an OCI hook entry's ``args`` run if they are ours, else None.

    Ours: ``-I <dir>/hook/__main__.py STAGE``, or ``-I -m hook STAGE`` as earlier installs
    registered it (still recognised, so an upgrade neither duplicates nor orphans them), either
    behind the native client.
    """
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return None
    if len(args) == 5 and os.path.basename(args[0]) == CLIENT_NAME:
        args = args[1:]
    rest = args[1:]
    if len(rest) == 3 and rest[0] == "-I" and rest[1].endswith(_MAIN_TAIL):
        return rest[2]
    if len(rest) == 4 and rest[:3] == ["-I", "-m", "hook"]:
        return rest[3]
    return None
