"""check_own_cgroups: a container whose cgroup holds another live instance is refused when pinning would touch the other."""

from __future__ import annotations

import pytest

from hook.errors import CgroupError
from hook.host.cgroups import check_own_cgroups
from hook.model import Reservation

DUP = "/sys/fs/cgroup/cpuset/dup"


def reservation(key: str, cpus: list[int], cgroups: list[str], pid: int) -> Reservation:
    return Reservation(key=key, container_id="dup", state="active", backend="ovs", numa_node=0, cpus=cpus, hugepage_size_kib=2048,
                       hugepages_mib=32, bundle=f"/bundles/{key}", pid=pid, pid_start=1, cgroups=cgroups)


def test_a_live_instance_in_the_same_cgroup_is_named() -> None:
    """The refusal names the shared cgroup, the other container, its bundle and pid, and what to change."""
    first = reservation("a", [1], [DUP], pid=100)
    second = reservation("b", [0], [DUP], pid=200)
    with pytest.raises(CgroupError) as info:
        check_own_cgroups(second, [first, second], alive=lambda res: True)
    message = str(info.value)
    assert message.startswith(f"cpuset {DUP}: container dup shares this cgroup with the running container dup (bundle /bundles/a, pid 100)")
    assert "cgroupsPath" in message
    assert info.value.exit_code == 9


@pytest.mark.parametrize(
    ("case", "other_cgroups", "alive", "cpus"),
    [
        ("own cgroup", ["/sys/fs/cgroup/cpuset/a"], True, [1]),
        ("the other is gone", [DUP], False, [1]),
        ("an entry of an older ledger", [], True, [1]),
        ("no cores to pin on either side", [DUP], True, []),
    ],
)
def test_allowed(case: str, other_cgroups: list[str], alive: bool, cpus: list[int]) -> None:
    """Distinct cgroups, a dead holder, an entry without recorded cgroups, or nothing to pin: no refusal."""
    first = reservation("a", cpus, other_cgroups, pid=100)
    second = reservation("b", cpus, [DUP], pid=200)
    check_own_cgroups(second, [first, second], alive=lambda res: alive)
