"""Which connections follow a weights read: the link between reading and sending.

The agent links a connection to the access session of the process that read a checkpoint
(``session_uid``). Sources that do not link are matched by host, account and program within
``thresholds.egress_window_minutes`` of the read. :class:`ReadLinks` keeps the recent reads
(explicit state, pruned as time passes); the egress rule and the user-day features both ask
it, so they agree on what counts as egress of weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from policies import Thresholds

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context

__all__ = ["Read", "ReadLinks"]

_MINUTE_MS: Final = 60_000
_PRUNE_EVERY: Final = 50_000
_MAX_EVIDENCE: Final = 8


@dataclass(slots=True)
class Read:
    """A weights read that later connections may be linked to."""

    asset: str
    path: str
    time: int
    bytes: int
    uids: list[str]


class ReadLinks:
    """Remembers weights reads; links connections to them."""

    def __init__(self, context: Context) -> None:
        self._context = context
        policy = context.policy
        window = (policy.thresholds if policy else Thresholds()).egress_window_minutes
        self._window = window * _MINUTE_MS
        self._sessions: dict[str, Read] = {}
        self._recent: dict[tuple[str, str, str | None], Read] = {}
        self._seen = 0

    def observe(self, access: Access) -> None:
        """Remember a read of weights (call once per read, in time order)."""
        self._seen += 1
        if self._seen % _PRUNE_EVERY == 0:
            self._prune(access.time)
        asset = self._context.asset_key(access.path) if access.path else None
        if asset is None:
            return
        read = self._sessions.get(access.session) if access.session else None
        if read is None:
            read = Read(asset=asset, path=access.path, time=access.time, bytes=0, uids=[])
            if access.session:
                self._sessions[access.session] = read
        read.time = access.time
        read.bytes = max(read.bytes, access.bytes or 0)
        if len(read.uids) < _MAX_EVIDENCE:
            read.uids.append(access.uid)
        self._recent[access.host, access.account, access.program] = read

    def linked(self, access: Access) -> Read | None:
        """The read a connection follows, or None."""
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
