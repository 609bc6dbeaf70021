"""What every detector needs to know besides the events: the policy, grants, and weights.

:class:`Context` is built once per run. It answers, cheaply and the same way for every
detector, which asset a path belongs to, whether a file is weights at all, whether a
destination is inside the organisation, and which peer group an entity belongs to.

Without a policy (an event stream from elsewhere), detection still runs: a file is weights
when its name says so (``.safetensors``, ``.pt``, ...), its asset is the folder above its
checkpoint folder, only private, loopback and link-local addresses are inside, and the
rules that need a policy (unauthorised principal, grants, team hours) stay silent.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from policies import matches

if TYPE_CHECKING:
    from collections.abc import Mapping

    from policies import Asset, Grant, Policy, ServiceAccount, Suppression

__all__ = ["WEIGHT_SUFFIXES", "Context", "host_class"]

WEIGHT_SUFFIXES: Final = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".gguf",
    ".h5",
    ".onnx",
    ".msgpack",
    ".npz",
)
"""File name endings that mark model weights when no policy asset covers a path."""

_DIGITS: Final = re.compile(r"\d+")
_UNASSIGNED: Final = "unassigned"
_SERVICE: Final = "service"


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """The policy side of a detection run.

    Attributes:
        policy: The policy, or None to run without one (see the module doc).
        grants: Access grants the collector keeps.
        suppressions: Suppressions beyond the policy's own (from analysts' feedback).
    """

    policy: Policy | None = None
    grants: tuple[Grant, ...] = ()
    suppressions: tuple[Suppression, ...] = ()
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, default=()
    )
    _grants_by_user: Mapping[str, tuple[Grant, ...]] = field(init=False, default_factory=dict)
    _assets: dict[str, Asset | None] = field(init=False, default_factory=dict)
    _roles: dict[str, str] = field(init=False, default_factory=dict)
    _accounts: dict[str, ServiceAccount | None] = field(init=False, default_factory=dict)
    _canaries: dict[str, bool] = field(init=False, default_factory=dict)
    _allowed: dict[tuple[str, str, str | None, str | None], bool] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        cidrs = self.policy.egress.allow_cidrs if self.policy else ()
        object.__setattr__(self, "_networks", tuple(_network(cidr) for cidr in cidrs))
        by_user: dict[str, list[Grant]] = {}
        for grant in self.grants:
            by_user.setdefault(grant.user, []).append(grant)
        object.__setattr__(
            self, "_grants_by_user", {user: tuple(gs) for user, gs in by_user.items()}
        )

    # -- weights ------------------------------------------------------------------------

    def asset(self, path: str) -> Asset | None:
        """The policy asset covering ``path`` (memoised), or None."""
        if self.policy is None:
            return None
        try:
            return self._assets[path]
        except KeyError:
            found = self._assets[path] = self.policy.asset_for(path)
            return found

    def asset_key(self, path: str) -> str | None:
        """The name of the weights ``path`` belongs to, or None when it is not weights.

        With a policy, the covering asset's name; otherwise, for a file whose name marks
        weights, the folder two levels up (``/data/ckpt/run-7`` for
        ``/data/ckpt/run-7/step-100/model.safetensors``).
        """
        asset = self.asset(path)
        if asset is not None:
            return asset.name
        if self.policy is not None and self.policy.assets:
            return None
        return _folder_asset(path)

    def is_weights(self, path: str) -> bool:
        """Whether ``path`` is model weights (an asset's file, or named like weights)."""
        return self.asset(path) is not None or path.endswith(WEIGHT_SUFFIXES)

    def approved_copy(self, source: str, path: str) -> bool:
        """Whether a copy of ``source`` may be written at ``path``.

        Inside the source asset's files or its ``approved_roots``; without a policy asset
        for the source, never.
        """
        asset = self.asset(source)
        return asset is not None and (asset.covers(path) or matches(path, asset.approved_roots))

    def is_canary(self, path: str) -> bool:
        """Whether the policy lists ``path`` as a decoy (memoised)."""
        if self.policy is None:
            return False
        try:
            return self._canaries[path]
        except KeyError:
            found = self._canaries[path] = matches(path, self.policy.canaries)
            return found

    # -- principals ----------------------------------------------------------------------

    def allowed(self, *, asset: str, user: str, program: str | None, host: str | None) -> bool:
        """Whether an access rule lets ``user`` read ``asset`` (no policy: yes; memoised)."""
        if self.policy is None:
            return True
        key = (asset, user, program, host)
        try:
            return self._allowed[key]
        except KeyError:
            found = self.policy.allows(asset=asset, user=user, program=program, host=host)
            self._allowed[key] = found
            return found

    def granted(self, *, asset: str, user: str, time: int) -> bool:
        """Whether ``user`` holds a grant for ``asset`` in force at ``time``."""
        return any(
            grant.asset == asset and grant.valid_at(time)
            for grant in self._grants_by_user.get(user, ())
        )

    def is_service(self, user: str) -> bool:
        """Whether ``user`` is a service account of the policy."""
        return self.service_account(user) is not None

    def service_account(self, name: str) -> ServiceAccount | None:
        """The policy's service account called ``name`` (memoised), or None."""
        if self.policy is None:
            return None
        try:
            return self._accounts[name]
        except KeyError:
            found = self._accounts[name] = self.policy.service_account(name)
            return found

    def role(self, user: str) -> str:
        """The peer group of ``user``: its team's role, ``service``, or ``unassigned``."""
        try:
            return self._roles[user]
        except KeyError:
            role = _UNASSIGNED
            if self.policy is not None:
                team = self.policy.team_of(user)
                if team is not None:
                    role = team.role
                elif self.policy.service_account(user) is not None:
                    role = _SERVICE
            self._roles[user] = role
            return role

    # -- destinations ---------------------------------------------------------------------

    def internal(self, ip: str | None) -> bool:
        """Whether an address is inside the organisation's networks (no data leaves).

        With a policy: one of its ``allow_cidrs``. Without one: private, loopback or
        link-local. Approved outside services (``allow_hosts``) are not internal: data sent
        there has left, even if the policy allows it.
        """
        address = _address(ip)
        if address is None:
            return False
        if self.policy is None:
            return address.is_private or address.is_loopback or address.is_link_local
        return any(address in network for network in self._networks)

    def inside(self, ip: str | None, hostname: str | None) -> bool:
        """Whether a destination is inside the organisation (allowed for weights' readers).

        With a policy: an allowed network or host name. Without one: private, loopback or
        link-local addresses. An address that does not parse is outside.
        """
        if self.policy is not None and matches(hostname, self.policy.egress.allow_hosts):
            return True
        return self.internal(ip)

    # -- suppressions ---------------------------------------------------------------------

    def suppressed(
        self,
        *,
        rule: str,
        user: str,
        host: str | None,
        program: str | None,
        path: str | None,
        time: int,
    ) -> bool:
        """Whether a policy or feedback suppression silences ``rule`` for this scope."""
        policy_rules = self.policy.suppressions if self.policy else ()
        return any(
            suppression.applies(
                rule=rule, user=user, host=host, program=program, path=path, time=time
            )
            for suppression in (*policy_rules, *self.suppressions)
        )


def host_class(host: str) -> str:
    """A host's family: digits replaced (``gpu-012`` and ``gpu-340`` are both ``gpu-#``)."""
    return _DIGITS.sub("#", host)


@lru_cache(maxsize=65536)
def _address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not ip:
        return None
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _folder_asset(path: str) -> str | None:
    if not path.endswith(WEIGHT_SUFFIXES):
        return None
    parts = path.rsplit("/", 2)
    return parts[0] or "/" if len(parts) == 3 else None  # noqa: PLR2004 -- dir/checkpoint/file
