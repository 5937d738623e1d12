"""A Debian rootfs with ``dpdk-testpmd`` for engine tests, made once and cached (no image registry).

    mmdebstrap --variant=minbase --include=dpdk-dev <host suite> <cache>/testpmd-<suite>-<key>.tar <host apt sources>

The suite is the host's own (``/etc/os-release``), and the host's Debian apt source files are
handed to mmdebstrap as they are, so the archive, mirror and keyring that already work for the
host's apt work here (bookworm gives DPDK 22.11, trixie 24.11).  Documentation, headers and
static libraries are left out, and /usr is merged without the usrmerge package (no perl):
~220 MB and ~10000 files instead of ~370 MB.  A customize hook checks that the result runs:
``dpdk-testpmd`` is there and ``ldd`` finds every library it needs.

The tarball is cached under ``/var/cache/dpdk-oci-hook-test`` (``$DPDK_OCI_TEST_CACHE``),
named by a hash of the recipe: a changed recipe or host suite makes a new one.  Concurrent
sessions serialize on a lock file and the tarball appears by an atomic rename, so a reader
never sees half of one.  The cold build takes about 1-2 minutes.

``docker import`` takes the tarball; ``ctr run --rootfs`` and ``podman run --rootfs`` take a
directory: the tarball unpacked once beside it (:func:`testpmd_tree`), under a per-session
overlay (:func:`overlay`) so that no container writes into the cache.

By hand:  python3 -m tests.helpers.dpdk_image      (builds or finds it, prints the path)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.base_image import HOOKS as MERGED_USR_HOOKS_DIR  # merged /usr without usrmerge (and its perl)
from tests.helpers.base_image import SLIM_DPKG_OPTIONS

CACHE_DIR = Path(os.environ.get("DPDK_OCI_TEST_CACHE", "/var/cache/dpdk-oci-hook-test"))
RECIPE_VERSION = "1"  # bump when the recipe changes in a way the argv does not show
PACKAGES = ("dpdk-dev",)  # dpdk-testpmd, its librte-* libraries and every PMD (net_virtio_user)
TESTPMD = "/usr/bin/dpdk-testpmd"
DPKG_EXCLUDES = (
    *SLIM_DPKG_OPTIONS,
    "path-exclude=/usr/include/*",
    "path-exclude=/usr/lib/*.a",  # dpkg matches without FNM_PATHNAME: any static library below /usr/lib
)
# run in the finished tree: refuse to cache a rootfs where testpmd would not start
CHECK_HOOK = f'chroot "$1" sh -c \'test -x {TESTPMD} && ! ldd {TESTPMD} | grep "not found"\''
MMDEBSTRAP_TIMEOUT_S = 900
CODENAMES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}


class DpdkImageError(RuntimeError):
    """The testpmd rootfs cannot be made here (no mmdebstrap, no archive, broken result)."""


def host_suite() -> str:
    """The host's Debian codename: ``VERSION_CODENAME`` of /etc/os-release, else /etc/debian_version."""
    with contextlib.suppress(OSError):
        match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", Path("/etc/os-release").read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    with contextlib.suppress(OSError):
        major = Path("/etc/debian_version").read_text().strip().split(".")[0]
        if major in CODENAMES:
            return CODENAMES[major]
    raise DpdkImageError("cannot tell the host's Debian release (/etc/os-release, /etc/debian_version)")


def host_sources(suite: str) -> list[str]:
    """The host's enabled apt source files that name ``suite`` (given to mmdebstrap as they are)."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    found = []
    for path in candidates:
        if path.name != "sources.list" and path.suffix not in (".list", ".sources"):
            continue  # e.g. *.disabled, *.save: apt ignores them too
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        if re.search(rf"(^|\s){re.escape(suite)}(\s|$)", live, re.MULTILINE):
            found.append(str(path))
    return found


def mmdebstrap_argv(suite: str, output: str, sources: list[str]) -> list[str]:
    """The build command; without host sources mmdebstrap uses deb.debian.org (plus updates, security)."""
    argv = ["mmdebstrap", "--variant=minbase", "--quiet", "--include=" + ",".join(PACKAGES), '--aptopt=Acquire::Languages "none"',
            "--dpkgopt=force-unsafe-io"]
    if os.path.isdir(MERGED_USR_HOOKS_DIR):
        argv.append(f"--hook-dir={MERGED_USR_HOOKS_DIR}")
    argv += [f"--dpkgopt={option}" for option in DPKG_EXCLUDES]
    argv += [f"--customize-hook={CHECK_HOOK}", suite, output, *sources]
    return argv


def cache_key(suite: str, sources: list[str]) -> str:
    recipe = "\0".join([RECIPE_VERSION, *mmdebstrap_argv(suite, "OUT", sources)])
    for source in sources:
        with contextlib.suppress(OSError):
            recipe += "\0" + Path(source).read_text()
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def testpmd_tarball(cache_dir: Path = CACHE_DIR, suite: str | None = None) -> Path:
    """The cached rootfs tarball, built first when missing; DpdkImageError when it cannot be."""
    suite = suite or host_suite()
    sources = host_sources(suite)
    target = cache_dir / f"testpmd-{suite}-{cache_key(suite, sources)}.tar"
    if target.is_file():
        return target
    if shutil.which("mmdebstrap") is None:
        raise DpdkImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same tarball
        if target.is_file():
            return target
        fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tar", dir=cache_dir)
        os.close(fd)
        try:
            proc = subprocess.run(
                mmdebstrap_argv(suite, partial, sources),
                stdin=subprocess.DEVNULL,  # never read sources from stdin
                capture_output=True,
                text=True,
                timeout=MMDEBSTRAP_TIMEOUT_S,
                check=False,
            )
            if proc.returncode != 0:
                raise DpdkImageError(f"mmdebstrap {suite} failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}")
            os.chmod(partial, 0o644)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    return target


def unpack(tarball: Path, dest: Path) -> Path:
    """Extract the rootfs into ``dest`` (created), owners and modes kept; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["tar", "-xf", str(tarball), "-C", str(dest), "--numeric-owner"], capture_output=True, text=True, timeout=300,
                          check=False)
    if proc.returncode != 0:
        raise DpdkImageError(f"tar -xf {tarball}: {proc.stderr.strip()[-800:]}")
    return dest


def testpmd_tree(tarball: Path) -> Path:
    """The tarball unpacked once beside it (``<name>.d``), to be used read-only: see :func:`overlay`."""
    target = tarball.with_suffix(".d")
    if (target / TESTPMD.lstrip("/")).exists():
        return target
    with open(tarball.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / TESTPMD.lstrip("/")).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=tarball.parent))
        try:
            unpack(tarball, staging)
            os.chmod(staging, 0o755)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def overlay(lower: Path) -> Iterator[Path]:
    """A writable root over the cached tree (overlayfs in a temp dir): containers never change the cache.

    Unpacking the tarball costs ~10 s and removing the copy ~5 s; an overlay costs nothing.
    """
    top = Path(tempfile.mkdtemp(prefix="dpdkroot", dir="/tmp"))
    merged = top / "merged"
    for sub in ("upper", "work", "merged"):
        (top / sub).mkdir()
    options = f"lowerdir={lower},upperdir={top / 'upper'},workdir={top / 'work'}"
    proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        raise DpdkImageError(f"overlay mount over {lower} failed: {proc.stderr.strip()}")
    try:
        yield merged
    finally:
        if subprocess.run(["umount", str(merged)], capture_output=True, timeout=60, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(merged)], capture_output=True, timeout=60, check=False)
        shutil.rmtree(top, ignore_errors=True)


def main() -> int:
    print(testpmd_tarball())
    return 0


if __name__ == "__main__":
    sys.exit(main())
