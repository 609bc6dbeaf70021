"""The collector's directory and its configuration file, read once at the edge.

``weightwarden collector init --dir DIR`` (:func:`init_directory`) lays out::

    DIR/                  mode 0700
      collector.toml      the configuration below
      collector.key       the collector's own identity key (PEM PKCS#8, mode 0600)
      collector.pub       its public half (agents may pin it)
      tls.crt             with --tls: a self-signed certificate for that key (HTTPS)
      collector.sqlite    the database (mode 0600), created and migrated

``collector.toml`` (every key optional; relative paths are relative to DIR)::

    [collector]
    listen = "127.0.0.1:8470"       # HOST:PORT the HTTP API listens on
    db = "collector.sqlite"         # a path, sqlite:///ABS/PATH or postgresql://...
    tls_cert = "tls.crt"            # both set: serve HTTPS
    tls_key = "collector.key"
    token_ttl = "24h"               # how long an enrollment token stays valid
    synchronous = "full"            # SQLite: "full" (survives power loss) or "normal"

    [limits]
    max_body_bytes = 16777216       # larger requests: 413 before the body is read
    max_events_per_batch = 10000    # larger batches: 413
    rate_events_per_second = 100000 # per agent (token bucket): 429 with Retry-After
    rate_burst_events = 200000
    max_connections = 64            # open connections; more are answered 503
    read_timeout = "30s"            # a client silent this long is disconnected

    [detection]
    policy = "/etc/weightwarden/policy.toml"  # the policy file (commands' --policy wins)

A bad value is a :class:`~weightwarden.errors.ConfigError` naming the file, line and key
(exit 78, so systemd does not restart into the same mistake).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from weightwarden.config import load_config
from weightwarden.crypto.keys import generate_key, write_key_pair
from weightwarden.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from weightwarden.crypto.keys import PrivateKey

__all__ = [
    "CERT_NAME",
    "CONFIG_NAME",
    "DB_NAME",
    "DEFAULT_DIR",
    "DEFAULT_LISTEN",
    "DIR_ENV",
    "KEY_PREFIX",
    "CollectorConfig",
    "CollectorSection",
    "CollectorSettings",
    "DetectionSection",
    "InitResult",
    "LimitsSection",
    "init_directory",
    "load_settings",
    "parse_listen",
    "resolve_db",
]

CONFIG_NAME: Final = "collector.toml"
KEY_PREFIX: Final = "collector"
CERT_NAME: Final = "tls.crt"
DB_NAME: Final = "collector.sqlite"
DEFAULT_DIR: Final = Path("/var/lib/weightwarden/collector")
DIR_ENV: Final = "WEIGHTWARDEN_COLLECTOR_DIR"
DEFAULT_LISTEN: Final = "127.0.0.1:8470"
_CERT_DAYS: Final = 3650
_MAX_PORT: Final = 65535


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port (0 picks a free one).

    Raises:
        ValueError: Not ``HOST:PORT`` with a port from 0 to 65535.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > _MAX_PORT:
        raise ValueError(f'listen must be HOST:PORT like "{DEFAULT_LISTEN}", got {text!r}')
    return host, int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSection:
    """``[collector]``: where to listen, the database, TLS and enrollment."""

    listen: str = DEFAULT_LISTEN
    db: str = DB_NAME
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_ttl: timedelta = timedelta(hours=24)
    synchronous: Literal["full", "normal"] = "full"

    def __post_init__(self) -> None:
        parse_listen(self.listen)
        if not self.db.strip():
            raise ValueError("db must name a database: a path, sqlite:///PATH or postgresql://")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or neither")
        if self.token_ttl <= timedelta(0):
            raise ValueError('token_ttl must be positive, like "24h"')


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSection:
    """``[limits]``: what one request, one agent and all clients together may use."""

    max_body_bytes: int = 16 << 20
    max_events_per_batch: int = 10_000
    rate_events_per_second: float = 100_000.0
    rate_burst_events: int = 200_000
    max_connections: int = 64
    read_timeout: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_events_per_batch",
            "rate_burst_events",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.rate_events_per_second <= 0:
            raise ValueError("rate_events_per_second must be positive")
        if self.read_timeout <= timedelta(0):
            raise ValueError('read_timeout must be positive, like "30s"')


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionSection:
    """``[detection]``: the policy file detection and access grants are judged by."""

    policy: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorConfig:
    """The whole ``collector.toml``."""

    collector: CollectorSection = field(default_factory=CollectorSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    detection: DetectionSection = field(default_factory=DetectionSection)


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings:
    """A loaded configuration with its paths resolved against the directory.

    Attributes:
        directory: The collector directory.
        config: The file's values.
        db: What to pass to ``open_store``: an absolute path or a URL.
        tls_cert: The certificate to serve HTTPS with, if configured.
        tls_key: Its private key.
        public_key: The collector's public key file (``collector.pub``), if present.
        policy: The policy file (``[detection] policy``), if configured.
    """

    directory: Path
    config: CollectorConfig
    db: str
    tls_cert: Path | None
    tls_key: Path | None
    public_key: Path | None
    policy: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InitResult:
    """What ``collector init`` created."""

    directory: Path
    config: Path
    key: Path
    public_key: Path
    certificate: Path | None
    db: Path


def resolve_db(db: str, directory: Path) -> str:
    """A ``db`` value as ``open_store`` takes it: URLs as they are, paths against DIR."""
    if "://" in db:
        return db
    path = Path(db)
    return str(path if path.is_absolute() else directory / path)


def load_settings(directory: Path) -> CollectorSettings:
    """Read ``DIR/collector.toml`` and resolve its paths.

    Raises:
        ConfigError: The file is missing (run ``collector init``), unreadable or invalid.
    """
    path = directory / CONFIG_NAME
    if not path.exists():
        raise ConfigError(
            f"{path}: config file not found: run `weightwarden collector init --dir "
            f"{directory}` first, or pass --dir/--db"
        )
    config = load_config(path, CollectorConfig)
    section = config.collector

    def resolve(value: Path | None) -> Path | None:
        return None if value is None else (value if value.is_absolute() else directory / value)

    public = directory / f"{KEY_PREFIX}.pub"
    return CollectorSettings(
        directory=directory,
        config=config,
        db=resolve_db(section.db, directory),
        tls_cert=resolve(section.tls_cert),
        tls_key=resolve(section.tls_key),
        public_key=public if public.is_file() else None,
        policy=resolve(config.detection.policy),
    )


def _config_text(*, listen: str, tls: bool) -> str:
    tls_lines = (
        f'tls_cert = "{CERT_NAME}"\ntls_key = "{KEY_PREFIX}.key"\n'
        if tls
        else f'# tls_cert = "{CERT_NAME}"      # both set: serve HTTPS\n'
        f'# tls_key = "{KEY_PREFIX}.key"\n'
    )
    return (
        "# weightwarden collector configuration (see `weightwarden collector --help`).\n"
        "# Relative paths are relative to this file's directory.\n\n"
        "[collector]\n"
        f'listen = "{listen}"\n'
        f'db = "{DB_NAME}"                 # or postgresql://USER@HOST/DB\n'
        f"{tls_lines}"
        'token_ttl = "24h"                 # enrollment tokens expire after this\n'
        'synchronous = "full"              # SQLite durability: "full" or "normal"\n\n'
        "[limits]\n"
        "max_body_bytes = 16777216\n"
        "max_events_per_batch = 10000\n"
        "rate_events_per_second = 100000   # per agent\n"
        "rate_burst_events = 200000\n"
        "max_connections = 64\n"
        'read_timeout = "30s"\n\n'
        "[detection]\n"
        '# policy = "/etc/weightwarden/policy.toml"  # or pass --policy FILE\n'
    )


def _self_signed(key: PrivateKey, names: Sequence[str], now: dt.datetime) -> bytes:
    """A self-signed PEM certificate for ``key``, naming ``names`` (DNS names or IPs)."""
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    public = key.key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key.key, hashes.SHA256() if isinstance(key.key, ec.EllipticCurvePrivateKey) else None)
    )
    return certificate.public_bytes(Encoding.PEM)


def init_directory(
    directory: Path,
    *,
    tls: bool,
    listen: str = DEFAULT_LISTEN,
    tls_names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    now: dt.datetime,
) -> InitResult:
    """Create the collector directory: config, key pair, TLS certificate (``tls``), database.

    Refuses to touch a directory that already holds a collector config or key.

    Raises:
        UsageError: The directory is already initialised, or ``listen`` is malformed.
        KeyFileError: The key cannot be written.
        StoreError: The database cannot be created.
    """
    from collector.store import open_store  # noqa: PLC0415 -- psycopg only when needed

    try:
        parse_listen(listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    config_path = directory / CONFIG_NAME
    key_path = directory / f"{KEY_PREFIX}.key"
    public_path = directory / f"{KEY_PREFIX}.pub"
    cert_path = directory / CERT_NAME
    db_path = directory / DB_NAME
    for path in (config_path, key_path, public_path, cert_path, db_path):
        if path.exists():
            raise UsageError(
                f"{path} already exists: {directory} is already a collector directory "
                "(use it as it is, or choose another --dir)"
            )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from exc
    key = generate_key()
    write_key_pair(key, directory / KEY_PREFIX)
    certificate = None
    if tls:
        _write_new(cert_path, _self_signed(key, tls_names, now), 0o644)
        certificate = cert_path
    open_store(str(db_path)).close()
    _write_new(config_path, _config_text(listen=listen, tls=tls).encode(), 0o644)
    return InitResult(
        directory=directory,
        config=config_path,
        key=key_path,
        public_key=public_path,
        certificate=certificate,
        db=db_path,
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(data)
