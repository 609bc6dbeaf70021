"""The one error root of weightwarden and its few meaningful subclasses.

An exception means the monitor itself cannot do its job. A detection, a failed seal check
or a tampered file is *data* (a finding, a verification result), never an exception.

    WeightwardenError            exit 70, something the monitor cannot recover from
    ├── UsageError               exit 2, a bad argument or missing input file
    │   ├── KeyFileError         exit 2, a key that is missing, unreadable or of the wrong type
    │   ├── BundleFormatError    exit 2, a signature bundle that is not valid OpenSSF model signing
    │   ├── EventFormatError     exit 2, an OCSF event that cannot be read as a weightwarden event
    │   └── SealInputError       exit 2, a model folder that cannot be sealed as asked
    └── ConfigError              exit 78 (EX_CONFIG), so systemd does not crash-loop

Every message says what went wrong and what to do; the CLI prints it on one line.
Foreign errors are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BundleFormatError",
    "ConfigError",
    "EventFormatError",
    "KeyFileError",
    "SealInputError",
    "UsageError",
    "WeightwardenError",
]


class WeightwardenError(Exception):
    """Root of every error weightwarden raises on purpose."""

    exit_code: ClassVar[int] = 70


class UsageError(WeightwardenError):
    """The caller asked for something that cannot be done as given."""

    exit_code: ClassVar[int] = 2


class KeyFileError(UsageError):
    """A key file is missing, unreadable, encrypted without a passphrase, or of the wrong type."""


class BundleFormatError(UsageError):
    """A signature bundle is not a well-formed OpenSSF model-signing v1.0 bundle."""


class EventFormatError(UsageError):
    """An OCSF event is malformed: a required field is missing or a field has the wrong type.

    The message names the dotted field (``actor.process.pid``) and what was expected.
    """


class SealInputError(UsageError):
    """The model path cannot be sealed or verified as asked (symlink, escape, unreadable file)."""


class ConfigError(WeightwardenError):
    """A configuration file or value is invalid; the message names the file, key and expectation."""

    exit_code: ClassVar[int] = 78
