"""The agent's subcommand modules, in the order ``--help`` lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

MODULES: tuple[ModuleType, ...] = ()
