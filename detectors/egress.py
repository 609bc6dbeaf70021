"""Read, then send: an outbound connection by a process that read weights.

The agent links a connection to the access session of the process that read a checkpoint
(``session_uid``). Sources that do not link are matched by host, account and program within
``thresholds.egress_window_minutes`` of the read. A destination inside the organisation
(the policy's egress allowlist; without a policy, private addresses) is fine; anywhere else
is a finding, HIGH when the bytes sent are a real share of what was read (or 64 MiB and
more), MEDIUM for a trickle (the low-and-slow thief sends a little every day).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from detectors._text import mib, who
from detectors.access import AccessKind
from detectors.finding import Finding
from policies import Thresholds
from weightwarden.events import AnalyticType, Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context

__all__ = ["EGRESS_RULE", "EgressRule"]

EGRESS_RULE: Final = "weightwarden.rule.read_then_egress"

_REASON: Final = (
    "A process that had just read model weights connected to a destination outside the "
    "egress allowlist: this is the path weights take out of the organisation."
)
_LOUD_BYTES: Final = 64 << 20
_LOUD_SHARE: Final = 0.1
_MINUTE_MS: Final = 60_000
_PRUNE_EVERY: Final = 50_000
_MAX_EVIDENCE: Final = 8


@dataclass(slots=True)
class _Read:
    """A weights read that later connections may be linked to."""

    asset: str
    path: str
    time: int
    bytes: int
    uids: list[str]


class EgressRule:
    """Read-then-egress to a destination not allowed (HIGH 85, or MEDIUM 50 for a trickle)."""

    def __init__(self, context: Context) -> None:
        self._context = context
        policy = context.policy
        window = (policy.thresholds if policy else Thresholds()).egress_window_minutes
        self._window = window * _MINUTE_MS
        self._sessions: dict[str, _Read] = {}
        self._recent: dict[tuple[str, str, str | None], _Read] = {}
        self._seen = 0

    def __call__(self, access: Access) -> list[Finding]:
        """Remember weights reads; judge connections."""
        self._seen += 1
        if self._seen % _PRUNE_EVERY == 0:
            self._prune(access.time)
        if access.kind is AccessKind.READ:
            self._remember(access)
            return []
        if access.kind is not AccessKind.CONNECT:
            return []
        read = self._linked(access)
        if read is None or self._context.inside(access.dst_ip, access.dst_host):
            return []
        loud = access.bytes_out >= _LOUD_BYTES or (
            read.bytes > 0 and access.bytes_out >= _LOUD_SHARE * read.bytes
        )
        where = access.dst_host or access.dst_ip or "an unknown destination"
        if access.dst_port is not None:
            where = f"{where}:{access.dst_port}"
        return [
            Finding(
                rule=EGRESS_RULE,
                name="read then egress",
                kind=AnalyticType.RULE,
                entity=access.user,
                time=access.time,
                severity=Severity.HIGH if loud else Severity.MEDIUM,
                score=85.0 if loud else 50.0,
                title=(
                    f"{who(access)} sent {mib(access.bytes_out)} to {where} after reading "
                    f"{read.asset}"
                ),
                reason=(
                    f"{_REASON} Read {read.path} ({mib(read.bytes)}), then sent "
                    f"{mib(access.bytes_out)} to {where}."
                ),
                evidence=(*read.uids[:_MAX_EVIDENCE], access.uid),
                host=access.host,
                program=access.program,
                path=read.path,
            )
        ]

    def _remember(self, access: Access) -> None:
        asset = self._context.asset_key(access.path) if access.path else None
        if asset is None:
            return
        read = self._sessions.get(access.session) if access.session else None
        if read is None:
            read = _Read(asset=asset, path=access.path, time=access.time, bytes=0, uids=[])
            if access.session:
                self._sessions[access.session] = read
        read.time = access.time
        read.bytes = max(read.bytes, access.bytes or 0)
        if len(read.uids) < _MAX_EVIDENCE:
            read.uids.append(access.uid)
        self._recent[access.host, access.account, access.program] = read

    def _linked(self, access: Access) -> _Read | None:
        if access.session and access.session in self._sessions:
            return self._sessions[access.session]
        read = self._recent.get((access.host, access.account, access.program))
        if read is not None and access.time - read.time <= self._window:
            return read
        return None

    def _prune(self, now: int) -> None:
        horizon = now - self._window
        self._sessions = {k: r for k, r in self._sessions.items() if r.time >= horizon}
        self._recent = {k: r for k, r in self._recent.items() if r.time >= horizon}
