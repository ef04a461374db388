"""The nftables ruleset the hosts harness writes for each fault (pure text, no namespaces)."""

from __future__ import annotations

import pytest

from tests.support.netns import TABLE, Faults

pytestmark = pytest.mark.unit


def test_no_faults_accepts_everything_and_replaces_the_table_whole() -> None:
    rules = Faults().ruleset()
    assert rules.splitlines()[:2] == [f"table inet {TABLE}", f"delete table inet {TABLE}"]
    assert " drop" not in rules and "policy accept" in rules


def test_each_fault_drops_in_both_directions() -> None:
    rules = Faults(cut_from={"10.200.1.12"}, loss_percent=2.5, blocked_ports={8770}).ruleset()
    assert "ip saddr { 10.200.1.12 } drop" in rules and "ip daddr { 10.200.1.12 } drop" in rules
    assert rules.count("numgen random mod 10000 < 250 counter drop comment \"lost\"") == 2
    assert rules.count("counter comment \"seen\"") == 2, "every packet counted before a fault"
    assert "tcp dport { 8770 } drop" in rules and "tcp sport { 8770 } drop" in rules


def test_isolation_keeps_loopback() -> None:
    lines = [line.strip() for line in Faults(isolated=True).ruleset().splitlines()]
    assert lines.index("iif lo accept") < lines.index("drop")
    assert lines.index("oif lo accept") < len(lines) - 1 - lines[::-1].index("drop")
