"""How a runtime starts the hook: the argv of one stage, and recognising ours in a spec.

The hook is registered as ``PYTHON -I .../hook/__main__.py STAGE``: a script path, not
``-m hook``, because runpy and what it imports add ~6 ms to every container start.  ``-I``
implies ``-P`` (Python >= 3.11), so the script's own directory is not put on ``sys.path`` and
``hook`` is imported from the interpreter's environment like any installed package.
``PYTHON`` must be a full path: given a bare ``python3``, CPython finds "itself" by searching
PATH and loses the virtual environment the hook is installed in.

Only ``os`` is imported: the runtime wrapper imports this on every call.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
_MAIN_TAIL = os.sep + os.path.join("hook", "__main__.py")


def stage_argv(python: str, stage: str) -> list[str]:
    """The argv (``args`` of an OCI hook entry) that runs ``stage`` of this installed hook."""
    return [python, "-I", MAIN_SCRIPT, stage]


def hook_stage(args: Any) -> str | None:
    """The stage an OCI hook entry's ``args`` run if they are ours, else None.

    Ours: ``-I <dir>/hook/__main__.py STAGE``, or ``-I -m hook STAGE`` as earlier installs
    registered it (still recognised, so an upgrade neither duplicates nor orphans them).
    """
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return None
    rest = args[1:]
    if len(rest) == 3 and rest[0] == "-I" and rest[1].endswith(_MAIN_TAIL):
        return rest[2]
    if len(rest) == 4 and rest[:3] == ["-I", "-m", "hook"]:
        return rest[3]
    return None
