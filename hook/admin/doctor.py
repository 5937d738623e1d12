"""``dpdk-oci-hook doctor``: is this host ready for DPDK containers?  One line per finding.

Reads only: the hugepage pool, mounts, the switch (one ovs-vsctl read each), the engine
registrations that ``hook.admin.engines`` writes, engine versions and the ledger.  Every finding
that is not ok says how to fix it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from hook.admin import engines

OK, WARN, ERROR = "ok", "warn", "error"
CHILD_TIMEOUT_S = 5
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
MIN_DOCKER = (24, 0)  # docker run --annotation (API 1.43)
MIN_RUNC = (1, 0)  # createRuntime hooks
HUGETLBFS_MAGIC_TYPE = "hugetlbfs"


@dataclass(frozen=True)
class Finding:
    """One check's result: ``level`` is ok, warn or error; ``fix`` says what to do about it."""

    level: str
    what: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.level:5}] {self.what}"
        return f"{text} -- fix: {self.fix}" if self.fix else text


def _run(argv: list[str]) -> tuple[int, str]:
    """(exit code, stdout+stderr) of a short read-only command; 127 if it cannot run."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env=CHILD_ENV,
            cwd="/",
            close_fds=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {CHILD_TIMEOUT_S}s"
    except OSError as exc:
        return 127, exc.strerror or str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def parse_version(text: str) -> tuple[int, ...] | None:
    """The first dotted version in ``text`` (``Docker version 26.1.5+dfsg1`` -> (26, 1, 5))."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def _fmt(version: tuple[int, ...] | None) -> str:
    return ".".join(map(str, version)) if version else "unknown"


# --- checks ------------------------------------------------------------------------------


def check_hugepages(config: Any, sys_root: str = "/sys", mountinfo: str = "/proc/self/mountinfo") -> list[Finding]:
    size = config.hugepage_size_kib
    pool = os.path.join(sys_root, "kernel", "mm", "hugepages", f"hugepages-{size}kB")
    found: list[Finding] = []
    try:
        with open(os.path.join(pool, "nr_hugepages"), encoding="ascii") as fh:
            total = int(fh.read())
        with open(os.path.join(pool, "free_hugepages"), encoding="ascii") as fh:
            free = int(fh.read())
    except (OSError, ValueError):
        return [Finding(ERROR, f"no {size} KiB hugepage pool on this kernel ({pool})", "use hugepages.page_size = \"2Mi\" or boot with hugepagesz=")]
    budget_pages = config.hugepage_budget_kib // size
    what = f"hugepages: {total} pages of {size // 1024} MiB, {free} free (budget {budget_pages} pages)"
    if total == 0 and not config.grow_pool:
        found.append(Finding(ERROR, what, f"echo {budget_pages} > {os.path.join(pool, 'nr_hugepages')} (or hugepages.grow_pool = true)"))
    elif free < budget_pages and not config.grow_pool:
        found.append(Finding(WARN, what, f"grow the pool to at least {budget_pages} free pages, or lower hugepages.budget"))
    else:
        found.append(Finding(OK, what))
    mounted = False
    try:
        with open(mountinfo, encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == "/dev/hugepages" and right.split()[:1] == [HUGETLBFS_MAGIC_TYPE]:
                    mounted = True
    except OSError:
        pass
    if mounted:
        found.append(Finding(OK, "/dev/hugepages is a hugetlbfs mount (for the switch's own DPDK)"))
    else:
        found.append(Finding(WARN, "/dev/hugepages is not a hugetlbfs mount: OVS-DPDK needs one",
                             "mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages"))
    return found


def _vsctl(config: Any, *args: str) -> tuple[int, str]:
    argv = [config.switch.ovs_vsctl, f"--timeout={max(1, int(config.switch.timeout_s))}"]
    if config.switch.ovsdb:
        argv.append(f"--db={config.switch.ovsdb}")
    return _run([*argv, *args])


def check_switch(config: Any) -> list[Finding]:
    sw = config.switch
    if sw.backend == "static":
        missing = [s for s in sw.static_sockets if not os.path.exists(s)]
        if missing:
            return [Finding(WARN, f"static switch: {len(missing)} of {len(sw.static_sockets)} sockets missing ({missing[0]} ...)",
                            "start the switch that serves switch.static_sockets")]
        return [Finding(OK, f"static switch: {len(sw.static_sockets)} sockets present")]
    where = sw.ovsdb or "the default database socket"
    code, out = _vsctl(config, "get", "Open_vSwitch", ".", "dpdk_initialized")
    if code != 0:
        return [Finding(ERROR, f"OVS not reachable at {where}: {out.splitlines()[0] if out else f'exit {code}'}",
                        "start OVS-DPDK (install.sh does), or set switch.ovsdb in the config")]
    found = [Finding(OK, f"OVS reachable at {where}")]
    if out.strip() != "true":
        found.append(Finding(ERROR, f"OVS dpdk_initialized = {out.strip() or 'empty'}",
                             "ovs-vsctl set Open_vSwitch . other_config:dpdk-init=true, restart ovs-vswitchd, see its log"))
        return found
    found.append(Finding(OK, "OVS dpdk_initialized = true"))
    code, out = _vsctl(config, "--if-exists", "get", "Bridge", sw.bridge, "datapath_type")
    if code != 0 or not out.strip():
        if sw.create_bridge:
            found.append(Finding(WARN, f"bridge {sw.bridge} does not exist yet (the hook creates it on first use)"))
        else:
            found.append(Finding(ERROR, f"bridge {sw.bridge} does not exist",
                                 f"ovs-vsctl add-br {sw.bridge} -- set bridge {sw.bridge} datapath_type=netdev"))
    elif out.strip().strip('"') != "netdev":
        found.append(Finding(ERROR, f"bridge {sw.bridge} has datapath_type={out.strip() or 'system'}: vhost-user ports need netdev",
                             f"ovs-vsctl set bridge {sw.bridge} datapath_type=netdev"))
    else:
        found.append(Finding(OK, f"bridge {sw.bridge} exists with datapath_type=netdev"))
    return found


def _version_of(binary: str, *args: str) -> tuple[str | None, tuple[int, ...] | None]:
    path = shutil.which(binary, path=CHILD_ENV["PATH"] + ":/usr/local/sbin:/usr/local/bin")
    if not path:
        return None, None
    _, out = _run([path, *args])
    return path, parse_version(out)


def check_versions() -> list[Finding]:
    found: list[Finding] = []
    path, version = _version_of("runc", "--version")
    if path is None:
        found.append(Finding(ERROR, "runc is not installed", "apt-get install runc"))
    elif version is not None and version < MIN_RUNC:
        found.append(Finding(ERROR, f"runc {_fmt(version)} runs no createRuntime hooks", "install runc >= 1.0"))
    else:
        found.append(Finding(OK, f"runc {_fmt(version)} ({path})"))
    path, version = _version_of("podman", "--version")
    if path is not None:
        found.append(Finding(OK, f"podman {_fmt(version)}: uses hooks.d (podman run --annotation dpdk-oci-hook/...)"))
    path, version = _version_of("dockerd", "--version")
    if path is not None:
        if version is not None and version[:2] < MIN_DOCKER:
            found.append(Finding(WARN, f"Docker {_fmt(version)} drops --annotation (needs >= 24): DPDK containers cannot be asked for",
                                 "install Docker >= 24 (Debian 13 docker.io is 26), or use podman / ctr"))
        else:
            found.append(Finding(OK, f"Docker {_fmt(version)}: docker run --runtime dpdk --annotation dpdk-oci-hook/..."))
    path, version = _version_of("containerd", "--version")
    if path is not None:
        found.append(Finding(OK, f"containerd {_fmt(version)}"))
    return found


def check_registration(layout: engines.Layout, settings: engines.Settings) -> list[Finding]:
    found: list[Finding] = []
    present = engines.detect(layout)
    fix = "run install.sh again (or: python3 -I -m hook.admin.engines register)"
    if present["podman"] or present["crio"]:
        for stage, name in engines.HOOK_FILES.items():
            overrides = layout.at("/etc/containers/oci/hooks.d") / name
            target = overrides if overrides.exists() else layout.at(layout.hooks_dir) / name
            try:
                hook = json.loads(target.read_text(encoding="utf-8")).get("hook", {})
            except (OSError, ValueError, AttributeError):
                found.append(Finding(WARN, f"hooks.d: {target} missing or unreadable (podman/CRI-O will not run the {stage} hook)", fix))
                continue
            if not os.access(str(layout.at(hook.get("path", "") or "/nonexistent")), os.X_OK):
                found.append(Finding(ERROR, f"hooks.d: {target} runs {hook.get('path')!r}, which is not executable", fix))
            else:
                found.append(Finding(OK, f"hooks.d: {target} ({stage})"))
    if present["docker"]:
        path = layout.at(layout.docker_config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            text = None
        entry: Any = None
        try:
            entry = ((json.loads(text) if text else {}).get("runtimes") or {}).get(engines.RUNTIME_NAME)
        except (ValueError, AttributeError):
            found.append(Finding(ERROR, f"Docker: {path} is not valid JSON", "fix the file; dockerd will not start with it"))
        else:
            if isinstance(entry, dict) and entry.get("path"):
                shim = str(entry["path"])
                if os.access(str(layout.at(shim)), os.X_OK):
                    found.append(Finding(OK, f"Docker: runtime {engines.RUNTIME_NAME} -> {shim}"))
                else:
                    found.append(Finding(ERROR, f"Docker: runtime {engines.RUNTIME_NAME} -> {shim}, which is not executable", fix))
            else:
                found.append(Finding(WARN, f"Docker: no runtime {engines.RUNTIME_NAME} in {path}", fix))
    if present["containerd"]:
        path = layout.at(layout.containerd_config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            text = None
        if engines.containerd_has_ours(text):
            found.append(Finding(OK, f"containerd: CRI runtime {engines.RUNTIME_NAME} in {path}"))
        else:
            found.append(Finding(WARN, f"containerd: no CRI runtime {engines.RUNTIME_NAME} in {path} "
                                       f"(ctr still works: ctr run --runc-binary {settings.shim})", fix))
    return found


def check_ledger(config: Any) -> list[Finding]:
    from hook.errors import HookError
    from hook.host.ledger import Ledger

    path = config.ledger_path
    if not os.path.exists(path):
        return [Finding(OK, f"ledger {path}: none yet (no container has asked)")]
    try:
        entries = Ledger(path).snapshot()
    except HookError as exc:
        return [Finding(ERROR, f"ledger: {exc}", "dpdk-oci-hook gc --rebuild")]
    except OSError as exc:
        return [Finding(ERROR, f"ledger {path}: {exc.strerror or exc}", "run as root")]
    return [Finding(OK, f"ledger {path}: readable, {len(entries)} reservation(s)")]


def run_doctor(
    config_path: str | None = None,
    layout: engines.Layout | None = None,
    settings: engines.Settings | None = None,
    sys_root: str = "/sys",
) -> list[Finding]:
    """Every check, in the order a person would fix things."""
    from hook import config as config_mod
    from hook.errors import HookError

    layout = layout or engines.Layout()
    settings = settings or engines.Settings()
    found: list[Finding] = []
    config: Any = None
    try:
        config = config_mod.load(config_path)
        found.append(Finding(OK, f"config {config.path}"))
    except HookError as exc:
        found.append(Finding(ERROR, str(exc), "write /etc/dpdk-oci-hook/config.hcl (install.sh does), then: dpdk-oci-hook config check"))
    if config is not None:
        found += check_hugepages(config, sys_root)
        found += check_switch(config)
    found += check_versions()
    found += check_registration(layout, settings)
    if config is not None:
        found += check_ledger(config)
    return found


def main(config_path: str | None = None, as_json: bool = False) -> int:
    """Print the findings; exit 1 if any is an error."""
    findings = run_doctor(config_path)
    if as_json:
        sys.stdout.write(json.dumps([f.__dict__ for f in findings], indent=2) + "\n")
    else:
        for finding in findings:
            sys.stdout.write(finding.line() + "\n")
        errors = sum(f.level == ERROR for f in findings)
        warnings = sum(f.level == WARN for f in findings)
        sys.stdout.write(f"{errors} error(s), {warnings} warning(s)\n")
    return 1 if any(f.level == ERROR for f in findings) else 0


def cmd_doctor(args: Any) -> int:
    """The ``dpdk-oci-hook doctor`` subcommand (argparse namespace with ``config`` and ``json``)."""
    return main(getattr(args, "config", None), bool(getattr(args, "json", False)))
