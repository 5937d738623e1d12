"""The Engine interface, and what every engine module shares: names, paths, settings, versions.

An engine is one container engine that needs its own registration (hooks.d for podman,
a CRI-O drop-in, Docker's daemon.json, containerd's config.toml).  Each one can tell whether
the host has it (:meth:`Engine.detect`), register and unregister the hook
(:meth:`Engine.register`, :meth:`Engine.unregister`, both with a dry run), say what ``doctor``
should report about its registration (:meth:`Engine.check`) and its version
(:meth:`Engine.version`, :meth:`Engine.version_checks`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

RUNTIME_NAME = "dpdk"
SHIM_NAME = "dpdk-oci-runtime"
BACKUP_SUFFIX = ".dpdk-oci-hook.bak"
HOOK_FILES = {"createRuntime": "dpdk-oci-hook-createruntime.json", "poststop": "dpdk-oci-hook-poststop.json"}
DEFAULT_CONFIG = "/etc/dpdk-oci-hook/config.hcl"
DEFAULT_HOOKS_DIR = "/usr/share/containers/oci/hooks.d"  # podman's and CRI-O's default
OVERRIDE_HOOKS_DIR = "/etc/containers/oci/hooks.d"  # a file here replaces the one of the same name in the default dir
REREGISTER = "run install.sh again (or: python3 -I -m hook.admin.engines register)"

# Levels of a doctor finding: info is a fact with nothing to fix.
OK, INFO, WARN, ERROR = "ok", "info", "warn", "error"

VERSION_TIMEOUT_S = 5
VERSION_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
VERSION_PATH = VERSION_ENV["PATH"] + ":/usr/local/sbin:/usr/local/bin"  # where engine binaries are looked for

Say = Callable[[str], None]
Version = tuple[int, ...]


def say_line(line: str) -> None:
    """The default ``say``: one indented line on stdout, as install.sh prints its notes."""
    sys.stdout.write(f"    {line}\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Layout:
    """Where each engine's configuration lives; ``root`` prefixes all of it (tests use a temp dir)."""

    root: str = "/"
    hooks_dir: str = DEFAULT_HOOKS_DIR
    docker_config: str = "/etc/docker/daemon.json"
    containerd_config: str = "/etc/containerd/config.toml"
    crio_config: str = "/etc/crio/crio.conf"
    crio_dropin_dir: str = "/etc/crio/crio.conf.d"
    crio_dropin_name: str = "99-dpdk-oci-hook.conf"

    def at(self, path: str) -> Path:
        return Path(self.root) / path.lstrip("/")


def _checkout_templates() -> str:
    # hook/admin/engines/base.py -> the checkout's templates/hooks.d (install.sh passes --templates)
    return str(Path(__file__).resolve().parents[3] / "templates" / "hooks.d")


@dataclass
class Settings:
    """What gets registered: the hook interpreter, the wrapper, the host config."""

    python: str = field(default_factory=lambda: sys.executable)
    shim: str = ""
    config: str = DEFAULT_CONFIG
    templates: str = ""

    def __post_init__(self) -> None:
        if not self.shim:
            self.shim = os.path.join(os.path.dirname(self.python), SHIM_NAME)
        if not self.templates:
            self.templates = _checkout_templates()


@dataclass(frozen=True)
class Check:
    """One thing ``doctor`` reports about an engine: ``level`` is one of OK, INFO, WARN, ERROR."""

    level: str
    what: str
    fix: str = ""


def parse_version(text: str) -> Version | None:
    """The first dotted version in ``text`` (``Docker version 26.1.5+dfsg1`` -> (26, 1, 5))."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def format_version(version: Version | None) -> str:
    return ".".join(map(str, version)) if version else "unknown"


def run_read_only(argv: list[str], timeout_s: int = VERSION_TIMEOUT_S) -> tuple[int, str]:
    """(exit code, stdout+stderr) of a short command that changes nothing; 127 if it cannot run."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env=VERSION_ENV,
            cwd="/",
            close_fds=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout_s}s"
    except OSError as exc:
        return 127, exc.strerror or str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def binary_version(binary: str, *args: str) -> tuple[str | None, Version | None]:
    """(path, version) of an installed binary, from ``binary ARGS``; (None, None) when absent."""
    path = shutil.which(binary, path=VERSION_PATH)
    if not path:
        return None, None
    _, out = run_read_only([path, *args])
    return path, parse_version(out)


class Engine(ABC):
    """One container engine's registration of the hook."""

    name: ClassVar[str]  # as in --engines and the output: podman, crio, docker, containerd
    label: ClassVar[str]  # how its lines begin
    binaries: ClassVar[tuple[str, ...]]  # any of these on PATH means the engine is installed
    config_dir: ClassVar[str]  # ... and so does this directory

    def detect(self, layout: Layout) -> bool:
        """Whether this host has the engine: one of its binaries on PATH or its config directory."""
        return any(shutil.which(b) for b in self.binaries) or layout.at(self.config_dir).is_dir()

    @abstractmethod
    def register(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        """Make the engine run the hook; keep everything else.  Raises EngineConfigError."""

    @abstractmethod
    def unregister(self, layout: Layout, settings: Settings, dry_run: bool, say: Say) -> None:
        """Undo :meth:`register` exactly.  Raises EngineConfigError."""

    @abstractmethod
    def check(self, layout: Layout, settings: Settings) -> list[Check]:
        """What ``doctor`` says about the registration on this host (read only)."""

    def version(self) -> tuple[str | None, Version | None]:
        """(path, version) of the engine's binary, or (None, None) when it is not installed."""
        return binary_version(self.binaries[0], "--version")

    def version_checks(self, path: str | None, version: Version | None) -> list[Check]:
        """What ``doctor`` says about the installed version: by default, which one it is."""
        if path is None:
            return []
        return [Check(OK, f"{self.name} {format_version(version)}")]
