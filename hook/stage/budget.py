"""The time budget of one hook stage: every external wait gets a deadline derived from it.

Runtimes kill a hook at its timeout (30 s in the hooks the project registers), and a
killed hook cannot roll back.  So the stage keeps well inside it: each wait (the ledger
lock, the switch, the mount helper) is given what is left of the budget, and an exhausted
budget is a clean, rolled-back refusal (:class:`BudgetExceeded`) rather than a SIGKILL.
"""

from __future__ import annotations

import os

from hook.errors import HookError

DEFAULT_BUDGET_S = 20.0  # of the runtime's 30 s: leaves room for rollback and interpreter start
ENV = "DPDK_OCI_HOOK_BUDGET_S"  # tests shorten it


class BudgetExceeded(HookError):
    """A stage ran out of its time budget; what it had done was rolled back."""

    msg_fmt = "{what} did not finish within the hook's {budget:g}s time budget; nothing was left behind"
    exit_code = 14


def _now() -> float:
    return os.times().elapsed  # monotonic since boot, without importing time


class Budget:
    """Seconds left for a stage, counted from its creation."""

    __slots__ = ("total", "_deadline")

    def __init__(self, seconds: float | None = None) -> None:
        if seconds is None:
            try:
                seconds = float(os.environ.get(ENV) or DEFAULT_BUDGET_S)
            except ValueError:
                seconds = DEFAULT_BUDGET_S
        self.total = seconds
        self._deadline = _now() + seconds

    def remaining(self) -> float:
        return max(self._deadline - _now(), 0.0)

    def wait_for(self, cap: float) -> float:
        """What a wait capped at ``cap`` seconds may take now (at least a sliver, so it fails fast)."""
        return max(min(cap, self.remaining()), 0.05)

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise BudgetExceeded(what=what, budget=self.total)
