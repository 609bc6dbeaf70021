"""First-seen: a user reading weights from a host, with a program or of an asset never before.

After a warm-up (the record's first week, when everything is new, and a new joiner's own
first week), each first use of a program, a host or an asset to read weights is a
finding, scored by how rare it is among the entity's peers (its role), and higher still
when nobody in the record used it: a researcher's first read from another GPU node of the
same family is routine, an administrator's first read with ``dd`` that no administrator
has used is not. Hosts are compared by family (``gpu-012`` is ``gpu-#``), and programs
without their version (``python3.12`` is ``python``: a new interpreter is not a new
tool). A new program used through ``sudo`` or ``su`` (the process runs as another account
than the person) scores higher still: a privileged identity and a tool never used before
is how an insider with admin rights copies what is not theirs.

State is explicit and grows with the record: per entity the programs, host families and
assets seen, per role who used what.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from detectors._text import who
from detectors.access import AccessKind
from detectors.context import host_class
from detectors.finding import DAY_MS, finding_for
from weightwarden.events import AnalyticType, Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context
    from detectors.finding import Finding

__all__ = ["FIRST_SEEN_RULE", "FirstSeenRule"]

FIRST_SEEN_RULE: Final = "weightwarden.rule.first_seen"

_AS_ANOTHER: Final = 10.0
_VERSION: Final = re.compile(r"[\d.]+$")
WARM_UP_MS: Final = 7 * DAY_MS
"""How long after an entity first appears everything it does counts as its baseline."""

_REASON: Final = (
    "First time this user read weights {what}; {peers} of {total} peers in the same role "
    "ever did{anywhere}. New and rare among peers is how stolen credentials and new tools look."
)


class _Seen:
    __slots__ = ("assets", "first", "hosts", "programs")

    def __init__(self, first: int) -> None:
        self.first = first
        self.programs: set[str] = set()
        self.hosts: set[str] = set()
        self.assets: set[str] = set()


class FirstSeenRule:
    """First use of a program (15-65), host family (10-40) or asset (10-35) to read weights."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self._appeared: dict[str, int] = {}
        self._start: int | None = None
        self._seen: dict[str, _Seen] = {}
        self._peers: dict[tuple[str, str, str], set[str]] = {}
        self._members: dict[str, set[str]] = {}

    def appear(self, user: str, time: int) -> None:
        """Note that ``user`` did something at ``time`` (call for every event, in order).

        The record's first week is everyone's warm-up. An entity that first appears after
        it (a new joiner) gets a week of its own; one that was there in the first week is
        established from then on, whatever it did: an administrator who runs commands every
        day but reads weights for the first time in week three is exactly what this rule is
        for.
        """
        if self._start is None:
            self._start = time
        if user not in self._appeared:
            self._appeared[user] = time

    def __call__(self, access: Access) -> list[Finding]:
        """Findings for what this read does for the first time."""
        if access.kind is not AccessKind.READ or not access.path:
            return []
        asset = self._context.asset_key(access.path)
        user = access.user
        seen = self._seen.get(user)
        if seen is None:
            start = self._start if self._start is not None else access.time
            appeared = self._appeared.get(user, access.time)
            warm_from = start if appeared < start + WARM_UP_MS else appeared
            seen = self._seen[user] = _Seen(warm_from)
        if asset is None:
            return []
        role = self._context.role(user)
        members = self._members.setdefault(role, set())
        members.add(user)
        warm = access.time - seen.first >= WARM_UP_MS
        found = []
        family = host_class(access.host) if access.host else None
        program = _VERSION.sub("", access.program) or access.program if access.program else None
        for kind, value, known, low, span, anywhere in (
            ("program", program, seen.programs, 15.0, 20.0, 20.0),
            ("host", family, seen.hosts, 10.0, 20.0, 10.0),
            ("asset", asset, seen.assets, 10.0, 20.0, 5.0),
        ):
            if value is None or value in known:
                continue
            known.add(value)
            users = self._peers.setdefault((role, kind, value), set())
            peers = len(users - {user})
            users.add(user)
            everyone = self._peers.setdefault(("*", kind, value), set())
            unheard = not everyone - {user}
            everyone.add(user)
            if not warm:
                continue
            total = max(len(members) - 1, 1)
            rarity = 1.0 - min(peers / total, 1.0)
            score = low + span * rarity + (anywhere if unheard else 0.0)
            if kind == "program" and access.account != user:
                score += _AS_ANOTHER  # through sudo or su: a privileged identity, a new tool
            what = {
                "program": f"with {access.program}",
                "host": f"from {access.host}",
                "asset": f"of {value}",
            }[kind]
            found.append(
                finding_for(
                    access,
                    rule=FIRST_SEEN_RULE,
                    name=f"first-seen {kind}",
                    kind=AnalyticType.BEHAVIORAL,
                    severity=Severity.MEDIUM if rarity >= 0.9 else Severity.LOW,  # noqa: PLR2004 -- nine in ten peers never did
                    score=score,
                    title=f"{who(access)}: first read of weights {what}",
                    reason=_REASON.format(
                        what=what,
                        peers=peers,
                        total=total,
                        anywhere=", and nobody else in the record" if unheard else "",
                    ),
                )
            )
        return found
