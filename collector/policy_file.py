"""Read a policy file from disk and parse it: the one place the collector opens policies.

:mod:`policies` is pure (it parses text); this module adds the file I/O, so every
command (``policy check``, ``access grant``, ``detect``, ``eval``) reports a missing,
unreadable or non-UTF-8 policy file the same way: one
:class:`~weightwarden.errors.ConfigError` line (exit 78) naming the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detectors.catalogue import RULE_UIDS
from policies import parse_policy
from weightwarden.config import read_text
from weightwarden.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from policies import Policy

__all__ = ["load_policy"]


def load_policy(path: Path) -> Policy:
    """The policy in the file at ``path``, parsed and validated.

    Raises:
        ConfigError: The file is missing, a directory, unreadable, not UTF-8, or not a
            valid policy (see :func:`policies.parse_policy`), or a suppression names a rule
            no detector raises; the message starts with the path.
    """
    text = read_text(
        path,
        what="policy file",
        missing="check the path, or write one (see policies/examples/)",
    )
    source = str(path)
    policy = parse_policy(text, source)
    for index, suppression in enumerate(policy.suppressions):
        if suppression.rule != "*" and suppression.rule not in RULE_UIDS:
            known = ", ".join(sorted(RULE_UIDS))
            raise ConfigError(
                f"{source}: suppressions[{index}].rule: {suppression.rule!r} is not a rule "
                f"weightwarden raises, so it would silence nothing; one of: {known}"
            )
    return policy
