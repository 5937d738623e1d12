"""The shim lets EAL set memory policy under a seccomp profile, without CAP_SYS_NICE."""

from __future__ import annotations

from typing import Any

from hook.runtime.spec import allow_numa_syscalls


def spec(seccomp: Any) -> dict[str, Any]:
    return {"linux": {"seccomp": seccomp}} if seccomp is not None else {"linux": {}}


def test_adds_the_three_calls_once() -> None:
    """A deny-by-default profile gains one allow rule for the missing calls, and only once."""
    s = spec({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "get_mempolicy"], "action": "SCMP_ACT_ALLOW"}]})
    assert allow_numa_syscalls(s)
    assert s["linux"]["seccomp"]["syscalls"][-1] == {"names": ["mbind", "set_mempolicy"], "action": "SCMP_ACT_ALLOW"}
    assert not allow_numa_syscalls(s)


def test_leaves_other_specs_alone() -> None:
    """No profile, or an allow-by-default one, is not touched; a conditional allow does not count."""
    assert not allow_numa_syscalls(spec(None))
    assert not allow_numa_syscalls(spec({"defaultAction": "SCMP_ACT_ALLOW"}))
    conditional = spec({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["get_mempolicy", "mbind", "set_mempolicy"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]})
    assert allow_numa_syscalls(conditional)
