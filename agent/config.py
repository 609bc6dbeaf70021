"""The agent's configuration: a typed, immutable schema read once by the CLI.

A complete example lives in ``systemd/agent.toml.example``. Every key has a safe default
except what cannot be guessed: which folders hold weights. Command-line flags
(``--watch``, ``--spool``) override the file for a quick start.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

from weightwarden.config import load_config
from weightwarden.errors import ConfigError

__all__ = [
    "AgentConfig",
    "CollectorSettings",
    "SealSettings",
    "SpoolSettings",
    "load_agent_config",
]

DEFAULT_STATE_DIR = Path("/var/lib/weightwarden")
DEFAULT_COPY_WATCH = (
    Path("/tmp"),  # noqa: S108 -- watched for copies of weights, never written to
    Path("/dev/shm"),  # noqa: S108 -- likewise
    Path("/home"),
    Path("/media"),
    Path("/mnt"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SealSettings:
    """Sealing on write: which key, and how long a checkpoint must stay quiet first."""

    private_key: Path | None = None
    """PEM private key (ECDSA P-256 for OpenSSF compatibility); None disables sealing."""
    passphrase_file: Path | None = None
    quiet_interval: timedelta = timedelta(minutes=2)
    """A checkpoint is sealed once nothing has written to it for this long."""
    reverify_delay: timedelta = timedelta(seconds=2)
    """After a change inside a sealed checkpoint, wait this long for writes to settle."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSettings:
    """Bounds of the durable spool and what happens when they are reached."""

    max_events: int = 5_000_000
    max_bytes: int = 4 << 30
    full_policy: Literal["drop_new", "block"] = "drop_new"
    synchronous: Literal["full", "normal"] = "full"


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings:
    """Where the shipper sends batches; no ``url`` means events stay in the local spool."""

    url: str | None = None
    """The collector's HTTP(S) address; enrollment always uses it."""
    ca_file: Path | None = None
    pinned_sha256: str | None = None
    """SHA-256 of the collector's certificate (hex); a mismatch stops shipping."""
    enroll_token_file: Path | None = None
    """A one-time token from ``weightwarden collector enroll`` (first start only)."""
    transport: Literal["http", "nats"] = "http"
    nats_servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    nats_stream: str = "WEIGHTWARDEN"
    nats_subject_prefix: str = "weightwarden.batches"
    batch_size: int = 1000
    timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything the daemon needs, validated before it starts."""

    weight_roots: tuple[Path, ...] = ()
    """Folders holding checkpoints; each first-level entry is one checkpoint."""
    state_dir: Path = DEFAULT_STATE_DIR
    spool_dir: Path | None = None
    """Default: ``state_dir/spool``."""
    hostname: str = field(default_factory=socket.gethostname)
    agent_id: str | None = None
    """Default: the hostname."""
    sensor: Literal["auto", "fanotify", "inotify"] = "auto"
    copy_watch: tuple[Path, ...] = DEFAULT_COPY_WATCH
    """Where copies of sealed weights are looked for (fanotify only)."""
    canary_registry: Path | None = None
    """Default: ``state_dir/canaries.json``."""
    progress_interval: timedelta = timedelta(minutes=10)
    """A file held open longer than this gets a progress event each interval."""
    egress_grace: timedelta = timedelta(seconds=60)
    egress_poll: timedelta = timedelta(seconds=1)
    gpu_poll: timedelta = timedelta(seconds=30)
    queue_size: int = 100_000
    seal: SealSettings = SealSettings()
    spool: SpoolSettings = SpoolSettings()
    collector: CollectorSettings = CollectorSettings()

    def __post_init__(self) -> None:
        """Reject settings the daemon cannot honour."""
        for root in self.weight_roots:
            if not root.is_absolute():
                msg = f"weight root {root} must be an absolute path"
                raise ValueError(msg)
        if self.queue_size <= 0:
            msg = "queue_size must be positive"
            raise ValueError(msg)
        for name in ("progress_interval", "egress_poll", "gpu_poll"):
            if getattr(self, name) <= timedelta(0):
                msg = f"{name} must be longer than 0s (it sets how often the agent works)"
                raise ValueError(msg)

    @property
    def resolved_spool_dir(self) -> Path:
        """The spool folder."""
        return self.spool_dir or self.state_dir / "spool"

    @property
    def resolved_agent_id(self) -> str:
        """The agent's identity in the record."""
        return self.agent_id or self.hostname

    @property
    def resolved_canary_registry(self) -> Path:
        """Where planted canaries are listed."""
        return self.canary_registry or self.state_dir / "canaries.json"


@dataclass(frozen=True, slots=True)
class _File:
    agent: AgentConfig = AgentConfig()


def load_agent_config(
    path: Path | None, *, watch: tuple[Path, ...] = (), spool: Path | None = None
) -> AgentConfig:
    """Read ``path`` (an ``[agent]`` table) if given, then apply command-line overrides.

    Weight roots come back with symlinks resolved: the sensors report resolved paths, and
    a root compared unresolved would match none of them.

    Raises:
        ConfigError: the file is unreadable or invalid, or no weight root is configured,
            or a root is not an existing folder.
    """
    config = load_config(path, _File).agent if path is not None else AgentConfig()
    if watch:
        config = replace(config, weight_roots=tuple(p.absolute() for p in watch))
    if spool is not None:
        config = replace(config, spool_dir=spool.absolute())
    where = f"{path}: agent.weight_roots" if path is not None and not watch else "--watch"
    if not config.weight_roots:
        msg = f"{where}: no weight roots to watch; name at least one folder holding checkpoints"
        raise ConfigError(msg)
    for root in config.weight_roots:
        if not root.is_dir():
            msg = f"{where}: weight root {root} is not a folder: create it or fix the setting"
            raise ConfigError(msg)
    resolved = tuple(dict.fromkeys(root.resolve() for root in config.weight_roots))
    return replace(config, weight_roots=resolved)
