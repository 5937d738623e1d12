"""gc's decisions on plain values: whose veth is whose, what a report says."""

from __future__ import annotations

from hook.admin.gc import GcReport, _veth_key, summary
from hook.decide.names import legacy_key


def test_veth_owner_tags_are_scoped_to_the_installation() -> None:
    """Another installation's links are never ours; an earlier release's bare-id tags map to legacy keys."""
    assert _veth_key("scope1/abcd", "scope1") == "abcd"
    assert _veth_key("scope2/abcd", "scope1") is None
    assert _veth_key("", "scope1") == ""
    assert _veth_key("old-container", "scope1") == legacy_key("old-container")


def test_summary_counts_and_errors() -> None:
    report = GcReport(released=[{"container_id": "c1", "key": "k1"}], orphan_ports={"k2": ["dpkk2n0", "dpkk2n1"]}, orphan_records=["k3"],
                      errors=["switch ovs: down"])
    text = summary(report)
    assert text.startswith("released 1 reservation(s) of gone containers, 2 orphan switch port(s), 1 orphan owner record(s)")
    assert text.endswith("\n  error: switch ovs: down") and report.freed_anything
    assert not GcReport().freed_anything
