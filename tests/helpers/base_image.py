"""Debian base images for image builds, made locally: no image registry is reachable.

``ensure_base_image(client, "bookworm")`` gives ``debian:bookworm-slim`` in the engine behind
``client`` (a docker SDK client), making it only when the engine does not have it yet:

    mmdebstrap --variant=minbase bookworm - | docker import - debian:bookworm-slim

with the trimming of Debian's own slim images (no man pages, docs except copyright files,
locales; merged /usr without the usrmerge package): about 75 MB, about 40 s.

The tarball is kept in ``/var/cache/dpdk-oci-hook-test`` (``$DPDK_OCI_TEST_CACHE``), named by
a hash of the mmdebstrap command, for a week: a fresh engine (the test engines live in
temporary directories) then imports it in seconds.  Sessions serialize on a lock file and the
tarball appears by an atomic rename.

By hand:  python3 -m tests.helpers.base_image [RELEASE] [--docker-host unix:///path/docker.sock]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MMDEBSTRAP_TIMEOUT_S = 900
CACHE_DIR = Path(os.environ.get("DPDK_OCI_TEST_CACHE", "/var/cache/dpdk-oci-hook-test"))
CACHE_MAX_AGE_S = 7 * 24 * 3600
HOOKS = "/usr/share/mmdebstrap/hooks/maybe-merged-usr"
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)


class BaseImageError(RuntimeError):
    """The base image could not be made (no mmdebstrap, no archive, import refused)."""


def base_image_tag(release: str = "bookworm") -> str:
    return f"debian:{release}-slim"


def mmdebstrap_argv(release: str, output: str, mirror: str | None = None) -> list[str]:
    """The mmdebstrap command that writes a slim ``release`` tarball to ``output`` (``-``: stdout)."""
    argv = ["mmdebstrap", "--variant=minbase", "--quiet", '--aptopt=Acquire::Languages "none"']
    if os.path.isdir(HOOKS):
        argv.append(f"--hook-dir={HOOKS}")
    argv += [f"--dpkgopt={option}" for option in SLIM_DPKG_OPTIONS]
    argv += [release, output]
    if mirror:
        argv.append(mirror)
    return argv


def base_tarball(release: str = "bookworm", mirror: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """The cached slim ``release`` rootfs tarball, made with mmdebstrap when missing or a week old."""
    key = hashlib.sha256(" ".join(mmdebstrap_argv(release, "OUT", mirror)).encode()).hexdigest()[:12]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"debian-{release}-slim-{key}.tar"
    with open(CACHE_DIR / f"debian-{release}-slim.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and time.time() - tarball.stat().st_mtime < CACHE_MAX_AGE_S:
            return tarball
        if shutil.which("mmdebstrap") is None:
            raise BaseImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        if progress:
            progress(f"making a slim {release} rootfs with mmdebstrap (minbase) into {tarball}")
        fd, partial = tempfile.mkstemp(prefix=f".{tarball.name}.", dir=CACHE_DIR)
        os.close(fd)
        try:
            proc = subprocess.run(
                mmdebstrap_argv(release, partial + ".tar", mirror), capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT_S, check=False
            )
            if proc.returncode != 0:
                raise BaseImageError(f"mmdebstrap {release} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
            os.replace(partial + ".tar", tarball)
        finally:
            for leftover in (partial, partial + ".tar"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
    return tarball


def ensure_base_image(
    client: Any,
    release: str = "bookworm",
    tag: str | None = None,
    mirror: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Make ``debian:<release>-slim`` (or ``tag``) in the engine unless it is there; return the tag."""
    import docker.errors

    tag = tag or base_image_tag(release)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    tarball = base_tarball(release, mirror, progress)
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=version, changes=['CMD ["bash"]'])
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise BaseImageError(f"docker import did not make {tag}") from exc
    return tag


def main(argv: list[str] | None = None) -> int:
    import docker

    parser = argparse.ArgumentParser(description="make debian:RELEASE-slim in a Docker engine with mmdebstrap")
    parser.add_argument("release", nargs="?", default="bookworm")
    parser.add_argument("--docker-host", help="engine address (default: $DOCKER_HOST)")
    parser.add_argument("--mirror", help="Debian archive (default: mmdebstrap's choice)")
    args = parser.parse_args(argv)
    client = docker.DockerClient(base_url=args.docker_host) if args.docker_host else docker.from_env()
    print(ensure_base_image(client, args.release, mirror=args.mirror, progress=print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
