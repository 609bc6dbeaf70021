"""The daily roll-up and the analysts' budget."""

from __future__ import annotations

from detectors.finding import DAY_MS, Finding
from detectors.risk import MIN_ALERT_RISK, REPEAT_DAYS, per_day, roll_up, within_budget
from weightwarden.events import AnalyticType, Severity


def finding(
    entity: str, day: int, rule: str, score: float, uid: str, *, severity: Severity | None = None
) -> Finding:
    return Finding(
        rule=rule,
        name=rule,
        kind=AnalyticType.RULE,
        entity=entity,
        time=day * DAY_MS + 1000,
        severity=severity or (Severity.HIGH if score >= 80 else Severity.LOW),
        score=score,
        title=f"{rule} by {entity}",
        reason="because",
        evidence=(uid,),
    )


def test_findings_of_one_rule_merge_and_more_rules_add_with_decaying_weight():
    """Two off-hours reads are one signal; a second rule adds half its score."""
    [risk] = roll_up(
        [
            finding("ann", 10, "egress", 80, "e1"),
            finding("ann", 10, "off_hours", 10, "e2"),
            finding("ann", 10, "off_hours", 10, "e3"),
        ]
    )
    assert risk.score == 80 + 10 / 2
    assert [f.rule for f in risk.findings] == ["egress", "off_hours"]
    assert risk.evidence == ("e1", "e2", "e3")
    assert risk.findings[1].title == "off_hours by ann (+1 more)"


def test_each_user_and_day_is_one_item_ranked_by_risk():
    """Two users on one day, one user on two days: three items, riskiest first."""
    risks = roll_up(
        [
            finding("ann", 10, "a", 50, "e1"),
            finding("bob", 10, "a", 90, "e2"),
            finding("ann", 11, "a", 70, "e3"),
        ]
    )
    assert [(r.entity, r.day) for r in risks] == [("bob", 10), ("ann", 11), ("ann", 10)]


def test_a_budget_keeps_each_days_top_items_and_nothing_below_the_floor():
    """One a day: each day's best, and never a weak signal alone."""
    risks = roll_up(
        [
            finding("ann", 10, "a", 50, "e1"),
            finding("bob", 10, "a", 90, "e2"),
            finding("cid", 11, "a", MIN_ALERT_RISK - 1, "e3"),
        ]
    )
    assert [(r.entity, r.day) for r in within_budget(risks, daily=1)] == [("bob", 10)]


def test_an_open_case_ranks_below_a_new_one_of_similar_risk_the_next_days():
    """Ann was alerted yesterday for rule a; today bob's new case of lower risk goes first."""
    risks = roll_up(
        [
            finding("ann", 10, "a", 70, "e1"),
            finding("ann", 11, "a", 70, "e2"),
            finding("bob", 11, "b", 60, "e3"),
            finding("ann", 20, "a", 70, "e4"),
            finding("bob", 20, "b", 60, "e5"),
        ]
    )
    kept = {(r.entity, r.day) for r in within_budget(risks, daily=1)}
    assert kept == {("ann", 10), ("bob", 11), ("ann", 20)}


def test_a_budget_per_thousand_entities_rounds_and_is_at_least_one_a_day():
    """5 a day per 1,000: 5 for 1,097 entities, 1 for 40."""
    assert per_day(5, 1097) == 5
    assert per_day(10, 1097) == 11
    assert per_day(5, 40) == 1


def test_a_critical_day_takes_the_budget_before_a_riskier_high_one():
    """A canary touch (CRITICAL, 100) goes before a day of several HIGH signals (140)."""
    canary = finding("ann", 10, "canary", 100, "e1", severity=Severity.CRITICAL)
    risks = roll_up([canary, finding("bob", 10, "a", 90, "e2"), finding("bob", 10, "b", 100, "e3")])
    assert [r.entity for r in risks] == ["bob", "ann"]
    assert [r.entity for r in within_budget(risks, daily=1)] == ["ann"]


def test_an_alert_from_an_earlier_run_holds_its_slot_and_is_kept():
    """The 09:00 run alerted ann; at 15:00 bob is riskier, but the day's one slot is taken."""
    risks = roll_up([finding("ann", 10, "a", 50, "e1"), finding("bob", 10, "b", 90, "e2")])
    earlier = {("ann", 10): "a"}
    assert [r.entity for r in within_budget(risks, daily=1, earlier=earlier)] == ["ann"]
    both = within_budget(risks, daily=2, earlier=earlier)
    assert {r.entity for r in both} == {"ann", "bob"}


def test_an_alert_from_an_earlier_run_is_an_open_case_the_next_days():
    """Ann was alerted for rule a by yesterday's run: today bob's new case goes first."""
    risks = roll_up([finding("ann", 11, "a", 70, "e1"), finding("bob", 11, "b", 60, "e2")])
    assert [r.entity for r in within_budget(risks, daily=1)] == ["ann"]
    earlier = {("ann", 10): "a"}
    assert [r.entity for r in within_budget(risks, daily=1, earlier=earlier)] == ["bob"]
    long_ago = {("ann", 11 - REPEAT_DAYS - 1): "a"}
    assert [r.entity for r in within_budget(risks, daily=1, earlier=long_ago)] == ["ann"]
