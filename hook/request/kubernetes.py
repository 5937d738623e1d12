"""What kubelet already decided for a Kubernetes container, read from its OCI spec.

Pure: plain dicts in, plain values out.  Under Kubernetes the hook must not pick cores or
hugepage memory of its own, because kubelet's CPU manager and hugepage accounting already
did, and two ledgers handing out the same core is exactly the bug this module prevents:

- **Which container.** containerd's CRI marks a pod's containers with
  ``io.kubernetes.cri.container-type=container`` (CRI-O: ``io.kubernetes.cri-o.ContainerType``)
  and names the pod, namespace, uid, container and sandbox in further annotations
  (:class:`KubeContext`).  Sandbox (pause) containers are never ours.
- **Cores.** kubelet writes the container's cpuset to ``linux.resources.cpu.cpus``.  With the
  static CPU manager policy, a Guaranteed pod's container with an integer CPU request gets
  exactly that many cores to itself; every other container gets the shared pool.  The spec
  does not say which of the two it got, so the rule is: **the cpuset is exclusive when its
  size equals the container's whole-core CPU count**, read from the CFS quota
  (``quota / period``, when kubelet set one) or else from the CPU shares (``shares / 1024``,
  kubelet's encoding of the request).  A cpuset wider than that count, a count that is not
  a whole number, or no count at all means the shared pool.  A shared pool that happens to
  be exactly as large as the container's limit cannot be told apart from the spec alone;
  the ledger's check that no other container holds the same cores covers that case.
- **Hugepages.** kubelet writes ``linux.resources.hugepageLimits``, one entry per page size
  the node supports (``{"pageSize": "2MB", "limit": bytes}``), 0 for sizes the pod did not
  ask for.  The one size with a non-zero limit is the container's; its limit is the memory.

A request that needs exclusive cores (it has the ``cpus`` annotation) but got the shared
pool, or needs hugepages (vhost-user ports, or the ``hugepages`` annotation) when the spec
has no hugepage limit, is refused with :class:`KubeletResourceError`: the pod's spec is
wrong (not Guaranteed, no ``hugepages-2Mi`` limit, kubelet without the static policy), and
the message says which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from hook.config import Limits
from hook.constants import PREFIX
from hook.errors import AnnotationError
from hook.model import Request
from hook.request.annotations import parse
from hook.units import format_cpulist, format_size_kib, parse_cpulist, parse_size_kib

# containerd's CRI plugin and CRI-O mark pod containers in the OCI spec's annotations
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
CONTAINER_TYPE = "container"
# each field of the pod's identity, first the containerd key, then the CRI-O / kubelet-label ones
SANDBOX_ID_KEYS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID")
POD_NAME_KEYS = ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name")
NAMESPACE_KEYS = ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace")
POD_UID_KEYS = ("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid")
CONTAINER_NAME_KEYS = ("io.kubernetes.cri.container-name", "io.kubernetes.container.name")
CRIO_LABELS_KEY = "io.kubernetes.cri-o.Labels"  # CRI-O: kubelet's container labels, as JSON

CPU_SHARES_PER_CORE = 1024  # kubelet: shares = milli-cpus * 1024 / 1000
SUPPORTED_PAGE_KIB = (2048, 1024 * 1024)  # the page sizes the hook mounts: 2Mi, 1Gi
MAX_TEXT = 253  # a DNS subdomain: the longest name Kubernetes gives a pod or namespace


class KubeletResourceError(AnnotationError):
    """What kubelet gave the container does not fit what its annotations need."""

    msg_fmt = "annotation {key}: {reason} (kubelet gave {given})"


@dataclass(frozen=True)
class KubeContext:
    """Which pod a container belongs to, as the CRI runtime wrote it (empty: not given)."""

    pod_uid: str
    namespace: str
    pod: str
    container: str
    sandbox_id: str


@dataclass(frozen=True)
class KubeletResources:
    """kubelet's choice for one container: the hook uses these instead of picking its own."""

    context: KubeContext
    cpus: tuple[int, ...]  # kubelet's cpuset, sorted (empty: the spec has none)
    exclusive: bool  # the cpuset is this container's alone (static CPU manager policy)
    whole_cores: int | None  # the container's CPU count in whole cores, None when not whole or unknown
    hugepages_mib: int  # the container's hugepage limit (0: none)
    hugepage_size_kib: int | None  # its page size (None: no hugepage limit)


def _first(annotations: dict[str, Any], keys: tuple[str, ...], labels: dict[str, Any]) -> str:
    for key in keys:
        value = annotations.get(key, labels.get(key))
        if isinstance(value, str) and value:
            return value[:MAX_TEXT]
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_kubernetes_container(annotations: dict[str, Any]) -> bool:
    """A pod's application container, as containerd's CRI or CRI-O marks it (sandboxes are not)."""
    return any(annotations.get(key) == CONTAINER_TYPE for key in CONTAINER_TYPE_KEYS)


def kube_context(annotations: dict[str, Any]) -> KubeContext | None:
    """The pod identity of a Kubernetes container; None for anything else."""
    if not is_kubernetes_container(annotations):
        return None
    labels: dict[str, Any] = {}
    raw_labels = annotations.get(CRIO_LABELS_KEY)
    if isinstance(raw_labels, str) and len(raw_labels) <= 65536:
        try:
            decoded = json.loads(raw_labels)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            labels = decoded
    return KubeContext(
        pod_uid=_first(annotations, POD_UID_KEYS, labels),
        namespace=_first(annotations, NAMESPACE_KEYS, labels),
        pod=_first(annotations, POD_NAME_KEYS, labels),
        container=_first(annotations, CONTAINER_NAME_KEYS, labels),
        sandbox_id=_first(annotations, SANDBOX_ID_KEYS, labels),
    )


def parse_page_size_kib(text: str) -> int:
    """A CRI page size (``2MB``, ``1GB``, ``64KB``; binary units as the kernel means them) in KiB."""
    units = {"KB": 1, "MB": 1024, "GB": 1024 * 1024}
    number, unit = text[:-2], text[-2:].upper()
    if unit not in units or not (number.isascii() and number.isdigit()) or len(number) > 5 or int(number) == 0:
        raise ValueError(f"{text[:20]!r} is not a page size like 2MB or 1GB")
    return int(number) * units[unit]


def _whole_cores(cpu: dict[str, Any]) -> int | None:
    """The container's CPU count in whole cores from the CFS quota, else from the shares."""
    quota, period, shares = cpu.get("quota"), cpu.get("period"), cpu.get("shares")
    if isinstance(quota, int) and isinstance(period, int) and quota > 0 and period > 0:
        return quota // period if quota % period == 0 else None
    if isinstance(shares, int) and shares >= CPU_SHARES_PER_CORE and shares % CPU_SHARES_PER_CORE == 0:
        return shares // CPU_SHARES_PER_CORE
    return None


def _cpus(cpu: dict[str, Any]) -> tuple[tuple[int, ...], int | None, bool]:
    text = cpu.get("cpus")
    if text is None or text == "":
        return (), _whole_cores(cpu), False
    if not isinstance(text, str):
        raise KubeletResourceError(key="linux.resources.cpu.cpus", reason="is not a CPU list", given=repr(text)[:40])
    try:
        cpus = tuple(sorted(parse_cpulist(text)))
    except ValueError as exc:
        raise KubeletResourceError(key="linux.resources.cpu.cpus", reason=str(exc), given=text[:40]) from exc
    whole = _whole_cores(cpu)
    return cpus, whole, whole is not None and whole == len(cpus)


def _hugepages(resources: dict[str, Any], annotations: dict[str, Any]) -> tuple[int, int | None]:
    """(MiB, page size KiB) of the one page size with a non-zero limit; (0, None) if none."""
    limits: dict[int, int] = {}
    entries = resources.get("hugepageLimits") or []
    if not isinstance(entries, list):
        raise KubeletResourceError(key="linux.resources.hugepageLimits", reason="is not a list", given=repr(entries)[:40])
    for entry in entries:
        size, limit = (entry.get("pageSize"), entry.get("limit")) if isinstance(entry, dict) else (None, None)
        if not isinstance(size, str) or not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise KubeletResourceError(key="linux.resources.hugepageLimits", reason="entry is not {pageSize, limit}", given=repr(entry)[:60])
        try:
            page_kib = parse_page_size_kib(size)
        except ValueError as exc:
            raise KubeletResourceError(key="linux.resources.hugepageLimits", reason=str(exc), given=size[:20]) from exc
        if limit:
            limits[page_kib] = limit
    if not limits:
        return 0, None
    wanted = annotations.get(PREFIX + "hugepage-size")
    if isinstance(wanted, str):
        try:
            wanted_kib = parse_size_kib(wanted)
        except ValueError:
            wanted_kib = 0  # the annotation parser names this error
        if wanted_kib not in limits:
            given = ", ".join(f"{format_size_kib(k)}: {v} bytes" for k, v in sorted(limits.items()))
            raise KubeletResourceError(key=PREFIX + "hugepage-size", reason=f"the pod has no hugepages-{wanted.strip()[:8]} limit", given=given)
        chosen = wanted_kib
    elif len(limits) == 1:
        chosen = next(iter(limits))
    else:
        given = ", ".join(f"{format_size_kib(k)}" for k in sorted(limits))
        raise KubeletResourceError(key=PREFIX + "hugepage-size", reason="the pod has limits for several page sizes: say which with hugepage-size", given=given)
    if chosen not in SUPPORTED_PAGE_KIB:
        raise KubeletResourceError(key="linux.resources.hugepageLimits", reason="the hook mounts 2Mi or 1Gi pages only", given=format_size_kib(chosen))
    limit = limits[chosen]
    if limit % (chosen * 1024):
        raise KubeletResourceError(key="linux.resources.hugepageLimits", reason="the limit is not a whole number of pages", given=f"{limit} bytes")
    return limit // (1024 * 1024), chosen


def kubelet_request(spec: dict[str, Any], annotations: dict[str, Any], pod_hugepage_limits: list[Any] | None = None) -> KubeletResources | None:
    """kubelet's cores and hugepages for a Kubernetes container; None if it is not one.

    ``spec`` is the bundle's config.json, ``annotations`` the container's.
    ``pod_hugepage_limits`` (same shape as ``hugepageLimits``) stands in when the spec has no
    non-zero hugepage limit: containerd's default ``disable_hugetlb_controller = true`` drops
    kubelet's limits from the spec, while kubelet still sets them on the pod's cgroup, where
    the caller may read them.  Refuses
    (:class:`KubeletResourceError`) when the annotations need exclusive cores (``cpus``) and
    kubelet gave the shared pool or another number of cores, or need hugepage memory
    (vhost-user ports, ``hugepages``) and the spec has no hugepage limit, or the
    ``hugepages`` annotation asks for more than the limit.
    """
    context = kube_context(annotations)
    if context is None:
        return None
    linux = spec.get("linux") if isinstance(spec, dict) else None
    resources = _dict(linux.get("resources")) if isinstance(linux, dict) else {}
    cpu = _dict(resources.get("cpu"))
    cpus, whole, exclusive = _cpus(cpu)
    hugepages_mib, page_kib = _hugepages(resources, annotations)
    if not hugepages_mib and pod_hugepage_limits:
        hugepages_mib, page_kib = _hugepages({"hugepageLimits": pod_hugepage_limits}, annotations)
    result = KubeletResources(context, cpus, exclusive, whole, hugepages_mib, page_kib)

    wanted_cpus = annotations.get(PREFIX + "cpus")
    if isinstance(wanted_cpus, str) and wanted_cpus.strip() not in ("", "0"):
        _check_exclusive(PREFIX + "cpus", wanted_cpus.strip(), result)
    ports = annotations.get(PREFIX + "vhost-user")
    wants_ports = isinstance(ports, str) and ports.strip() not in ("", "0", "[]")
    wanted_huge = annotations.get(PREFIX + "hugepages")
    if (wants_ports or isinstance(wanted_huge, str)) and not hugepages_mib:
        key = PREFIX + ("hugepages" if isinstance(wanted_huge, str) else "vhost-user")
        raise KubeletResourceError(
            key=key, reason="hugepage memory is needed but the pod has no hugepages-2Mi or hugepages-1Gi limit", given="no hugepageLimits"
        )
    if isinstance(wanted_huge, str):
        try:
            wanted_kib = parse_size_kib(wanted_huge)
        except ValueError:
            wanted_kib = 0  # the annotation parser names this error
        if wanted_kib > hugepages_mib * 1024:
            raise KubeletResourceError(
                key=PREFIX + "hugepages", reason=f"{wanted_huge.strip()[:12]} is more than the pod's hugepage limit", given=f"{hugepages_mib}Mi"
            )
    return result


def _check_exclusive(key: str, wanted: str, kube: KubeletResources) -> None:
    given = format_cpulist(kube.cpus) or "no cpuset"
    if not kube.cpus:
        why = "exclusive cores are needed but the spec has no cpuset (is kubelet's CPU manager policy static?)"
        raise KubeletResourceError(key=key, reason=why, given=given)
    if not kube.exclusive:
        if kube.whole_cores is None:
            why = "the container's CPU limit is not a whole number of cores (the pod must be Guaranteed with an integer cpu request)"
        else:
            why = (f"{len(kube.cpus)} core(s) in the cpuset are not the container's {kube.whole_cores} whole core(s): "
                   "the shared pool (is kubelet's CPU manager policy static?)")
        raise KubeletResourceError(key=key, reason=f"exclusive cores are needed but {why}", given=given)
    if wanted.isascii() and wanted.isdigit() and int(wanted) != len(kube.cpus):
        raise KubeletResourceError(key=key, reason=f"asks for {int(wanted)} core(s): make the pod's cpu request {int(wanted)}", given=given)


def request_with_kubelet(annotations: dict[str, Any], kube: KubeletResources, limits: Limits, default_page_kib: int) -> Request:
    """The container's Request with kubelet's cores and hugepage memory in it.

    Parses the annotations as :func:`hook.request.annotations.parse` does.  The ``hugepages`` and
    ``hugepage-size`` annotations are optional here: missing ones are filled from kubelet's
    limit before parsing, and the host's per-container caps (``limits.max_cpus``,
    ``max_hugepages_kib``) are raised to what kubelet gave, since kubelet's admission is the
    authority on a Kubernetes node.  ``cpus`` becomes the number of kubelet's exclusive cores
    (0 when kubelet gave the shared pool: the hook then pins nothing and records no cores).
    """
    filled = dict(annotations)
    if kube.hugepage_size_kib is not None:
        if PREFIX + "hugepages" not in filled:
            filled[PREFIX + "hugepages"] = f"{kube.hugepages_mib}Mi"
        if PREFIX + "hugepage-size" not in filled:
            filled[PREFIX + "hugepage-size"] = format_size_kib(kube.hugepage_size_kib)
    widened = replace(
        limits,
        max_cpus=max(limits.max_cpus, len(kube.cpus)),
        max_hugepages_kib=max(limits.max_hugepages_kib, kube.hugepages_mib * 1024),
    )
    request = parse(filled, widened, default_page_kib)
    return replace(request, cpus=len(kube.cpus) if kube.exclusive else 0)
