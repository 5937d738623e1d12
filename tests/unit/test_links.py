"""Direct links: the annotation, who may join a link, roles, ports, plan and the links policy."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hook.config import Config, Limits, SwitchConfig, validate
from hook.decide.allocate import allocate
from hook.decide.links import check_link_users, link_id
from hook.decide.plan import make_plan
from hook.errors import AnnotationError, ConfigError, PolicyError, ResourceExhausted
from hook.host.topology import HugepagePool, Node, Topology
from hook.model import LINK_VIRTIO, Instance, LinkRequest, PortRequest, Request, Reservation
from hook.request.annotations import parse
from hook.request.links import parse_links

P = "dpdk-oci-hook/"
KEY = P + "link"
TOPO = Topology(nodes={0: Node(0, frozenset({0, 1, 2, 3}))}, hugepages={2048: HugepagePool(total=512, free=512)})
CFG = Config(cpu_pool=frozenset(range(0, 4)), hugepage_budget_kib=1 << 20, state_dir="/run/h",
             switch=SwitchConfig(scope="scope1"), link_allow=("demo-*", "exact"))
POD = "sandbox-a"


def take(request: Request, entries: dict[str, Reservation] | None = None, cid: str = "c1", cfg: Config = CFG) -> Reservation:
    """Allocate for container ``cid`` (its instance key is ``cid``)."""
    return allocate(request, cfg, TOPO, entries or {}, Instance(cid, f"/b/{cid}", 4242, 7), cid, 1.0).reservation


def linked(*names: str, sandbox: str = POD, **kw: object) -> Request:
    return Request(hugepages_mib=64, hugepage_size_kib=2048, sandbox=sandbox, links=tuple(LinkRequest(n, **kw) for n in names))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the annotation


def test_one_name_or_a_list_of_links() -> None:
    """A bare name is one memif link; a JSON list gives queues, MAC and mode per link."""
    assert parse_links(KEY, " fast0 ", 8, 8) == (LinkRequest("fast0"),)
    got = parse_links(KEY, '[{"name": "a"}, {"name": "b", "queues": 2, "mac": "02:00:00:00:00:0A", "mode": "virtio"}]', 8, 8)
    assert got == (LinkRequest("a"), LinkRequest("b", queues=2, mac="02:00:00:00:00:0a", mode=LINK_VIRTIO))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("../x", "not a name"),
        ("-x", "not a name"),
        ("a,b", "not a name"),
        ("a" * 16, "not a name"),
        ("[]", "non-empty JSON list"),
        ('[{"queues": 1}]', "needs a name"),
        ('[{"name": "a", "colour": 1}]', "unknown field 'colour'"),
        ('[{"name": "a", "mode": "tap"}]', "mode must be memif or virtio"),
        ('[{"name": "a", "queues": 0}]', "queues must be a whole number in 1..8"),
        ('[{"name": "a", "mac": "01:00:00:00:00:01"}]', "multicast"),
        ('[{"name": "a"}, {"name": "a"}]', "named twice"),
        ('[{"name": "a", "name": "b"}]', "given twice"),
        ('["a"]', "must be an object"),
        ("[1, 2", "not a link name or a JSON list"),
    ],
)
def test_bad_links_are_refused_with_the_reason(text: str, reason: str) -> None:
    """Every malformed link value is refused, naming the key and what is wrong."""
    with pytest.raises(AnnotationError, match=reason) as info:
        parse_links(KEY, text, 8, 8)
    assert KEY in str(info.value)


def test_links_count_against_max_ports_and_need_hugepages() -> None:
    """vhost-user ports, links and kernel ports share limits.max_ports; a link needs hugepages."""
    limits = Limits(max_ports=2)
    ann = {P + "vhost-user": "1", P + "link": '[{"name": "a"}, {"name": "b"}]', P + "hugepages": "64Mi"}
    with pytest.raises(AnnotationError, match="more than the limit of 1 ports"):
        parse(ann, limits, 2048)
    with pytest.raises(AnnotationError, match="links need hugepage memory"):
        parse({P + "link": "a"}, limits, 2048)
    request = parse({P + "link": "a", P + "hugepages": "64Mi"}, limits, 2048)
    assert request.links == (LinkRequest("a"),) and not request.ports
    with pytest.raises(AnnotationError, match="more than the limit of 2"):
        parse({P + "link": "a", P + "vhost-user": "1", P + "kernel-ports": "1", P + "hugepages": "64Mi"}, limits, 2048)


# ---------------------------------------------------------------- who may join, roles


def test_first_side_serves_second_joins_third_is_refused() -> None:
    """The first container to name a link in a pod is the server, the second the client, a third is refused."""
    a = take(linked("fast0"), cid="a")
    b = take(linked("fast0"), {"a": a}, cid="b")
    assert [(x.role, x.peer) for x in a.links + b.links] == [("server", ""), ("client", "a")]
    assert a.links[0].link_id == b.links[0].link_id == link_id("scope1", POD, "fast0")
    assert a.links[0].host_dir == b.links[0].host_dir == f"/run/h/links/{a.links[0].link_id}"
    assert a.links[0].container_dir == "/run/dpdk/link-fast0" and a.links[0].mac != b.links[0].mac
    with pytest.raises(ResourceExhausted, match="room on link 'fast0': containers 'a' \\(server\\) and 'b' \\(client\\)"):
        take(linked("fast0"), {"a": a, "b": b}, cid="c")


def test_a_side_that_comes_back_gets_its_role_again() -> None:
    """When the server side's container is gone and comes back, it is the server again (the client kept its side)."""
    a = take(linked("fast0"), cid="a")
    b = take(linked("fast0"), {"a": a}, cid="b")
    again = take(linked("fast0"), {"b": b}, cid="a2")
    assert again.links[0].role == "server" and again.links[0].peer == "b"
    client_again = take(linked("fast0"), {"a": a}, cid="b2")
    assert client_again.links[0].role == "client"


def test_another_pod_naming_the_link_gets_another_link() -> None:
    """A tenant of another pod that guesses the name meets nobody: the id depends on the pod."""
    a = take(linked("fast0"), cid="a")
    b = take(linked("fast0"), {"a": a}, cid="b")
    intruder = take(linked("fast0", sandbox="sandbox-evil"), {"a": a, "b": b}, cid="x")
    assert intruder.links[0].role == "server" and intruder.links[0].link_id != a.links[0].link_id


def test_outside_a_pod_only_allowed_names_link() -> None:
    """Without a sandbox a link needs a name the host policy allows (exact or by prefix); ids differ by scope."""
    with pytest.raises(PolicyError, match="must be allowed by the host .*links allow demo-\\*, exact"):
        take(linked("fast0", sandbox=""))
    a = take(linked("demo-1", sandbox=""), cid="a")
    b = take(linked("demo-1", sandbox=""), {"a": a}, cid="b")
    assert b.links[0].role == "client" and a.links[0].link_id == link_id("scope1", "", "demo-1")
    assert take(linked("exact", sandbox="")).links[0].role == "server"
    with pytest.raises(PolicyError):
        take(linked("exactly", sandbox=""))
    other_install = replace(CFG, switch=SwitchConfig(scope="scope2"))
    assert take(linked("demo-1", sandbox=""), {"a": a}, cid="b", cfg=other_install).links[0].role == "server"
    # a pod's link of the same name is another link than the host-wide one
    assert take(linked("demo-1"), {"a": a}, cid="p").links[0].role == "server"


def test_both_sides_must_agree_on_mode_and_queues() -> None:
    """A joiner asking for another transport or queue count than the link has is refused."""
    a = take(linked("l", mode=LINK_VIRTIO), cid="a")
    with pytest.raises(AnnotationError, match="is a virtio link .*asks for memif"):
        take(linked("l"), {"a": a}, cid="b")
    with pytest.raises(AnnotationError, match="has 1 queue"):
        take(linked("l", mode=LINK_VIRTIO, queues=2), {"a": a}, cid="b")
    with pytest.raises(AnnotationError, match="is the other side's"):
        take(linked("l", mode=LINK_VIRTIO, mac=a.links[0].mac), {"a": a}, cid="b")


def test_both_sides_run_as_one_user() -> None:
    """A side whose host uid/gid differ from the other side's is refused (it could not reach the socket)."""
    a = take(linked("l"), cid="a")
    a.uid = a.gid = 1000
    b = take(linked("l"), {"a": a}, cid="b")
    b.uid = b.gid = 1000
    check_link_users(b, {"a": a, "b": b})
    b.uid = 2000
    with pytest.raises(PolicyError, match="uid 2000 .*uid 1000"):
        check_link_users(b, {"a": a, "b": b})


# ---------------------------------------------------------------- plan


def test_plan_has_the_link_port_after_vhost_user_ports() -> None:
    """The link's port follows the vhost-user ports in eal.args and config.json; its directory is cloned into /run/dpdk."""
    request = replace(linked("fast0"), ports=(PortRequest(),))
    a = take(request, cid="a")
    b = take(linked("fast0"), {"a": a}, cid="b")
    plan_a, plan_b = make_plan(a), make_plan(b)
    memif_a = [x for x in plan_a.eal_args if "net_memif" in x]
    assert memif_a == [f"--vdev=net_memif1,role=server,id=0,socket=/run/dpdk/link-fast0/link.sock,socket-abstract=no,mac={a.links[0].mac}"]
    assert any(x.startswith("--vdev=net_memif0,role=client,") for x in plan_b.eal_args)
    doc = json.loads(plan_a.files["config.json"])
    assert [p["type"] for p in doc["ports"]] == ["vhost-user", "link"]
    assert doc["ports"][1]["link"] == {"name": "fast0", "role": "server", "mode": "memif", "path": "/run/dpdk/link-fast0/link.sock"}
    assert doc["ports"][1]["peer"] == {"role": "client", "container_id": None}
    assert json.loads(plan_b.files["config.json"])["ports"][0]["peer"] == {"role": "server", "container_id": "a"}
    tree = [m for m in plan_a.mounts if m.kind == "tree" and m.target != "/run/dpdk"]
    assert [(m.target, m.source) for m in tree] == [("/run/dpdk/link-fast0", a.links[0].host_dir)]
    assert plan_a.mounts[0].target == "/run/dpdk"  # the run directory the link directory is mounted in comes first
    assert not plan_b.socket_mounts


def test_virtio_link_is_a_virtio_user_and_vhost_pair() -> None:
    """A virtio link: the server side is virtio_user in server mode, the client side net_vhost that reconnects."""
    a = take(linked("v", mode=LINK_VIRTIO, queues=2), cid="a")
    b = take(linked("v", mode=LINK_VIRTIO, queues=2), {"a": a}, cid="b")
    assert f"--vdev=net_virtio_user0,path=/run/dpdk/link-v/link.sock,server=1,queues=2,mac={a.links[0].mac}" in make_plan(a).eal_args
    assert "--vdev=net_vhost0,iface=/run/dpdk/link-v/link.sock,client=1,queues=2" in make_plan(b).eal_args
    assert json.loads(make_plan(b).files["config.json"])["ports"][0]["mac"] is None


def test_reservation_round_trips_its_links() -> None:
    """The ledger stores links with the reservation (status, gc and rebuild read them back)."""
    a = take(linked("fast0"), cid="a")
    assert Reservation.from_dict(json.loads(json.dumps(a.to_dict()))) == a


# ---------------------------------------------------------------- config


def test_links_policy_block() -> None:
    """links { allow = [...] } takes names and prefixes ending in '*'; anything else is refused."""
    base = {"cpus": {"pool": "0-1"}}
    assert validate({**base, "links": {"allow": ["demo-*", "x"]}}, "c.hcl").link_allow == ("demo-*", "x")
    assert validate(base, "c.hcl").link_allow == ()
    for bad in (["a/b"], ["-x"], "demo-*", [""], ["a*b"]):
        with pytest.raises(ConfigError, match="links"):
            validate({**base, "links": {"allow": bad}}, "c.hcl")
    with pytest.raises(ConfigError, match="unknown setting links.deny"):
        validate({**base, "links": {"deny": []}}, "c.hcl")
    cfg = validate({**base, "links": {"allow": ["demo-*"]}}, "c.hcl")
    assert Config.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


def test_status_shows_links() -> None:
    """status names each container's links with role and mode; its JSON carries them from the ledger."""
    from hook.admin.status import Status, format_status

    a = take(linked("fast0"), cid="a")
    row = {**a.to_dict(), "alive": True}
    status = Status("c.hcl", "0-3", 1024, "ovs", [row])
    assert "link=fast0(server, memif)" in format_status(status)
    assert status.to_json()["entries"][0]["links"][0]["link_id"] == a.links[0].link_id
