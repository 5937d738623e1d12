"""Test helpers: a host config for the hook pointed at a private OVS, and host-state probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hook.admin.runc_bundle import Interactive, forward_stats


def hugepages_free() -> tuple[int, int]:
    """(free, reserved) 2 MiB pages of the host pool."""
    base = "/sys/kernel/mm/hugepages/hugepages-2048kB"
    return int(Path(base, "free_hugepages").read_text()), int(Path(base, "resv_hugepages").read_text())


def hugepages_mapped_by(pid: int | None) -> int:
    """2 MiB pages a process maps (OVS grows its DPDK heap as ports come: not ours to give back)."""
    if pid is None:
        return 0
    kib = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Shared_Hugetlb:", "Private_Hugetlb:")):
            kib += int(line.split()[1])
    return kib // 2048


def hugetlbfs_mounts() -> list[str]:
    """hugetlbfs mount points in the host namespace other than /dev/hugepages."""
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "hugetlbfs" and fields[1] != "/dev/hugepages":
            points.append(fields[1])
    return points


@dataclass
class HookEnv:
    """A config file and state dir for the hook, private to one test."""

    root: Path
    config_path: str
    state_dir: Path
    log_file: Path

    def environ(self, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment the hook command runs with: this config, plus ``extra_env``."""
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG": self.config_path, **(extra_env or {})}

    def run(self, *args: str, stdin: str = "", timeout: float = 60, extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the installed hook command the way a runtime would (``extra_env``: e.g. a fault point)."""
        return subprocess.run(
            [sys.executable, "-I", "-m", "hook", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
            env=self.environ(extra_env), cwd="/",
        )

    def popen(self, *args: str, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """Start the hook command in the background (e.g. ``gc --watch``), output piped."""
        return subprocess.Popen(
            [sys.executable, "-I", "-m", "hook", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=self.environ(extra_env), cwd="/",
        )

    def ledger(self) -> dict[str, object]:
        """Ledger entries by container id (the ledger itself keys them by instance key)."""
        return {str(e["container_id"]): e for e in self.ledger_entries().values()}  # type: ignore[index]

    def ledger_entries(self) -> dict[str, dict[str, object]]:
        """Ledger entries as stored: by instance key."""
        from hook.host.ledger import Ledger

        return {key: res.to_dict() for key, res in Ledger(str(self.state_dir / "ledger.json")).peek().items()}

    def events(self) -> list[dict[str, object]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def reserved_ports(self, container_id: str) -> list[str]:
        """The switch port names the hook last reserved for a container (from its log: they outlive the release).

        Port names derive from a random instance key, not from the container id.
        """
        for event in reversed(self.events()):
            if event.get("event") == "reserved" and event.get("container_id") == container_id:
                return [str(name) for name in event.get("ports") or []]  # type: ignore[union-attr]
        return []

    def owner_records(self) -> list[str]:
        """Files under state_dir/owners (owner records, and temp files of killed writes)."""
        owners = self.state_dir / "owners"
        return sorted(os.listdir(owners)) if owners.exists() else []


def make_env(
    root: Path,
    ovs_db: str = "",
    ovs_rundir: str = "/var/run/openvswitch",
    bridge: str = "br-test",
    backend: str = "ovs",
    static_sockets: tuple[str, ...] = (),
    pool: str = "0",
    reserved: str = "1",
    budget: str = "512Mi",
    create_bridge: bool = True,
    grow_pool: bool = False,
) -> HookEnv:
    """Write a config.hcl for one test under ``root``."""
    state = root / "state"
    log = root / "hook.log"
    sockets = ", ".join(f'"{s}"' for s in static_sockets)
    text = f"""
state_dir = "{state}"
log_file  = "{log}"
cpus {{
  pool     = "{pool}"
  reserved = "{reserved}"
}}
hugepages {{
  page_size = "2Mi"
  budget    = "{budget}"
  grow_pool = {str(grow_pool).lower()}
}}
switch {{
  backend        = "{backend}"
  bridge         = "{bridge}"
  create_bridge  = {str(create_bridge).lower()}
  ovsdb          = "{ovs_db}"
  ovs_rundir     = "{ovs_rundir}"
  timeout_s      = 10
  static_sockets = [{sockets}]
}}
"""
    path = root / "config.hcl"
    path.write_text(text)
    return HookEnv(root, str(path), state, log)


class HostTestpmd(Interactive):
    """A host testpmd offering a vhost-user socket (it creates it), as in the DPDK how-to.

    Its forwarding lcore is CPU 1 and polls only between :meth:`start_rx` and :meth:`received`.
    """

    def __init__(self, socket_path: str, file_prefix: str) -> None:
        self.file_prefix = file_prefix
        super().__init__(
            [
                "/usr/bin/stdbuf", "-oL", "/usr/bin/dpdk-testpmd", "-l", "0,1", "--main-lcore", "0", "--no-pci", "--in-memory",
                f"--file-prefix={file_prefix}", "-m", "256", "--vdev", f"net_vhost0,iface={socket_path}",
                "--", "-i", "--total-num-mbufs=2048",
            ],
            "host-testpmd",
        )

    def wait_ready(self) -> None:
        self.wait_for("testpmd> ", timeout_s=60)

    def start_rx(self) -> None:
        self.send("set fwd rxonly")
        self.send("start")

    def received(self) -> int:
        self.send("stop")
        self.wait_for("Accumulated forward statistics", timeout_s=20)
        self.wait_for("testpmd> ", timeout_s=20)
        return forward_stats(self.output)["rx"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
        self.finish(timeout_s=20)
