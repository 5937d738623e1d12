"""Annotations are hostile input: a table of good and bad values."""

from __future__ import annotations

import pytest

from hook.config import Limits
from hook.errors import AnnotationError
from hook.model import PortRequest
from hook.request.annotations import ours, parse

P = "dpdk-oci-hook/"
LIMITS = Limits(max_cpus=4, max_hugepages_kib=2 * 1024 * 1024, max_ports=4, max_queues=4)


def req(**kv: str):
    return parse({P + k.replace("_", "-"): v for k, v in kv.items()}, LIMITS, 2048)


def test_count_form_gives_default_ports() -> None:
    """A bare count asks for that many ports with the backend's default mode."""
    r = req(vhost_user="2", cpus="2", hugepages="512Mi")
    assert r.ports == (PortRequest(), PortRequest())
    assert (r.cpus, r.hugepages_mib, r.hugepage_size_kib, r.numa_node) == (2, 512, 2048, None)


def test_json_form_keeps_every_field() -> None:
    """The JSON list form carries bridge, queues, mac, mtu, vlan and mode per port."""
    r = req(
        vhost_user='[{"bridge":"br1","queues":2,"mac":"02:AA:00:00:00:01","mtu":9000,"vlan":10,"mode":"client"},{}]',
        hugepages="1Gi",
    )
    assert r.ports[0] == PortRequest(mode="client", bridge="br1", queues=2, mac="02:aa:00:00:00:01", mtu=9000, vlan=10)
    assert r.ports[1] == PortRequest()
    assert r.hugepages_mib == 1024


def test_one_gig_pages_and_numa_node() -> None:
    """hugepage-size and numa-node are honoured."""
    r = req(hugepages="2Gi", hugepage_size="1Gi", numa_node="0", cpus="1")
    assert (r.hugepage_size_kib, r.hugepages_mib, r.numa_node) == (1048576, 2048, 0)


def test_foreign_annotations_are_ignored() -> None:
    """Only keys under our prefix are ours."""
    assert ours({"io.kubernetes.x": "1", P + "cpus": "1"}) == {P + "cpus": "1"}


BAD = [
    ({"cpus": "0-4294967295"}, "cpus", "not a whole number"),
    ({"cpus": "99"}, "cpus", "outside 0..4"),
    ({"cpus": "-1"}, "cpus", "not a whole number"),
    ({"cpus": "1e3"}, "cpus", "not a whole number"),
    ({"cpus": "٣"}, "cpus", "not a whole number"),
    ({"cpus": "9" * 5000}, "cpus", "longer than 4096"),
    ({"vhost-user": "5", "hugepages": "64Mi"}, "vhost-user", "outside 0..4"),
    ({"vhost-user": "1"}, "hugepages", "need hugepage memory"),
    ({"vhost-user": "[1]", "hugepages": "64Mi"}, "vhost-user", "must be an object"),
    ({"vhost-user": '[{"bridge":"../etc"}]', "hugepages": "64Mi"}, "vhost-user", "bridge"),
    ({"vhost-user": '[{"bridge":"a/b"}]', "hugepages": "64Mi"}, "vhost-user", "bridge"),
    ({"vhost-user": '[{"bridge":"-x"}]', "hugepages": "64Mi"}, "vhost-user", "bridge"),
    ({"vhost-user": '[{"bridge":"a b"}]', "hugepages": "64Mi"}, "vhost-user", "bridge"),
    ({"vhost-user": '[{"bridge":"a,b=c"}]', "hugepages": "64Mi"}, "vhost-user", "bridge"),
    ({"vhost-user": '[{"queues":0}]', "hugepages": "64Mi"}, "vhost-user", "queues"),
    ({"vhost-user": '[{"queues":true}]', "hugepages": "64Mi"}, "vhost-user", "queues"),
    ({"vhost-user": '[{"queues":99999999999999999999}]', "hugepages": "64Mi"}, "vhost-user", "queues"),
    ({"vhost-user": '[{"mac":"01:00:00:00:00:01"}]', "hugepages": "64Mi"}, "vhost-user", "multicast"),
    ({"vhost-user": '[{"mac":"zz"}]', "hugepages": "64Mi"}, "vhost-user", "mac"),
    ({"vhost-user": '[{"mac":"02:00:00:00:00:01"},{"mac":"02:00:00:00:00:01"}]', "hugepages": "64Mi"}, "vhost-user", "same mac"),
    ({"vhost-user": '[{"mtu":20}]', "hugepages": "64Mi"}, "vhost-user", "mtu"),
    ({"vhost-user": '[{"vlan":4096}]', "hugepages": "64Mi"}, "vhost-user", "vlan"),
    ({"vhost-user": '[{"mode":"both"}]', "hugepages": "64Mi"}, "vhost-user", "mode"),
    ({"vhost-user": '[{"path":"/etc/passwd"}]', "hugepages": "64Mi"}, "vhost-user", "unknown field 'path'"),
    ({"vhost-user": '[{"queues":1,"queues":2}]', "hugepages": "64Mi"}, "vhost-user", "twice"),
    ({"vhost-user": "[" + "{}," * 5 + "{}]", "hugepages": "64Mi"}, "vhost-user", "more than the limit"),
    ({"vhost-user": "{", "hugepages": "64Mi"}, "vhost-user", "not a count or a JSON list"),
    ({"hugepages": "3Mi"}, "hugepages", "not a multiple"),
    ({"hugepages": "64M"}, "hugepages", "not a size"),
    ({"hugepages": "4Gi"}, "hugepages", "more than the limit"),
    ({"hugepages": "1Gi", "hugepage-size": "4Mi"}, "hugepage-size", "not 2Mi or 1Gi"),
    ({"hugepages": "512Mi", "hugepage-size": "1Gi"}, "hugepages", "not a multiple"),
    ({"numa-node": "x", "cpus": "1"}, "numa-node", "not a whole number"),
    ({"cpu": "1"}, "cpu", "unknown key"),
    ({"cpus": "0"}, "*", "asks for nothing"),
]


@pytest.mark.parametrize(("given", "key", "reason"), BAD)
def test_bad_values_are_refused_naming_key_and_reason(given: dict[str, str], key: str, reason: str) -> None:
    """Each bad value raises an AnnotationError whose message names the key and the reason."""
    with pytest.raises(AnnotationError) as info:
        parse({P + k: v for k, v in given.items()}, LIMITS, 2048)
    message = str(info.value)
    assert message.startswith(f"annotation {P}{key}:"), message
    assert reason in message


def test_non_string_value_is_refused() -> None:
    """Values must be strings (OCI says so; a hostile engine might not)."""
    with pytest.raises(AnnotationError, match="must be a string"):
        parse({P + "cpus": 2}, LIMITS, 2048)


def test_kernel_ports_alone_need_no_hugepages() -> None:
    """A container with only kernel ports is ours and needs no hugepages; the port limit counts both kinds."""
    r = req(kernel_ports='[{"addresses": ["10.0.0.2/24"], "routes": [{"to": "default", "via": "10.0.0.1"}]}]')
    assert r.kernel_ports[0].name == "eth1" and r.kernel_ports[0].routes == (("default", "10.0.0.1"),)
    with pytest.raises(AnnotationError, match="more than the limit of 4"):
        req(vhost_user="3", hugepages="64Mi", kernel_ports="[{}, {}]")


def test_deeply_nested_json_is_a_clear_error() -> None:
    """Pathological nesting is refused as bad input, not a crash."""
    with pytest.raises(AnnotationError, match="nested too deeply"):
        req(vhost_user="[" * 4000, hugepages="64Mi")


def test_pod_sandbox_containers_are_never_ours() -> None:
    """A Kubernetes pause container carries the pod's annotations but gets nothing."""
    from hook.constants import wants_us

    assert wants_us({P + "cpus": "1"})
    assert not wants_us({P + "cpus": "1", "io.kubernetes.cri.container-type": "sandbox"})
    assert not wants_us({P + "cpus": "1", "io.kubernetes.cri-o.ContainerType": "sandbox"})
    assert not wants_us({"other": "x"})
