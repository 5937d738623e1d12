"""What an image says it needs (labels, repeated as ``DPDK_OCI_HOOK_MIN_*`` env) against the request.

Pure: the hook refuses, before reserving anything, a container whose image needs more than
its annotations give.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hook.constants import IMAGE_ENV_PREFIX, IMAGE_LABEL_PREFIX
from hook.errors import ImageRequirementError
from hook.model import Request
from hook.units import format_size_kib, parse_size_kib

LABEL_PREFIX = IMAGE_LABEL_PREFIX
LABEL_DPDK_VERSION = LABEL_PREFIX + "dpdk-version"
_COUNT_RE = re.compile(r"[0-9]{1,6}")


LABEL_MIN_PORTS = LABEL_PREFIX + "min-ports"


LABEL_MIN_CPUS = LABEL_PREFIX + "min-cpus"


LABEL_MIN_HUGEPAGES = LABEL_PREFIX + "min-hugepages"


LABEL_MIN_QUEUES = LABEL_PREFIX + "min-queues"


def _label_count(labels: Mapping[str, str], key: str) -> int:
    raw = labels.get(key)
    if raw is None:
        return 0
    text = str(raw).strip()
    if not _COUNT_RE.fullmatch(text):
        raise ImageRequirementError(label=key, required=repr(str(raw)[:40]), given="nothing to compare: the image's label is not a whole number")
    return int(text)


def _label_size_mib(labels: Mapping[str, str], key: str) -> int:
    raw = labels.get(key)
    if raw is None:
        return 0
    try:
        kib = parse_size_kib(str(raw))
    except ValueError:
        raise ImageRequirementError(label=key, required=repr(str(raw)[:40]), given="nothing to compare: the image's label is not a size like 64Mi") from None
    return -(-kib // 1024)


def image_requirements(labels: Mapping[str, str] | None) -> dict[str, Any]:
    """What an image's labels ask for; absent labels ask for nothing.

    Returns ``{"dpdk-version": str | None, "min-ports": int, "min-cpus": int,
    "min-hugepages-mib": int, "min-queues": int}``.  A malformed label raises
    :class:`ImageRequirementError` (fail closed: the image cannot be checked).
    """
    labels = labels or {}
    version = labels.get(LABEL_DPDK_VERSION)
    return {
        "dpdk-version": str(version) if version else None,
        "min-ports": _label_count(labels, LABEL_MIN_PORTS),
        "min-cpus": _label_count(labels, LABEL_MIN_CPUS),
        "min-hugepages-mib": _label_size_mib(labels, LABEL_MIN_HUGEPAGES),
        "min-queues": _label_count(labels, LABEL_MIN_QUEUES),
    }


def check_requirements(labels: Mapping[str, str] | None, request: Request) -> dict[str, Any]:
    """Raise :class:`ImageRequirementError` if ``request`` cannot satisfy the image's labels.

    Checked in this order: ports, cpus, hugepage memory, queues of every port.  The DPDK
    version is informational (vhost-user does not depend on it).  Returns the requirements.
    """
    labels = labels or {}
    need = image_requirements(labels)
    ports = len(request.ports)
    if ports < need["min-ports"]:
        raise ImageRequirementError(label=LABEL_MIN_PORTS, required=need["min-ports"], given=f"{ports} vhost-user port(s)")
    if request.cpus < need["min-cpus"]:
        raise ImageRequirementError(label=LABEL_MIN_CPUS, required=need["min-cpus"], given=f"cpus={request.cpus}")
    if request.hugepages_mib < need["min-hugepages-mib"]:
        given = f"hugepages={format_size_kib(request.hugepages_mib * 1024)}" if request.hugepages_mib else "no hugepages"
        raise ImageRequirementError(label=LABEL_MIN_HUGEPAGES, required=str(labels[LABEL_MIN_HUGEPAGES]).strip(), given=given)
    for index, port in enumerate(request.ports):
        if port.queues < need["min-queues"]:
            raise ImageRequirementError(label=LABEL_MIN_QUEUES, required=need["min-queues"], given=f"queues={port.queues} on port {index} (net{index})")
    return need



def check_image_env(bundle_config: dict[str, object], request: Request) -> None:
    """Refuse, before reserving anything, a container whose image needs more than it asked for."""
    process = bundle_config.get("process")
    env = process.get("env", []) if isinstance(process, dict) else []
    labels = {}
    for item in env if isinstance(env, list) else []:
        name, sep, value = str(item).partition("=")
        if sep and name.startswith(IMAGE_ENV_PREFIX) and value.strip():
            labels["dpdk-oci-hook.min-" + name[len(IMAGE_ENV_PREFIX):].lower()] = value
    if labels:
        check_requirements(labels, request)
