"""Who may read which weights: the unauthorised-principal and missing-grant rules.

For every read of a policy asset, the reader (the person behind the process, else the
account it ran as) must be named by an access rule for that asset, with an allowed program
on an allowed host, or hold a grant in force. An asset that ``requires_grant`` needs a
grant from people even when a rule names them; service accounts named by a rule read it
without one (jobs cannot ask for grants).

A service account read from a host or with a program its entry in the policy does not
list is out of place, whatever the access rules say: job credentials are bound to the job.

One finding per reader, asset and reason per day is enough to act on; later reads of the
same day add evidence (the daily roll-up merges them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from detectors._text import who
from detectors.access import AccessKind
from detectors.finding import Finding, finding_for
from policies import matches
from weightwarden.events import Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context

__all__ = ["GRANT_RULE", "PRINCIPAL_RULE", "SERVICE_RULE", "AuthorizationRules"]

PRINCIPAL_RULE: Final = "weightwarden.rule.unauthorised_principal"
GRANT_RULE: Final = "weightwarden.rule.no_valid_grant"
SERVICE_RULE: Final = "weightwarden.rule.service_account_out_of_place"

_PRINCIPAL_REASON: Final = (
    "No access rule of the policy lets this user read this asset with this program on this "
    "host, and the user holds no grant for it: the policy denies by default."
)
_SERVICE_REASON: Final = (
    "Service accounts run jobs on known hosts with known programs (the policy's "
    "service_accounts); its credentials used elsewhere, or through another program, are how "
    "a stolen job token looks."
)
_GRANT_REASON: Final = (
    "The asset requires a time-limited grant approved by a second person (two-person rule), "
    "and the user held none in force at the time of the read."
)


class AuthorizationRules:
    """Unauthorised principal, service account out of place, no valid grant (HIGH, 85)."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def __call__(self, access: Access) -> list[Finding]:
        """The finding a read of an asset raises when the reader is not allowed."""
        context = self._context
        if access.kind is not AccessKind.READ or context.policy is None or not access.path:
            return []
        asset = context.asset(access.path)
        if asset is None:
            return []
        user = access.user
        granted = context.granted(asset=asset.name, user=user, time=access.time)
        by_rule = context.allowed(
            asset=asset.name, user=user, program=access.program, host=access.host
        ) or (
            access.account != user
            and context.is_service(access.account)
            and context.allowed(
                asset=asset.name, user=access.account, program=access.program, host=access.host
            )
        )
        account = context.service_account(access.account) or context.service_account(user)
        if account is not None and not (
            (not account.hosts or matches(access.host, account.hosts))
            and (not account.programs or matches(access.program, account.programs))
        ):
            rule, name, reason = SERVICE_RULE, "service account out of place", _SERVICE_REASON
            title = (
                f"{who(access)} read {asset.name} as service account {account.name} "
                "outside its hosts or programs"
            )
        elif not by_rule and not granted:
            rule, name, reason = PRINCIPAL_RULE, "unauthorised principal", _PRINCIPAL_REASON
            title = f"{who(access)} read {asset.name} without being allowed to"
        elif asset.requires_grant and not granted and not context.is_service(user):
            rule, name, reason = GRANT_RULE, "no valid grant", _GRANT_REASON
            title = f"{who(access)} read {asset.name} without a grant in force"
        else:
            return []
        return [
            finding_for(
                access,
                rule=rule,
                name=name,
                severity=Severity.HIGH,
                score=85.0,
                title=title,
                reason=f"{reason} Asset {asset.name} ({asset.sensitivity}): {access.path}.",
            )
        ]
