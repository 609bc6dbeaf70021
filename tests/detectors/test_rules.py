"""The explainable rules: each fires on the behaviour it names and stays quiet on its twin."""

from __future__ import annotations

import itertools

from detectors.access import Access, AccessKind
from detectors.authorization import GRANT_RULE, PRINCIPAL_RULE, AuthorizationRules
from detectors.bulk_read import BULK_RULE, BulkReadRule, asset_bytes
from detectors.context import Context
from detectors.egress import EGRESS_RULE, EgressRule
from detectors.integrity import CANARY_RULE, SEAL_RULE, IntegrityRules
from detectors.links import ReadLinks
from detectors.novelty import FirstSeenRule
from detectors.off_hours import OFF_HOURS_RULE, OffHoursRule
from detectors.staging import COPY_RULE, STAGING_RULE, StagingRules
from policies import Grant
from weightwarden.events import Severity

DAY = 86_400_000
HOUR = 3_600_000
MONDAY = 1_767_571_200_000
_ids = itertools.count()
SHM = "/dev/shm"  # noqa: S108 -- a staging place the rule watches, not a temp file


def access(**fields) -> Access:
    """A read of a frontier-7b shard by alice with python3 on gpu-001, Monday 10:00 UTC."""
    base = Access(
        uid=f"e{next(_ids)}",
        time=MONDAY + 10 * HOUR,
        host="gpu-001",
        kind=AccessKind.READ,
        user="alice",
        account="alice",
        program="python3",
        path="/data/ckpt/frontier-7b/step-100/model-00001-of-00002.safetensors",
        size=4 << 30,
        bytes=4 << 30,
        session="s1",
        phase="close",
    )
    return base._replace(**fields)


def rules_of(findings) -> list[str]:
    return [finding.rule for finding in findings]


def test_an_allowed_researcher_reading_with_an_allowed_program_raises_nothing(policy):
    """Alice is in research, research may read frontier-7b with python3 on gpu nodes."""
    context = Context(policy=policy)
    assert AuthorizationRules(context)(access()) == []


def test_a_user_outside_every_access_rule_is_an_unauthorised_principal(policy):
    """Eve is named nowhere: the read is HIGH and names who, how and what."""
    [finding] = AuthorizationRules(Context(policy=policy))(access(user="eve", account="eve"))
    assert finding.rule == PRINCIPAL_RULE
    assert finding.severity is Severity.HIGH
    assert finding.title == "eve (python3 on gpu-001) read frontier-7b without being allowed to"
    assert "frontier-7b (critical)" in finding.reason


def test_an_allowed_user_with_a_program_the_rule_does_not_list_is_unauthorised(policy):
    """Alice reading through dd is not what the rule allows."""
    findings = AuthorizationRules(Context(policy=policy))(access(program="dd"))
    assert rules_of(findings) == [PRINCIPAL_RULE]


def test_a_grant_in_force_lets_an_unlisted_user_read_and_an_expired_one_does_not(policy):
    """Grants are checked against the time of the read."""
    grant = Grant(
        id="g1",
        user="eve",
        asset="frontier-7b",
        approver="carol",
        reason="audit",
        created_at=MONDAY,
        until=MONDAY + DAY,
    )
    rules = AuthorizationRules(Context(policy=policy, grants=(grant,)))
    assert rules(access(user="eve", account="eve")) == []
    late = access(user="eve", account="eve", time=MONDAY + 2 * DAY)
    assert rules_of(rules(late)) == [PRINCIPAL_RULE]


def test_an_asset_that_requires_a_grant_needs_one_even_for_a_listed_user(policy):
    """secret-70b lists alice, but also requires a grant: without one the read is flagged."""
    read = access(path="/data/ckpt/secret-70b/step-1/model.safetensors")
    rules = AuthorizationRules(Context(policy=policy))
    assert rules_of(rules(read)) == [GRANT_RULE]
    grant = Grant(
        id="g2",
        user="alice",
        asset="secret-70b",
        approver="carol",
        reason="eval",
        created_at=MONDAY,
        until=MONDAY + DAY,
    )
    assert AuthorizationRules(Context(policy=policy, grants=(grant,)))(read) == []


def test_a_service_account_named_by_a_rule_reads_a_grant_only_asset_without_a_grant(policy):
    """Jobs cannot ask for grants: a listed service account is not held to the two-person rule."""
    read = access(
        user="svc-train",
        account="svc-train",
        program="torchrun",
        path="/data/ckpt/secret-70b/step-1/model.safetensors",
    )
    assert AuthorizationRules(Context(policy=policy))(read) == []


def test_without_a_policy_no_authorisation_rule_fires():
    """No policy, no claim about who may read what."""
    assert AuthorizationRules(Context())(access(user="eve", account="eve")) == []


def test_a_canary_is_critical_whether_the_agent_or_the_policy_marks_it(policy):
    """The agent's canary flag and the policy's canary globs both count."""
    rules = IntegrityRules(Context(policy=policy))
    [flagged] = rules(access(canary=True))
    [listed] = rules(access(path="/data/ckpt/old/model.safetensors"))
    assert (flagged.rule, flagged.severity, flagged.score) == (CANARY_RULE, Severity.CRITICAL, 100)
    assert listed.rule == CANARY_RULE
    assert rules(access()) == []


def test_a_tampered_seal_is_a_finding_and_an_intact_one_is_not(policy):
    """Seal status tampered fires; intact does not."""
    rules = IntegrityRules(Context(policy=policy))
    assert rules_of(rules(access(kind=AccessKind.WRITE, seal="tampered"))) == [SEAL_RULE]
    assert rules(access(seal="intact")) == []


def test_a_copy_outside_the_approved_roots_fires_and_inside_them_does_not(policy):
    """Copies to the converted folder are approved; to a home folder they are not."""
    rules = StagingRules(Context(policy=policy))
    source = "/data/ckpt/frontier-7b/step-100/model-00001-of-00002.safetensors"
    home = access(kind=AccessKind.WRITE, path="/home/eve/m.safetensors", copy_source=source)
    approved = home._replace(path="/data/converted/m.safetensors")
    assert rules_of(rules(home)) == [COPY_RULE]
    assert rules(approved) == []


def test_weights_staged_to_removable_media_are_critical_and_to_shm_high(policy):
    """Staging: /media is CRITICAL, /dev/shm HIGH; non-weights to /dev/shm are fine."""
    rules = StagingRules(Context(policy=policy))
    source = "/data/ckpt/frontier-7b/step-100/model-00001-of-00002.safetensors"
    [usb] = rules(access(kind=AccessKind.WRITE, path="/media/usb0/x.bin", copy_source=source))
    [shm] = rules(access(kind=AccessKind.WRITE, path=f"{SHM}/x.safetensors"))
    assert (usb.rule, usb.severity) == (STAGING_RULE, Severity.CRITICAL)
    assert (shm.rule, shm.severity) == (STAGING_RULE, Severity.HIGH)
    assert rules(access(kind=AccessKind.WRITE, path=f"{SHM}/batch-0001.arrow")) == []


def egress_rule(context):
    links = ReadLinks(context)
    return EgressRule(context, links), links


def connect(**fields):
    return access(
        kind=AccessKind.CONNECT,
        path="",
        size=None,
        bytes=0,
        phase=None,
        time=MONDAY + 10 * HOUR + 60_000,
        **fields,
    )


def test_reading_weights_then_sending_them_outside_the_allowlist_is_high(policy):
    """The session links the read to the upload; the destination is not allowed."""
    rule, links = egress_rule(Context(policy=policy))
    read = access()
    links.observe(read)
    [finding] = rule(connect(dst_ip="142.250.1.1", dst_host="drive.google.com", bytes_out=3 << 30))
    assert (finding.rule, finding.severity) == (EGRESS_RULE, Severity.HIGH)
    assert read.uid in finding.evidence
    assert "drive.google.com" in finding.title


def test_egress_to_an_allowed_network_or_host_raises_nothing(policy):
    """Internal object stores are allowed by CIDR or host name."""
    rule, links = egress_rule(Context(policy=policy))
    links.observe(access())
    assert rule(connect(dst_ip="10.1.2.3", bytes_out=3 << 30)) == []
    assert rule(connect(dst_ip="52.1.1.1", dst_host="s3.corp.example", bytes_out=3 << 30)) == []


def test_a_trickle_out_is_medium_and_a_connection_unrelated_to_a_read_is_ignored(policy):
    """Low-and-slow sends a little; a process that read nothing may go anywhere."""
    rule, links = egress_rule(Context(policy=policy))
    links.observe(access())
    [trickle] = rule(connect(dst_ip="203.0.113.9", bytes_out=1 << 20))
    assert trickle.severity is Severity.MEDIUM
    unrelated = connect(dst_ip="203.0.113.9", session=None, program="pip", bytes_out=1 << 30)
    assert rule(unrelated) == []


def test_without_a_policy_private_destinations_are_inside_and_public_ones_are_not():
    """The no-policy fallback: RFC 1918 is inside."""
    rule, links = egress_rule(Context())
    links.observe(access())
    assert rule(connect(dst_ip="192.168.1.10", bytes_out=1 << 30)) == []
    assert rules_of(rule(connect(dst_ip="142.250.1.1", bytes_out=1 << 30))) == [EGRESS_RULE]


def shard(step: int, index: int, **fields):
    return access(
        path=f"/data/ckpt/frontier-7b/step-{step}/model-{index:05d}.safetensors",
        size=1 << 30,
        **fields,
    )


def test_reading_most_of_an_assets_checkpoints_in_an_hour_is_a_bulk_read(policy):
    """Half of five checkpoints within minutes is bulk; loading one checkpoint is not."""
    context = Context(policy=policy)
    every = [shard(step, i) for step in range(5) for i in range(2)]
    sizes = asset_bytes(context, every)
    rule = BulkReadRule(context, sizes)
    one_checkpoint = [rule(shard(0, i, time=MONDAY + i * 1000)) for i in range(2)]
    assert one_checkpoint == [[], []]
    found = [
        f
        for step in range(1, 4)
        for i in range(2)
        for f in rule(shard(step, i, time=MONDAY + 10_000 + step * 1000 + i))
    ]
    assert rules_of(found) == [BULK_RULE]
    assert "50% of the asset's 10.0 GiB" in found[0].reason


def test_a_reader_that_bulk_reads_every_week_is_flagged_as_routine_and_scored_low(policy):
    """The third bulk day of one reader and asset is routine."""
    context = Context(policy=policy)
    every = [shard(step, i) for step in range(2) for i in range(2)]
    rule = BulkReadRule(context, asset_bytes(context, every))
    scores = []
    for week in range(3):
        start = MONDAY + week * 7 * DAY
        for n, read in enumerate(every):
            found = rule(read._replace(time=start + n * 1000, user="svc-backup"))
            scores += [f.score for f in found]
    assert scores == [45.0, 45.0, 10.0]


def test_a_read_outside_team_hours_is_off_hours_and_on_call_teams_have_no_hours(policy):
    """Research works 08-20 UTC on weekdays; infra has no hours."""
    rule = OffHoursRule(Context(policy=policy))
    assert rule(access(time=MONDAY + 10 * HOUR)) == []
    assert rules_of(rule(access(time=MONDAY + 23 * HOUR))) == [OFF_HOURS_RULE]
    assert rules_of(rule(access(time=MONDAY + 5 * DAY + 10 * HOUR))) == [OFF_HOURS_RULE]
    assert rule(access(user="dave", account="dave", time=MONDAY + 3 * HOUR)) == []


def test_first_seen_is_quiet_during_warm_up_and_scores_a_program_no_peer_uses_highest(policy):
    """After a week, alice's first dd is rare among researchers; a common program is not."""
    rule = FirstSeenRule(Context(policy=policy))
    rule(access(user="bob", account="bob", program="jupyter"))
    assert rule(access(program="python3")) == []
    assert rule(access(program="torchrun", time=MONDAY + DAY)) == []
    later = MONDAY + 8 * DAY
    [common] = rule(access(program="jupyter", time=later))
    [rare] = rule(access(program="dd", time=later + 1))
    assert rare.score > common.score
    assert rare.title == "alice (dd on gpu-001): first read of weights with dd"


def test_a_new_host_of_a_known_family_is_not_new_but_a_new_family_is(policy):
    """gpu-002 is another gpu-#; dev-box-7 is a new family for alice."""
    rule = FirstSeenRule(Context(policy=policy))
    rule(access())
    later = MONDAY + 8 * DAY
    assert rule(access(host="gpu-002", time=later)) == []
    [finding] = rule(access(host="devbox-7", time=later))
    assert finding.name == "first-seen host"
