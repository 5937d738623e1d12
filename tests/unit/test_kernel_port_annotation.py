"""The kernel-ports annotation is hostile input: a table of good and bad values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hook.errors import AnnotationError, SwitchError
from hook.host.veth import KernelPortError, owner_tag
from hook.model import KernelPortRequest, KernelPortSpec
from hook.request.kernel_ports import parse_kernel_ports, valid_ifname

K = "dpdk-oci-hook/kernel-ports"


def parse(value: object, max_ports: int = 4) -> tuple[KernelPortRequest, ...]:
    text = value if isinstance(value, str) else json.dumps(value)
    return parse_kernel_ports(K, text, max_ports)


def test_count_form_gives_default_names() -> None:
    """A bare count asks for that many unconfigured ports eth1, eth2, ..."""
    assert parse("2") == (KernelPortRequest(name="eth1"), KernelPortRequest(name="eth2"))
    assert parse(" 0 ") == ()
    assert parse("[]") == ()


def test_json_form_keeps_every_field_normalised() -> None:
    """Names, MAC (lower case), MTU, addresses (canonical text), routes and bridge are kept."""
    ports = parse(
        [
            {
                "name": "data0",
                "mac": "02:AA:00:00:00:01",
                "mtu": 9000,
                "addresses": ["10.0.0.2/24", "FD00:0::2/64"],
                "routes": [
                    {"to": "default", "via": "10.0.0.1"},
                    {"to": "10.1.0.0/16", "via": "10.0.0.254"},
                    {"to": "default", "via": "fd00::1"},
                    {"to": "fd01::/64", "via": "fe80::1"},
                ],
                "bridge": "br-k",
            },
            {},
        ]
    )
    assert ports[0] == KernelPortRequest(
        name="data0",
        mac="02:aa:00:00:00:01",
        mtu=9000,
        addresses=("10.0.0.2/24", "fd00::2/64"),
        routes=(("default", "10.0.0.1"), ("10.1.0.0/16", "10.0.0.254"), ("default", "fd00::1"), ("fd01::/64", "fe80::1")),
        bridge="br-k",
    )
    assert ports[1] == KernelPortRequest(name="eth2")


GOOD = [
    ([{"addresses": ["10.0.0.0/31"]}], ("10.0.0.0/31",)),  # /31: both addresses are hosts (RFC 3021)
    ([{"addresses": ["10.0.0.1/31"]}], ("10.0.0.1/31",)),
    ([{"addresses": ["192.168.1.7/32"]}], ("192.168.1.7/32",)),
    ([{"addresses": ["100.64.0.5/10"]}], ("100.64.0.5/10",)),
    ([{"addresses": ["fd00::/64"]}], ("fd00::/64",)),  # IPv6 has no broadcast: the subnet-router anycast is usable
    ([{"addresses": ["2001:db8::1/128"]}], ("2001:db8::1/128",)),
    ([{"addresses": ["10.0.0.2/024"]}], ("10.0.0.2/24",)),
    ([{"addresses": [], "routes": []}], ()),
    ([{"name": None, "mac": None, "mtu": None, "addresses": None, "routes": None, "bridge": None}], ()),  # null = absent
]


@pytest.mark.parametrize(("value", "addresses"), GOOD)
def test_good_addresses(value: object, addresses: tuple[str, ...]) -> None:
    assert parse(value)[0].addresses == addresses


@pytest.mark.parametrize("name", ["eth1", "e", "net_1", "a.b", "x-y", "ETH9", "a" * 15, "eth0", "1"])
def test_good_names(name: str) -> None:
    assert valid_ifname(name)
    assert parse([{"name": name}])[0].name == name


def test_mtu_bounds() -> None:
    assert parse([{"mtu": 68}])[0].mtu == 68
    assert parse([{"mtu": 9000}])[0].mtu == 9000
    assert parse([{"mtu": 1280, "addresses": ["fd00::2/64"]}])[0].mtu == 1280


BAD = [
    # the value
    ("-1", "not a count"),
    ("1e3", "not a count"),
    ("٣", "not a count"),
    ("5", "outside 0..4"),
    ("{}", "not a count or a JSON list"),
    ('{"name": "eth1"}', "not a count or a JSON list"),
    ('"eth1"', "not a count"),
    ("[", "not a count or a JSON list"),
    ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ("[{}, {}, {}, {}, {}]", "more than the limit of 4"),
    ('[{"name": "a", "name": "b"}]', "'name' given twice"),
    ('[{"routes": [{"to": "default", "to": "default", "via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]}]', "'to' given twice"),
    ("[1]", "port 0 must be an object"),
    ("[[]]", "port 0 must be an object"),
    ('[{"nmae": "eth1"}]', "unknown field 'nmae'"),
    ('[{"type": "veth"}]', "unknown field 'type'"),
    # names
    ('[{"name": "lo"}]', "not an interface name"),
    ('[{"name": ""}]', "not an interface name"),
    ('[{"name": "-x"}]', "not an interface name"),
    ('[{"name": "a/b"}]', "not an interface name"),
    ('[{"name": "a b"}]', "not an interface name"),
    ('[{"name": "a:1"}]', "not an interface name"),
    ('[{"name": "."}]', "not an interface name"),
    ('[{"name": ".."}]', "not an interface name"),
    ('[{"name": "sixteen_chars_xx"}]', "not an interface name"),
    ('[{"name": "eth%d"}]', "not an interface name"),
    ('[{"name": "éth1"}]', "not an interface name"),
    ('[{"name": 1}]', "not an interface name"),
    ('[{}, {"name": "eth1"}]', "ports 0 and 1 are both named eth1"),
    ('[{"name": "x"}, {"name": "x"}]', "both named x"),
    # bridge
    ('[{"bridge": "../etc"}]', "bridge"),
    ('[{"bridge": "a/b"}]', "bridge"),
    ('[{"bridge": ".hidden"}]', "bridge"),
    ('[{"bridge": ""}]', "bridge"),
    ('[{"bridge": 7}]', "bridge"),
    # mac
    ('[{"mac": "01:00:5e:00:00:01"}]', "multicast"),
    ('[{"mac": "00:00:00:00:00:00"}]', "not usable"),
    ('[{"mac": "02:00:00:00:00"}]', "not like"),
    ('[{"mac": "02-00-00-00-00-01"}]', "not like"),
    ('[{"mac": "02:00:00:00:00:0g"}]', "not like"),
    ('[{"mac": 2}]', "not like"),
    ('[{"mac": "02:00:00:00:00:01"}, {"mac": "02:00:00:00:00:01"}]', "same mac"),
    # mtu
    ('[{"mtu": 67}]', "68..9000"),
    ('[{"mtu": 9001}]', "68..9000"),
    ('[{"mtu": "1500"}]', "68..9000"),
    ('[{"mtu": 1500.0}]', "68..9000"),
    ('[{"mtu": true}]', "68..9000"),
    ('[{"mtu": 1279, "addresses": ["fd00::2/64"]}]', "below 1280"),
    # addresses
    ('[{"addresses": "10.0.0.2/24"}]', "must be a list"),
    ('[{"addresses": ["10.0.0.2"]}]', "needs a prefix length"),
    ('[{"addresses": ["10.0.0.2/33"]}]', "not like 10.0.0.2/24"),
    ('[{"addresses": ["10.0.0.256/24"]}]', "not like"),
    ('[{"addresses": ["010.0.0.2/24"]}]', "not like"),
    ('[{"addresses": ["10.0.0.2/24 "]}]', "not an IP address text"),
    ('[{"addresses": ["10.0.0.2/24\\n"]}]', "not an IP address text"),
    ('[{"addresses": ["١٠.0.0.2/24"]}]', "not an IP address text"),
    ('[{"addresses": ["fd00::2%eth0/64"]}]', "not an IP address text"),
    ('[{"addresses": ["host.example/24"]}]', "not like"),
    ('[{"addresses": [24]}]', "not an IP address text"),
    ('[{"addresses": ["10.0.0.0/24"]}]', "network address of 10.0.0.0/24"),
    ('[{"addresses": ["10.0.0.255/24"]}]', "broadcast address of 10.0.0.0/24"),
    ('[{"addresses": ["10.0.0.2/0"]}]', "/0 prefix"),
    ('[{"addresses": ["0.0.0.0/8"]}]', "not a unicast host address"),
    ('[{"addresses": ["127.0.0.2/8"]}]', "not a unicast host address"),
    ('[{"addresses": ["224.0.0.5/24"]}]', "not a unicast host address"),
    ('[{"addresses": ["240.0.0.1/24"]}]', "reserved range"),
    ('[{"addresses": ["::/64"]}]', "not a unicast host address"),
    ('[{"addresses": ["::1/128"]}]', "not a unicast host address"),
    ('[{"addresses": ["ff02::1/64"]}]', "not a unicast host address"),
    ('[{"addresses": ["fe80::2/64"]}]', "link-local"),
    ('[{"addresses": ["10.0.0.2/24", "10.0.0.2/16"]}]', "same address is given twice"),
    ('[{"addresses": ["10.0.0.2/24"]}, {"addresses": ["10.0.0.2/24"]}]', "same address is given to two ports"),
    ("[{\"addresses\": [" + ",".join(f'"10.0.0.{i}/24"' for i in range(1, 10)) + "]}]", "more than 8"),
    # routes
    ('[{"routes": {"to": "default", "via": "10.0.0.1"}, "addresses": ["10.0.0.2/24"]}]', "routes must be a list"),
    ('[{"routes": ["default"], "addresses": ["10.0.0.2/24"]}]', "must be an object"),
    ('[{"routes": [{"to": "default"}], "addresses": ["10.0.0.2/24"]}]', "via is missing"),
    ('[{"routes": [{"via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]}]', "to is missing"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.1", "metric": 5}], "addresses": ["10.0.0.2/24"]}]', "unknown field 'metric'"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.1"}]}]', "none: the port has no IPv4 address"),
    ('[{"routes": [{"to": "default", "via": "10.1.0.1"}], "addresses": ["10.0.0.2/24"]}]', "not in a subnet of the port (10.0.0.0/24)"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.2"}], "addresses": ["10.0.0.2/24"]}]', "own address"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.255"}], "addresses": ["10.0.0.2/24"]}]', "broadcast address"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.0"}], "addresses": ["10.0.0.2/24"]}]', "network or broadcast"),
    ('[{"routes": [{"to": "default", "via": "0.0.0.0"}], "addresses": ["10.0.0.2/24"]}]', "not a unicast address"),
    ('[{"routes": [{"to": "default", "via": "fd00::1"}], "addresses": ["10.0.0.2/24"]}]', "no IPv6 address"),
    ('[{"routes": [{"to": "default", "via": "gateway"}], "addresses": ["10.0.0.2/24"]}]', "not an IP address"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.1/24"}], "addresses": ["10.0.0.2/24"]}]', "not an IP address"),
    ('[{"routes": [{"to": "10.1.0.1/16", "via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]}]', "host bits set"),
    ('[{"routes": [{"to": "fd01::/64", "via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]}]', "not the same IP version"),
    ('[{"routes": [{"to": "10.0.0.0/24", "via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]}]', "own subnet"),
    ('[{"routes": [{"to": "Default", "via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]}]', "not \"default\" or a network"),
    ('[{"routes": [{"to": "default", "via": "10.0.0.1"}, {"to": "0.0.0.0/0", "via": "10.0.0.3"}], "addresses": ["10.0.0.2/24"]}]',
     "route to default (IPv4) is given twice"),
    ('[{"routes": [{"to": "10.9.0.0/16", "via": "10.0.0.1"}], "addresses": ["10.0.0.2/24"]},'
     ' {"routes": [{"to": "10.9.0.0/16", "via": "10.1.0.1"}], "addresses": ["10.1.0.2/24"]}]', "route to 10.9.0.0/16 is given twice"),
    ("[{\"addresses\": [\"10.0.0.2/16\"], \"routes\": [" + ",".join(f'{{"to": "10.{i}.0.0/16", "via": "10.0.0.1"}}' for i in range(1, 18)) + "]}]",
     "more than 16"),
]


@pytest.mark.parametrize(("value", "reason"), BAD)
def test_bad_values_are_refused_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(AnnotationError) as err:
        parse_kernel_ports(K, value, 4)
    assert err.value.fields["key"] == K
    assert reason in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_spec_round_trips_through_a_dict() -> None:
    """A spec survives the ledger's JSON (tuples become lists and back)."""
    spec = KernelPortSpec(
        index=1, host_name="dpv0123456789k1", ifname="eth2", bridge="br0", mac="02:00:00:00:00:01", mtu=1500,
        addresses=("10.0.0.2/24",), routes=(("default", "10.0.0.1"),),
    )
    assert KernelPortSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_owner_tag_fits_an_alias() -> None:
    assert owner_tag("ctr1") == "dpdk-oci-hook-owner=ctr1"
    long = owner_tag("x" * 300)
    assert long.startswith("dpdk-oci-hook-owner=sha256:") and len(long) < 256
    assert owner_tag("a\nb").startswith("dpdk-oci-hook-owner=sha256:")


def test_errors_are_switch_errors() -> None:
    """The CLI maps by class name along the MRO: a KernelPortError exits 7 like a SwitchError."""
    err = KernelPortError(port="dpv1k0", reason="boom", backend="kernel")
    assert isinstance(err, SwitchError)
    assert str(err) == "kernel port dpv1k0: boom"


def test_parsing_does_not_load_pyroute2() -> None:
    """Importing the module and validating stay off pyroute2, whose import costs ~150-250 ms."""
    code = (
        "import sys; from hook.request.kernel_ports import parse_kernel_ports as p; "
        "p('k', '[{\"addresses\": [\"10.0.0.2/24\"], \"routes\": [{\"to\": \"default\", \"via\": \"10.0.0.1\"}]}]', 1); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'asyncio', 'ctypes')))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
