"""Read, then send: an outbound connection by a process that read weights.

Which connection follows which read is :class:`~detectors.links.ReadLinks`' answer. A
destination inside the organisation
(the policy's egress allowlist; without a policy, private addresses) is fine; anywhere else
is a finding, HIGH when the bytes sent are a real share of what was read (or 64 MiB and
more), MEDIUM for a trickle (the low-and-slow thief sends a little every day).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from detectors._text import mib, who
from detectors.access import AccessKind
from detectors.finding import Finding
from weightwarden.events import AnalyticType, Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context
    from detectors.links import ReadLinks

__all__ = ["EGRESS_RULE", "EgressRule"]

EGRESS_RULE: Final = "weightwarden.rule.read_then_egress"

_REASON: Final = (
    "A process that had just read model weights connected to a destination outside the "
    "egress allowlist: this is the path weights take out of the organisation."
)
_LOUD_BYTES: Final = 64 << 20
_LOUD_SHARE: Final = 0.1


class EgressRule:
    """Read-then-egress to a destination not allowed (HIGH 85, or MEDIUM 50 for a trickle)."""

    def __init__(self, context: Context, links: ReadLinks) -> None:
        self._context = context
        self._links = links

    def __call__(self, access: Access) -> list[Finding]:
        """Judge a connection (the links know the reads)."""
        if access.kind is not AccessKind.CONNECT:
            return []
        read = self._links.linked(access)
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
                evidence=(*read.uids, access.uid),
                host=access.host,
                program=access.program,
                path=read.path,
            )
        ]
