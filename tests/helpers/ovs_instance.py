"""A private OVS-DPDK instance for tests: its own database, rundir, logs and DPDK file prefix.

Nothing is shared with a system OVS: ovsdb-server listens on ``<dir>/db.sock`` and
ovs-vswitchd runs with ``OVS_RUNDIR=<dir>``, so dpdkvhostuser sockets land in ``<dir>``.
The PMD thread is told to sleep when idle (``pmd-maxsleep``) so it does not burn a core.

Daemons are stopped by the pids in their own pidfiles (checked against /proc cmdline),
never by name.  ``KEEP_OVS=1`` keeps the directory (database, logs) for post-mortems.

    with OvsInstance() as ovs:
        ovs.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from types import TracebackType
from typing import Any

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
HUGE_DIR = "/dev/hugepages"
DPDK_RUNTIME_DIR = "/var/run/dpdk"
DATAPATH_TAP = "ovs-netdev"  # the userspace datapath's own tap, one per network namespace
PMD_MAXSLEEP_US = 10000  # the most OVS 3.1 allows; an idle PMD then uses ~1% of its core


def _decode(cell: Any) -> Any:
    """An OVSDB JSON cell as plain Python."""
    if isinstance(cell, list) and len(cell) == 2:
        kind, value = cell
        if kind == "map":
            return {_decode(k): _decode(v) for k, v in value}
        if kind == "set":
            return [_decode(v) for v in value]
        if kind in ("uuid", "named-uuid"):
            return value
    return cell


class OvsError(RuntimeError):
    """The private OVS instance could not be started or driven."""


class OvsInstance:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, socket_mem_mb: int = 256, pmd_cpu_mask: str = "0x2", start_timeout_s: float = 30.0) -> None:
        self.socket_mem_mb = socket_mem_mb
        self.pmd_cpu_mask = pmd_cpu_mask
        self.start_timeout_s = start_timeout_s
        self.file_prefix = f"ovst{secrets.token_hex(4)}"
        self.dir = ""
        self.db = ""
        self.rundir = ""
        self.vsctl_path = shutil.which("ovs-vsctl") or "/usr/bin/ovs-vsctl"
        self._env: dict[str, str] = {}
        self._names: list[str] = []
        self._datapath_tap_ours = False

    # --- paths ----------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def vswitchd_log(self) -> str:
        return self.path("ovs-vswitchd.log")

    def pid(self, daemon: str) -> int | None:
        """The pid in ``<dir>/<daemon>.pid`` if that process is still ours and alive."""
        try:
            with open(self.path(f"{daemon}.pid"), encoding="ascii") as fh:
                pid = int(fh.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        if self.dir not in cmdline or state in ("Z", "X"):
            return None  # pid reused by someone else, or a zombie
        return pid

    # --- driving it ---------------------------------------------------------------

    def _run(self, argv: list[str], timeout: float = 15.0) -> str:
        proc = subprocess.run(argv, env=self._env, cwd="/", capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise OvsError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def vsctl(self, *args: str, wait: bool = True) -> str:
        """Run ovs-vsctl against this instance's database; stdout, or OvsError."""
        argv = [self.vsctl_path, f"--db={self.db}", "--timeout=10"]
        if not wait:
            argv.append("--no-wait")
        return self._run(argv + list(args))

    def unique(self, prefix: str) -> str:
        """A name not used before in this instance (bridge/port names: keep it <= 15 chars)."""
        name = f"{prefix}{len(self._names) + 1}"
        self._names.append(name)
        return name

    def row(self, table: str, record: str) -> dict[str, Any] | None:
        """One OVSDB row as plain Python (maps -> dict, sets -> list), or None if absent."""
        out = self.vsctl("--format=json", "--if-exists", "list", table, record, wait=False)
        doc = json.loads(out)
        if not doc["data"]:
            return None
        return {k: _decode(v) for k, v in zip(doc["headings"], doc["data"][0], strict=True)}

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.vswitchd_log, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    # --- life cycle -------------------------------------------------------------

    def start(self) -> OvsInstance:
        # Short path: <dir>/<port name> must fit in sun_path (108 bytes).
        self.dir = tempfile.mkdtemp(prefix="ovs", dir="/tmp")
        self._datapath_tap_ours = not os.path.exists(f"/sys/class/net/{DATAPATH_TAP}")  # else another switch's
        self.db = f"unix:{self.path('db.sock')}"
        self.rundir = self.dir
        self._env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir, OVS_LOGDIR=self.dir)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        conf = self.path("conf.db")
        self._run(["ovsdb-tool", "create", conf, SCHEMA])
        common = ["--detach", "-vconsole:off", "-vsyslog:off"]
        with open(self.path("console.log"), "ab") as console:
            subprocess.run(
                [
                    "ovsdb-server",
                    conf,
                    f"--remote=punix:{self.path('db.sock')}",
                    f"--pidfile={self.path('ovsdb-server.pid')}",
                    f"--log-file={self.path('ovsdb-server.log')}",
                    f"--unixctl={self.path('ovsdb-server.ctl')}",
                    *common,
                ],
                env=self._env,
                cwd="/",
                stdout=console,
                stderr=console,
                timeout=15,
                check=True,
            )
        self.vsctl("init", wait=False)
        self.vsctl(
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            f'other_config:dpdk-extra="--no-pci --no-telemetry --file-prefix={self.file_prefix} --huge-dir {HUGE_DIR}"',
            f"other_config:dpdk-socket-mem={self.socket_mem_mb}",
            f"other_config:pmd-cpu-mask={self.pmd_cpu_mask}",
            f"other_config:pmd-maxsleep={PMD_MAXSLEEP_US}",
            wait=False,
        )
        with open(self.path("console.log"), "ab") as console:
            subprocess.run(
                [
                    "ovs-vswitchd",
                    self.db,
                    f"--pidfile={self.path('ovs-vswitchd.pid')}",
                    f"--log-file={self.vswitchd_log}",
                    f"--unixctl={self.path('ovs-vswitchd.ctl')}",
                    *common,
                ],
                env=self._env,
                cwd="/",
                stdout=console,
                stderr=console,
                timeout=60,
                check=False,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.pid("ovs-vswitchd") is None:
                break
            if self.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized", wait=False).strip() == "true":
                return
            time.sleep(0.1)
        raise OvsError(f"ovs-vswitchd did not initialize DPDK in {self.dir}:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop both daemons by pidfile pid, remove their DPDK leftovers and (unless KEEP_OVS=1) the dir."""
        if not self.dir:
            return
        # netdev bridges are kernel tap devices that outlive ovs-vswitchd: delete them first
        if self.pid("ovs-vswitchd") and self.pid("ovsdb-server"):
            try:
                # a waited-for write: ovs-vswitchd first catches up with bridges deleted with
                # --no-wait (a read-only command does not wait)
                self.vsctl("set", "Open_vSwitch", ".", f"external_ids:stop-sync={time.monotonic_ns()}")
                for bridge in self.vsctl("list-br", wait=False).split():
                    self.vsctl("--if-exists", "del-br", bridge)
            except (OvsError, subprocess.TimeoutExpired):
                pass
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            self._kill(daemon)
        self._remove_leaked_taps()
        for leftover in glob.glob(os.path.join(HUGE_DIR, f"{self.file_prefix}*")):
            try:
                os.unlink(leftover)
            except OSError:
                pass
        shutil.rmtree(os.path.join(DPDK_RUNTIME_DIR, self.file_prefix), ignore_errors=True)
        if os.environ.get("KEEP_OVS") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = ""

    def _remove_leaked_taps(self) -> None:
        """Delete taps of bridges named by :meth:`unique` that outlived ovs-vswitchd, and say so.

        A bridge deleted with ``--no-wait`` just before ovs-vswitchd stops keeps its (persistent)
        tap, as does the datapath's ``ovs-netdev``. Only names this instance minted, and
        ``ovs-netdev`` if it was absent at start, are touched: nothing of the host's.
        """
        mine = self._names + ([DATAPATH_TAP] if self._datapath_tap_ours else [])
        leaked = [name for name in mine if os.path.exists(f"/sys/class/net/{name}/tun_flags")]
        for name in leaked:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False, timeout=10)
        if leaked:
            warnings.warn(f"private OVS left taps behind (removed): {', '.join(leaked)}", stacklevel=2)

    def _kill(self, daemon: str, grace_s: float = 5.0) -> None:
        pid = self.pid(daemon)
        if pid is None:
            return
        for sig, wait_s in ((signal.SIGCONT, 0.0), (signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self.pid(daemon) != pid:
                    return
                time.sleep(0.05)

    def __enter__(self) -> OvsInstance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
