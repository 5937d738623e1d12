"""kubelet's cores and hugepages, read from a CRI-created container's spec: what is taken, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from hook.config import Limits
from hook.errors import AnnotationError
from hook.request.kubernetes import (
    KubeContext,
    KubeletResourceError,
    kube_context,
    kubelet_request,
    parse_page_size_kib,
    request_with_kubelet,
)

P = "dpdk-oci-hook/"
LIMITS = Limits(max_cpus=2, max_hugepages_kib=256 * 1024, max_ports=4, max_queues=4)

CONTAINERD = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.sandbox-id": "5b1c0ffee",
    "io.kubernetes.cri.sandbox-name": "testpmd-0",
    "io.kubernetes.cri.sandbox-namespace": "dpdk",
    "io.kubernetes.cri.sandbox-uid": "0b7d9f4e-1111-4222-8333-944455556666",
    "io.kubernetes.cri.container-name": "testpmd",
}


def spec(cpus: str | None = "2-3", quota: int | None = 200000, period: int = 100000, shares: int | None = 2048,
         huge: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An OCI spec's linux.resources as containerd writes it from kubelet's LinuxContainerResources."""
    cpu: dict[str, Any] = {"period": period}
    if cpus is not None:
        cpu["cpus"] = cpus
    if quota is not None:
        cpu["quota"] = quota
    if shares is not None:
        cpu["shares"] = shares
    if huge is None:
        huge = [{"pageSize": "2MB", "limit": 128 * 1024 * 1024}, {"pageSize": "1GB", "limit": 0}]
    return {"linux": {"resources": {"cpu": cpu, "hugepageLimits": huge}}}


def ann(**kv: str) -> dict[str, str]:
    return {**CONTAINERD, **{P + k.replace("_", "-"): v for k, v in kv.items()}}


def test_not_kubernetes_is_none() -> None:
    """A podman/docker container, or a pod's sandbox, is not read as a Kubernetes container."""
    assert kubelet_request(spec(), {P + "vhost-user": "1"}) is None
    sandbox = {**CONTAINERD, "io.kubernetes.cri.container-type": "sandbox"}
    assert kubelet_request(spec(), sandbox) is None
    assert kube_context({"io.kubernetes.cri-o.ContainerType": "sandbox"}) is None


def test_containerd_context() -> None:
    """containerd's CRI annotations name the pod, namespace, uid, container and sandbox."""
    assert kube_context(CONTAINERD) == KubeContext(
        pod_uid="0b7d9f4e-1111-4222-8333-944455556666", namespace="dpdk", pod="testpmd-0", container="testpmd", sandbox_id="5b1c0ffee"
    )


def test_crio_context_from_labels() -> None:
    """CRI-O's container type and sandbox id, with the pod identity from kubelet's labels."""
    labels = '{"io.kubernetes.pod.name": "p", "io.kubernetes.pod.namespace": "ns", "io.kubernetes.pod.uid": "u", "io.kubernetes.container.name": "c"}'
    context = kube_context({"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "sb",
                            "io.kubernetes.cri-o.Labels": labels})
    assert context == KubeContext(pod_uid="u", namespace="ns", pod="p", container="c", sandbox_id="sb")


def test_static_policy_cores_and_hugepage_limit_are_taken() -> None:
    """A Guaranteed container with 2 whole cores got exactly 2: exclusive; the 2MB limit is its memory."""
    kube = kubelet_request(spec(), ann(vhost_user="1"))
    assert kube is not None
    assert (kube.cpus, kube.exclusive, kube.whole_cores) == ((2, 3), True, 2)
    assert (kube.hugepages_mib, kube.hugepage_size_kib) == (128, 2048)


def test_exclusive_from_shares_when_kubelet_sets_no_quota() -> None:
    """Without a CFS quota (cpu-cfs-quota off, or no quota for exclusive cores) the shares give the count."""
    kube = kubelet_request(spec(quota=None, shares=2048), ann(vhost_user="1", cpus="2"))
    assert kube is not None and kube.exclusive and kube.cpus == (2, 3)


def test_request_gets_kubelet_values_without_hugepages_annotation() -> None:
    """Under Kubernetes the hugepages annotation is optional: memory and page size come from the limit."""
    annotations = ann(vhost_user="1")
    kube = kubelet_request(spec(huge=[{"pageSize": "1GB", "limit": 1 << 30}, {"pageSize": "2MB", "limit": 0}]), annotations)
    assert kube is not None
    request = request_with_kubelet(annotations, kube, LIMITS, 2048)
    assert (request.cpus, request.hugepages_mib, request.hugepage_size_kib, len(request.ports)) == (2, 1024, 1024 * 1024, 1)


def test_annotated_hugepages_within_the_limit_are_kept() -> None:
    """A smaller hugepages annotation is the hook's hugetlbfs size; it fits inside the cgroup limit."""
    annotations = ann(vhost_user="1", hugepages="64Mi")
    kube = kubelet_request(spec(), annotations)
    assert kube is not None
    assert request_with_kubelet(annotations, kube, LIMITS, 2048).hugepages_mib == 64


def test_shared_pool_gives_no_hook_cores() -> None:
    """Without a cpus annotation a shared cpuset is accepted, but the hook pins and records none."""
    annotations = ann(vhost_user="1")
    kube = kubelet_request(spec(cpus="0-7", quota=150000, shares=1536), annotations)
    assert kube is not None and not kube.exclusive and kube.whole_cores is None
    assert request_with_kubelet(annotations, kube, LIMITS, 2048).cpus == 0


@pytest.mark.parametrize(
    ("resources", "reason"),
    [
        ({"cpus": "0-7"}, "8 core.s. in the cpuset are not the container's 2 whole core.s.: the shared pool"),
        ({"cpus": "0-7", "quota": 150000, "shares": 1536}, "not a whole number of cores"),
        ({"cpus": "2-3", "quota": None, "shares": 2}, "not a whole number of cores"),  # BestEffort
        ({"cpus": None}, "no cpuset"),
        ({"cpus": "3"}, "1 core.s. in the cpuset are not"),  # narrower than the limit: not the static policy's answer either
    ],
)
def test_cpus_annotation_refuses_a_shared_cpuset(resources: dict[str, Any], reason: str) -> None:
    """The cpus annotation asks for exclusive cores: a cpuset that is not exclusive is refused, saying why."""
    with pytest.raises(KubeletResourceError, match=reason) as info:
        kubelet_request(spec(**resources), ann(vhost_user="1", cpus="2"))
    assert info.value.fields["key"] == P + "cpus"
    assert isinstance(info.value, AnnotationError)


def test_cpus_annotation_must_match_kubelet_count() -> None:
    """Two exclusive cores from kubelet but one asked for: the pod's cpu request is what to fix."""
    with pytest.raises(KubeletResourceError, match="make the pod's cpu request 1"):
        kubelet_request(spec(), ann(vhost_user="1", cpus="1"))


def test_ports_without_hugepage_limit_are_refused() -> None:
    """vhost-user ports need hugepage memory; all-zero limits (the pod asked for none) are no limit."""
    zero = [{"pageSize": "2MB", "limit": 0}, {"pageSize": "1GB", "limit": 0}]
    with pytest.raises(KubeletResourceError, match="no hugepages-2Mi or hugepages-1Gi limit") as info:
        kubelet_request(spec(huge=zero), ann(vhost_user="1"))
    assert info.value.fields["key"] == P + "vhost-user"
    with pytest.raises(KubeletResourceError, match="no hugepages-2Mi"):
        kubelet_request(spec(huge=[]), ann(hugepages="64Mi"))


def test_hugepages_annotation_above_the_limit_is_refused() -> None:
    with pytest.raises(KubeletResourceError, match="more than the pod's hugepage limit"):
        kubelet_request(spec(), ann(vhost_user="1", hugepages="256Mi"))


def test_several_page_sizes_need_a_choice() -> None:
    """Limits for both sizes: hugepage-size picks one; without it the request is ambiguous."""
    both = [{"pageSize": "2MB", "limit": 64 << 20}, {"pageSize": "1GB", "limit": 1 << 30}]
    with pytest.raises(KubeletResourceError, match="several page sizes"):
        kubelet_request(spec(huge=both), ann(vhost_user="1"))
    kube = kubelet_request(spec(huge=both), ann(vhost_user="1", hugepage_size="2Mi"))
    assert kube is not None and (kube.hugepages_mib, kube.hugepage_size_kib) == (64, 2048)
    with pytest.raises(KubeletResourceError, match="no hugepages-1Gi limit"):
        kubelet_request(spec(), ann(vhost_user="1", hugepage_size="1Gi"))


@pytest.mark.parametrize(
    "huge",
    [
        [{"pageSize": "2MB", "limit": 3 << 20}],  # not whole pages
        [{"pageSize": "64KB", "limit": 1 << 20}],  # a size the hook does not mount
        [{"pageSize": "2XB", "limit": 1 << 21}],
        [{"pageSize": "2MB", "limit": -1}],
        [{"pageSize": "2MB"}],
        "2MB",
    ],
)
def test_malformed_hugepage_limits_are_refused(huge: Any) -> None:
    with pytest.raises(KubeletResourceError):
        kubelet_request(spec(huge=huge), ann(vhost_user="1"))


def test_malformed_cpuset_is_refused() -> None:
    with pytest.raises(KubeletResourceError, match="linux.resources.cpu.cpus"):
        kubelet_request(spec(cpus="3-1"), ann(vhost_user="1"))


@pytest.mark.parametrize(("text", "kib"), [("2MB", 2048), ("1GB", 1 << 20), ("64KB", 64), ("2mb", 2048)])
def test_page_sizes(text: str, kib: int) -> None:
    assert parse_page_size_kib(text) == kib


@pytest.mark.parametrize("text", ["", "MB", "0MB", "2", "2Mi", "-2MB", "999999MB"])
def test_bad_page_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_page_size_kib(text)


def test_pod_level_limit_stands_in_for_a_spec_without_one() -> None:
    """containerd's default drops hugepageLimits from the spec; the pod cgroup's limit, read by the caller, is used."""
    pod = [{"pageSize": "2MB", "limit": 256 << 20}, {"pageSize": "1GB", "limit": 0}]
    kube = kubelet_request(spec(huge=[]), ann(vhost_user="1"), pod_hugepage_limits=pod)
    assert kube is not None and (kube.hugepages_mib, kube.hugepage_size_kib) == (256, 2048)
    kube = kubelet_request(spec(), ann(vhost_user="1"), pod_hugepage_limits=pod)
    assert kube is not None and kube.hugepages_mib == 128  # the container's own limit wins
