"""The host config: HCL in, validated Config out, cached for the hot path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hook import config as config_mod
from hook.errors import ConfigError

GOOD = """
state_dir = "/run/x-hook"
log_file  = "/var/log/x-hook.log"
cpus {
  pool     = "0-3"
  reserved = "4"
}
hugepages {
  page_size = "2Mi"
  budget    = "2Gi"
  grow_pool = true
}
switch {
  backend       = "ovs"
  bridge        = "br-dpdk"
  create_bridge = false
  timeout_s     = 3
}
limits {
  max_cpus      = 2
  max_ports     = 4
  max_queues    = 2
  max_hugepages = "1Gi"
}
"""


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPDK_OCI_HOOK_CACHE_DIR", str(tmp_path / "cache"))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.hcl"
    path.write_text(text)
    return str(path)


def test_good_config_is_read(tmp_path: Path) -> None:
    """Every setting of the example config lands in the Config."""
    cfg = config_mod.load(write(tmp_path, GOOD))
    assert cfg.state_dir == "/run/x-hook" and cfg.log_file == "/var/log/x-hook.log"
    assert cfg.cpu_pool == {0, 1, 2, 3} and cfg.reserved_cpus == {4}
    assert (cfg.hugepage_size_kib, cfg.hugepage_budget_kib, cfg.grow_pool) == (2048, 2 << 20, True)
    assert (cfg.switch.backend, cfg.switch.create_bridge, cfg.switch.timeout_s) == ("ovs", False, 3.0)
    assert (cfg.limits.max_cpus, cfg.limits.max_ports, cfg.limits.max_queues, cfg.limits.max_hugepages_kib) == (2, 4, 2, 1 << 20)
    assert cfg.ledger_path == "/run/x-hook/ledger.json"


def test_cache_is_used_then_refreshed_on_change(tmp_path: Path) -> None:
    """The second load reads the JSON cache; editing the HCL invalidates it."""
    path = write(tmp_path, GOOD)
    first = config_mod.load(path)
    cache_files = os.listdir(tmp_path / "cache")
    assert len(cache_files) == 1
    assert config_mod.load(path) == first
    Path(path).write_text(GOOD.replace('"0-3"', '"0-1"'))
    os.utime(path, ns=(1, 1))  # make the identity change even within one mtime tick
    assert config_mod.load(path).cpu_pool == {0, 1}


BAD = [
    ("cpus { pool = \"0-3\" \n reserved = \"3\" }", "overlaps cpus.reserved on 3"),
    ("x = 1\ncpus { pool = \"0\" }", "unknown setting x"),
    ("cpus { pool = \"0\" \n extra = 1 }", "unknown setting cpus.extra"),
    ("", "cpus.pool is required"),
    ("cpus { pool = \"0-4294967295\" }", "cpus:"),
    ("cpus { pool = \"0\" }\nswitch { backend = \"vpp\" }", "switch.backend must be one of"),
    ("cpus { pool = \"0\" }\nswitch { backend = \"static\" }", "needs switch.static_sockets"),
    ("cpus { pool = \"0\" }\nswitch { bridge = \"a/b\" }", "not a valid bridge name"),
    ("cpus { pool = \"0\" }\nswitch { timeout_s = \"x\" }", "switch.timeout_s must be float"),
    ("cpus { pool = \"0\" }\nhugepages { page_size = \"4Mi\" }", "page_size must be 2Mi or 1Gi"),
    ("cpus { pool = \"0\" }\nhugepages { budget = \"3Mi\" }", "multiple of page_size"),
    ("cpus { pool = \"0\" }\nstate_dir = \"relative\"", "absolute path"),
    ("cpus { pool = \"0\" }\nlimits { max_cpus = true }", "limits.max_cpus must be int"),
    ("cpus {", "not valid HCL"),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_bad_configs_name_the_setting(tmp_path: Path, text: str, reason: str) -> None:
    """Each invalid config raises ConfigError naming the file and the problem."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert str(info.value).startswith(f"config {path}:")
    assert reason in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """A missing config is a clear error, not a traceback."""
    with pytest.raises(ConfigError, match="No such file"):
        config_mod.load(str(tmp_path / "nope.hcl"))


def test_env_var_overrides_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DPDK_OCI_HOOK_CONFIG points the hook at another config."""
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("DPDK_OCI_HOOK_CONFIG", path)
    assert config_mod.load().path == path


def test_comments_are_not_settings(tmp_path: Path) -> None:
    """Comments in every HCL style are ignored, not reported as unknown settings."""
    cfg = config_mod.load(write(tmp_path, '# top\ncpus {\n  pool = "1" # why\n  // more\n  /* block */\n}\n'))
    assert cfg.cpu_pool == {1}


def test_doctor_reports_the_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """doctor shows, per bridge, what a container may ask for, and whether anti-spoofing is on."""
    from hook.admin.doctor import check_policy

    path = tmp_path / "c.hcl"
    path.write_text('cpus { pool = "0" }\npolicy {\n  anti_spoofing = false\n  bridge "br-a" {\n    vlans = "10-12"\n    vlan_required = true\n'
                    '    allow_mac = false\n  }\n}\n')
    lines = [f.line() for f in check_policy(config_mod.load(str(path), use_cache=False))]
    assert any("bridge br-a: vlans 10-12 (required), MACs made by the hook only" in line for line in lines)
    assert any("anti-spoofing rules off" in line and "[warn" in line for line in lines)


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ('bridge "br a" {\n}', "is not a valid bridge name"),
        ('bridge "br-a" {\n  vlans = "4095"\n}', "vlans must be within 0..4094"),
        ('bridge "br-a" {\n  vlans = "x"\n}', "vlans"),
        ('bridge "br-a" {\n  colour = "red"\n}', "unknown setting policy.bridge.br-a.colour"),
        ('bridge "br-a" {\n}\nbridge "br-a" {\n}', "given twice"),
        ('anti_spoofing = "yes"', "policy.anti_spoofing must be bool"),
    ],
)
def test_bad_policies_are_refused_by_name(tmp_path, policy: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.hcl"
    path.write_text('cpus { pool = "0" }\npolicy {\n' + policy + "\n}\n")
    with pytest.raises(ConfigError, match=reason):
        config_mod.load(str(path), use_cache=False)


def test_the_default_policy_is_the_configured_bridge_and_the_scope_follows_state_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    one, two = tmp_path / "1.hcl", tmp_path / "2.hcl"
    one.write_text('cpus { pool = "0" }\nstate_dir = "/run/a"\n')
    two.write_text('cpus { pool = "0" }\nstate_dir = "/run/b"\n')
    a, b = config_mod.load(str(one), use_cache=False), config_mod.load(str(two), use_cache=False)
    assert [p.name for p in a.policy] == ["br-dpdk"] and a.switch.bridges == ("br-dpdk",) and a.switch.anti_spoofing
    assert a.switch.scope and a.switch.scope != b.switch.scope
