"""``weightwarden agent canary plant`` and ``weightwarden agent canary list``.

The registry of planted canaries lives in the agent's state folder, not beside the decoys
(see :mod:`agent.canary`): ``--registry PATH``, else ``agent.canary_registry`` from
``--config FILE``, else ``/var/lib/weightwarden/canaries.json``. The daemon reads the same
file at start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.canary import DEFAULT_DECOY_SIZE, CanaryRegistry, plant, record_canaries
from weightwarden.cli._options import byte_size, positive_int

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``canary plant`` and ``canary list``."""
    canary = sub.add_parser("canary", help="plant and list decoy checkpoints (honeypots)")
    canary_sub = canary.add_subparsers(dest="canary_command", required=True, metavar="ACTION")

    p = canary_sub.add_parser(
        "plant",
        help="write realistic decoy checkpoints into DIR and record them in the registry",
        description=(
            "Write decoy checkpoints (safetensors shards with plausible headers, config.json, "
            "tokenizer) into DIR. Any open of a decoy is a critical canary event once the "
            "agent runs. The list of decoys is kept in the registry, outside DIR, so that "
            "listing DIR does not reveal which checkpoints are bait."
        ),
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--count", type=positive_int, default=1, help="decoy checkpoints (1)")
    p.add_argument(
        "--size",
        type=byte_size,
        default=DEFAULT_DECOY_SIZE,
        metavar="BYTES",
        help="tensor data per decoy, like 64MiB or 2GiB (64MiB; at least 1MiB)",
    )
    p.add_argument(
        "--shards", type=positive_int, help="safetensors files per decoy (default: by size)"
    )
    _add_registry_options(p)
    p.set_defaults(func=_run_plant)

    ls = canary_sub.add_parser("list", help="list planted canaries from the registry")
    ls.add_argument("--json", action="store_true", help="one JSON object per canary per line")
    _add_registry_options(ls)
    ls.set_defaults(func=_run_list)


def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--registry",
        type=Path,
        metavar="PATH",
        help="canary registry (default: from --config, else /var/lib/weightwarden/canaries.json)",
    )
    group.add_argument("--config", type=Path, metavar="FILE", help="agent config to take it from")


def _registry_path(args: argparse.Namespace) -> Path:
    if args.registry is not None:
        registry: Path = args.registry.absolute()
        return registry
    from agent.config import DEFAULT_STATE_DIR, load_agent_config  # noqa: PLC0415 -- only here

    if args.config is not None:
        return load_agent_config(args.config).resolved_canary_registry
    return DEFAULT_STATE_DIR / "canaries.json"


def _run_plant(args: argparse.Namespace) -> int:
    registry_path = _registry_path(args)
    canaries = plant(args.directory, count=args.count, size=args.size, shards=args.shards)
    registry = record_canaries(registry_path, canaries)
    decoys = sorted({c.decoy for c in canaries})
    total = sum(c.size for c in canaries)
    for decoy in decoys:
        print(decoy)
    print(
        f"planted {len(decoys)} decoy checkpoint(s), {len(canaries)} files, "
        f"{total / (1 << 20):.1f} MiB; registry {registry_path} now lists {len(registry)} canaries"
    )
    return 0


def _run_list(args: argparse.Namespace) -> int:
    registry = CanaryRegistry.load(_registry_path(args))
    for canary in registry:
        if args.json:
            print(json.dumps(canary.to_json(), sort_keys=True))
        else:
            kind = "weights" if canary.weights else "meta"
            print(f"{canary.path}\t{canary.size}\t{kind}\t{canary.sha256}")
    return 0
