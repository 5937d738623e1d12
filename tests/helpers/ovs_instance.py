"""A private OVS-DPDK instance for tests: its own database, rundir, logs and DPDK file prefix.

Nothing is shared with a system OVS: ovsdb-server listens on ``<dir>/db.sock`` and
ovs-vswitchd runs with ``OVS_RUNDIR=<dir>``, so dpdkvhostuser sockets land in ``<dir>``.
The PMD thread is told to sleep when idle (``pmd-maxsleep``) so it does not burn a core.

Daemons are stopped by the pids in their own pidfiles (checked against /proc cmdline),
never by name.  ``KEEP_OVS=1`` keeps the directory (database, logs) for post-mortems.

    with OvsInstance() as ovs:
        ovs.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")

Only one OVS-DPDK can run on a host (the userspace datapath's tap ``ovs-netdev`` is one per
network namespace; hugepages and PMD cores are shared), so the host's own switch (the one in
``/var/run/openvswitch``, e.g. install.sh's embedded switch) is paused while a private
instance runs, and restored after: :func:`host_switch_paused`.  The pause is recorded in
:data:`PAUSE_RECORD`; a session killed before it could restore the switch is caught by the
next one, or by ``python -m tests.helpers.ovs_instance restore-host-switch`` (tests/run runs
it after pytest).
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import FrameType, TracebackType
from typing import Any

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
HUGE_DIR = "/dev/hugepages"
DPDK_RUNTIME_DIR = "/var/run/dpdk"
DATAPATH_TAP = "ovs-netdev"  # the userspace datapath's own tap, one per network namespace
PMD_MAXSLEEP_US = 10000  # the most OVS 3.1 allows; an idle PMD then uses ~1% of its core
OWNER_FILE = "owner.json"  # in an instance's dir: the run that started it (pid, start time) and its DPDK file prefix


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

    def _use_dir(self, path: str) -> None:
        self.dir = path
        self.db = f"unix:{self.path('db.sock')}"
        self.rundir = self.dir
        self._env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir, OVS_LOGDIR=self.dir)

    @classmethod
    def orphan(cls, path: str) -> OvsInstance | None:
        """The instance in ``path`` if the run that started it is gone; None if that run lives or it is not one."""
        try:
            with open(os.path.join(path, OWNER_FILE), encoding="utf-8") as fh:
                owner = json.load(fh)
            pid, start, file_prefix = int(owner["pid"]), str(owner["start"]), str(owner["file_prefix"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _alive(pid, start):
            return None
        instance = cls()
        instance._use_dir(path)
        instance.file_prefix = file_prefix
        return instance

    def start(self) -> OvsInstance:
        # Short path: <dir>/<port name> must fit in sun_path (108 bytes).
        self._use_dir(tempfile.mkdtemp(prefix="ovs", dir="/tmp"))
        self._datapath_tap_ours = not os.path.exists(f"/sys/class/net/{DATAPATH_TAP}")  # else another switch's
        with open(self.path(OWNER_FILE), "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "start": _start_time(os.getpid()), "file_prefix": self.file_prefix}, fh)
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


# --- the host's own switch: paused while a private instance runs ------------------------------

HOST_RUNDIR = "/var/run/openvswitch"
HOST_DB = f"unix:{HOST_RUNDIR}/db.sock"
HOST_VSWITCHD_LOG = "/var/log/openvswitch/ovs-vswitchd.log"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
PAUSE_RECORD = "/run/dpdk-oci-hook-tests/host-switch-paused.json"
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESTORE_COMMAND = f"cd {SOURCE_TREE} && {sys.executable} -m tests.helpers.ovs_instance restore-host-switch"
HOST_STOP_TIMEOUT_S = 30.0
HOST_START_TIMEOUT_S = 60.0


@dataclass
class PausedSwitch:
    """What the host's switch was when it was paused: what it must be again after."""

    how: str  # "systemd" (unit ovs-vswitchd) or "ovs-ctl" (started without systemd, as install.sh does)
    bridges: dict[str, list[str]]  # bridge -> its ports, sorted
    dpdk_initialized: bool
    vswitchd_argv: list[str]
    owner_pid: int  # the run that paused it, and that run's start time (pids are reused)
    owner_start: str
    paused_at: str

    def describe(self) -> str:
        bridges = ", ".join(f"{br} ({len(ports)} ports)" for br, ports in sorted(self.bridges.items())) or "no bridges"
        return f"the host's OVS-DPDK switch ({bridges}; {self.how})"


def _host_env() -> dict[str, str]:
    """The host's OVS tools' environment: default rundir and database, ovs-ctl on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVS_")}
    env["PATH"] = env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") + ":" + os.path.dirname(OVS_CTL)
    return env


def _host(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, env=_host_env(), cwd="/", capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ..., starttime at index 19]."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None = None) -> bool:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def _start_time(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def host_vswitchd_pid() -> int | None:
    """The host's ovs-vswitchd (its pidfile is in HOST_RUNDIR), if it runs."""
    try:
        with open(os.path.join(HOST_RUNDIR, "ovs-vswitchd.pid"), encoding="ascii") as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _comm(pid) == "ovs-vswitchd" and _alive(pid) else None


def other_vswitchds(host_pid: int | None) -> list[str]:
    """'pid: cmdline' of every ovs-vswitchd that is neither the host's switch nor its monitor."""
    skip: set[int] = set()
    if host_pid is not None:
        skip.add(host_pid)
        fields = _stat_fields(host_pid)
        if fields is not None and _comm(int(fields[1])) == "ovs-vswitchd":
            skip.add(int(fields[1]))  # ovs-ctl starts it with --monitor: the parent restarts it on a crash
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in skip and _comm(int(entry)) == "ovs-vswitchd" and _alive(int(entry)):
            found.append(f"{entry}: {' '.join(_cmdline(int(entry)))[:160]}")
    return found


def host_bridges() -> dict[str, list[str]]:
    """The host switch's bridges and their ports (from its database)."""
    listed = _host(["ovs-vsctl", f"--db={HOST_DB}", "--timeout=5", "list-br"])
    if listed.returncode != 0:
        raise OvsError(f"cannot read the host's OVS database ({HOST_DB}): {listed.stderr.strip()}")
    bridges = {}
    for bridge in listed.stdout.split():
        ports = _host(["ovs-vsctl", f"--db={HOST_DB}", "--timeout=5", "list-ports", bridge])
        if ports.returncode != 0:
            raise OvsError(f"cannot list the ports of the host's bridge {bridge}: {ports.stderr.strip()}")
        bridges[bridge] = sorted(ports.stdout.split())
    return bridges


def _host_dpdk_initialized() -> bool:
    got = _host(["ovs-vsctl", f"--db={HOST_DB}", "--timeout=5", "get", "Open_vSwitch", ".", "dpdk_initialized"])
    return got.returncode == 0 and got.stdout.strip() == "true"


def _under_systemd() -> bool:
    if not os.path.isdir("/run/systemd/system") or not shutil.which("systemctl"):
        return False
    return _host(["systemctl", "is-active", "-q", "ovs-vswitchd"]).returncode == 0


def _read_record() -> PausedSwitch | None:
    try:
        with open(PAUSE_RECORD, encoding="utf-8") as fh:
            return PausedSwitch(**json.load(fh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise OvsError(f"unreadable pause record {PAUSE_RECORD} ({exc}): restart the host's switch by hand and remove it") from exc


def _write_record(paused: PausedSwitch) -> None:
    os.makedirs(os.path.dirname(PAUSE_RECORD), exist_ok=True)
    tmp = f"{PAUSE_RECORD}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(asdict(paused), fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, PAUSE_RECORD)


def _remove_record() -> None:
    try:
        os.unlink(PAUSE_RECORD)
    except FileNotFoundError:
        pass


def _stop_host_vswitchd(how: str, pid: int) -> None:
    argv = ["systemctl", "stop", "ovs-vswitchd"] if how == "systemd" else [OVS_CTL, "--no-ovsdb-server", "stop"]
    done = _host(argv, timeout=HOST_STOP_TIMEOUT_S + 30)
    deadline = time.monotonic() + HOST_STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        raise OvsError(f"the host's ovs-vswitchd (pid {pid}) did not stop ({' '.join(argv)}: {done.stderr.strip()[-300:]})")


def _host_switch_ready(paused: PausedSwitch) -> bool:
    """ovs-vswitchd answers, has set up every bridge of before (after DPDK init), and says DPDK is initialised."""
    shown = _host(["ovs-appctl", "--timeout=3", "-t", "ovs-vswitchd", "dpif/show"])
    if shown.returncode != 0:
        return False
    # "netdev@ovs-netdev: ...", then "  <bridge>:" and its ports indented by four
    datapath_bridges = {line.strip()[:-1] for line in shown.stdout.splitlines() if re.fullmatch(r"  \S+:", line.rstrip())}
    if not set(paused.bridges) <= datapath_bridges:
        return False
    return _host_dpdk_initialized() or not paused.dpdk_initialized


def stop_orphaned_instances(say: Callable[[str], None]) -> None:
    """Stop private instances whose run was killed before it could stop them: they hold the datapath's tap."""
    dirs: set[str] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _comm(int(entry)) in ("ovs-vswitchd", "ovsdb-server"):
            dirs.update(os.path.dirname(arg.split("=", 1)[1]) for arg in _cmdline(int(entry)) if arg.startswith("--pidfile="))
    for path in sorted(dirs - {HOST_RUNDIR}):
        instance = OvsInstance.orphan(path)
        if instance is not None:
            say(f"stopping a private OVS left running by a run that was killed ({path})")
            instance.stop()


def pause_host_switch(say: Callable[[str], None]) -> PausedSwitch | None:
    """Stop the host's ovs-vswitchd (its ovsdb-server and database stay up); None if none runs.

    Raises OvsError when an ovs-vswitchd runs that is not the host's (a private instance
    left by a killed run), or when another live run holds the switch paused.
    """
    record = _read_record()
    if record is not None:
        if _alive(record.owner_pid, record.owner_start):
            raise OvsError(f"{record.describe()} is paused by another run (pid {record.owner_pid}, since {record.paused_at}): "
                           "run one test session or benchmark at a time")
        say(f"{record.describe()} was left paused by a run that ended early (pid {record.owner_pid}): restoring it first")
        restore_host_switch(record, say)
    stop_orphaned_instances(say)
    pid = host_vswitchd_pid()
    others = other_vswitchds(pid)
    if others:
        raise OvsError(f"an ovs-vswitchd runs that is not the host's switch in {HOST_RUNDIR} ({'; '.join(others)}): "
                       "only one OVS-DPDK can run on a host; a private instance left by a killed run? stop it by its pid")
    if pid is None:
        return None
    paused = PausedSwitch(how="systemd" if _under_systemd() else "ovs-ctl", bridges=host_bridges(),
                          dpdk_initialized=_host_dpdk_initialized(), vswitchd_argv=_cmdline(pid), owner_pid=os.getpid(),
                          owner_start=_start_time(os.getpid()), paused_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _write_record(paused)
    say(f"pausing {paused.describe()}: only one OVS-DPDK can run on a host and this run starts its own; "
        "it is restarted with the same database and bridges at the end")
    try:
        _stop_host_vswitchd(paused.how, pid)
    except BaseException:
        restore_host_switch(paused, say)
        raise
    return paused


def restore_host_switch(paused: PausedSwitch, say: Callable[[str], None]) -> None:
    """Start the host's ovs-vswitchd again as it was started, and check it is what it was.

    Raises OvsError when it does not come up with DPDK and its bridges within
    HOST_START_TIMEOUT_S (the pause record is then kept, for a retry with RESTORE_COMMAND), or
    when its bridges or ports differ from before the pause.
    """
    stop_orphaned_instances(say)  # a killed run's private switch would keep the datapath's tap from the host's
    if host_vswitchd_pid() is None:
        argv = ["systemctl", "start", "ovs-vswitchd"] if paused.how == "systemd" else [OVS_CTL, "--no-ovsdb-server", "start"]
        started = _host(argv, timeout=HOST_START_TIMEOUT_S + 30)
        if started.returncode != 0:
            raise OvsError(f"could not restart the host's switch ({' '.join(argv)} exited {started.returncode}: "
                           f"{started.stderr.strip()[-300:]}); retry: {RESTORE_COMMAND}")
    deadline = time.monotonic() + HOST_START_TIMEOUT_S
    while not _host_switch_ready(paused):
        if time.monotonic() > deadline:
            raise OvsError(f"the host's ovs-vswitchd did not come back with DPDK and bridges {sorted(paused.bridges)} within "
                           f"{HOST_START_TIMEOUT_S:g} s (see {HOST_VSWITCHD_LOG}); retry: {RESTORE_COMMAND}")
        time.sleep(0.2)
    now = host_bridges()
    _remove_record()
    if now != paused.bridges:
        raise OvsError(f"the host's switch is running again, but its bridges changed while it was paused: before {paused.bridges}, "
                       f"now {now}")
    say(f"restored {paused.describe()}: ovs-vswitchd runs, DPDK initialised")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def host_switch_paused(say: Callable[[str], None] = print) -> Iterator[PausedSwitch | None]:
    """Pause the host's switch (if one runs) for the body, and restore it after, also on an error.

    SIGTERM and SIGHUP become KeyboardInterrupt meanwhile, so a terminated run restores it too.
    """
    paused = pause_host_switch(say)
    if paused is None:
        yield None
        return
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, _interrupt)
        except ValueError:  # not the main thread: the caller's handlers stay
            break
    try:
        yield paused
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        restore_host_switch(paused, say)


def main(argv: list[str]) -> int:
    """``restore-host-switch``: restart the host's switch if a run that paused it died first."""
    if argv != ["restore-host-switch"]:
        print(f"usage: {RESTORE_COMMAND}", file=sys.stderr)
        return 2
    try:
        record = _read_record()
        if record is None:
            return 0
        if _alive(record.owner_pid, record.owner_start):
            print(f"restore-host-switch: the run that paused it (pid {record.owner_pid}) still runs and will restore it")
            return 0
        restore_host_switch(record, lambda text: print(f"restore-host-switch: {text}"))
    except OvsError as exc:
        print(f"restore-host-switch: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
