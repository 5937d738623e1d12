"""Named fault points for the fault-matrix tests: the hook kills itself where a test asks.

``DPDK_OCI_HOOK_FAULT=<point>`` in the hook's environment makes :func:`point` SIGKILL the
hook when it reaches that point, exactly as a runtime's hook timeout or an OOM kill would.
Only the tests set it; without it a point costs one dict lookup.

Points, in the order a stage reaches them:

createRuntime: ``reserved`` (pending entry saved), ``pool-grown``, ``socket-dir``,
``mounts``, ``kernel-ports``, ``switch``, ``socket-mounts``, ``pinned``, ``active``.
poststop and gc: ``releasing`` (entry marked), ``switch-removed``, ``kernel-ports-removed``,
``socket-dir-removed``, ``released``.
"""

from __future__ import annotations

import os

ENV = "DPDK_OCI_HOOK_FAULT"
SETUP_POINTS = ("reserved", "pool-grown", "socket-dir", "mounts", "kernel-ports", "switch", "socket-mounts", "pinned", "active")
RELEASE_POINTS = ("releasing", "switch-removed", "kernel-ports-removed", "socket-dir-removed", "released")


def point(name: str) -> None:
    """Die here, by SIGKILL, if the tests asked for this point."""
    if os.environ.get(ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
