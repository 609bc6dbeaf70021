"""The ``weightwarden`` command: one entry point, subcommands registered by each package.

Exit codes (documented in the README):
    0   success; for ``verify``, the model is intact
    1   ``verify``: the content differs from the seal (a finding, not an error)
    2   usage, key or format error: a one-line reason, no traceback
    70  internal error: the monitor itself could not do its job
    78  configuration error (EX_CONFIG): systemd does not restart on it
    130 interrupted
"""

from weightwarden.cli._main import main

__all__ = ["main"]
