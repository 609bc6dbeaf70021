"""Copies of sealed weights: a file just written whose content is that of a sealed file.

:class:`CopyIndex` holds every sealed checkpoint file by size, with the digests its seal
recorded: from a :class:`~weightwarden.seal.SealResult` just made (:meth:`CopyIndex.add_seal`),
or for seals made earlier from the verified manifest of their bundle
(:func:`weightwarden.seal.load_manifest`) and the model's folder
(:meth:`CopyIndex.add_manifest`). :meth:`CopyDetector.check`
is called for a file closed after writing (``CLOSE_WRITE``) on a watched filesystem, and
decides in three steps, each far cheaper than the next:

1. **size**: an ``lstat``; a size no sealed file has ends the check (the usual case);
2. **sample**: SHA-256 over three 64 KiB blocks (start, middle, end) compared with the same
   sample taken when the sealed file was indexed. Successive checkpoints of one model have
   identical sizes and identical safetensors headers, so without this every newly written
   checkpoint would be hashed in full; with it, only a real copy (or a file that differs
   nowhere in those 192 KiB) is;
3. **digest**: the whole file hashed exactly as its seal was made (SHA-256 or BLAKE3, whole
   file or shards), through :func:`weightwarden.seal.build_manifest`: bounded reads through
   one reused buffer, never the whole file in memory, and an error if the file changes
   while it is read.

A match names the destination and every sealed file with that content (one shard often
appears unchanged in several checkpoints). The destination is classified from
``/proc/self/mountinfo`` and sysfs by :func:`classify_destination`: RAM-backed (tmpfs,
``/dev/shm``), removable (sysfs ``removable`` flag, a USB-attached disk, or a mount under
``/media`` or ``/run/media``), network filesystem, a home folder, a temporary folder on disk,
or other.

Limits: only files at least ``min_size`` bytes (1 MiB by default) are indexed, so a copied
``config.json`` is not a weight copy; a copy that is modified (even one byte), compressed,
encrypted or split is not recognised; the sample is taken when a file is indexed, so a
sealed file changed between sealing and indexing is missed (index right after sealing);
hashing a large copy costs about 0.7 s per GB of one core, so call :meth:`CopyDetector.check`
off the sensor's thread. A removable disk behind device-mapper (LVM, LUKS) is not traced
to its USB parent: it classifies by mount point only.
"""

from __future__ import annotations

import enum
import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from weightwarden.errors import SealInputError
from weightwarden.events import FileRef
from weightwarden.seal import Serialization, build_manifest

if TYPE_CHECKING:
    from collections.abc import Iterable

    from weightwarden.seal import HashAlgorithm, Manifest, SealResult

__all__ = [
    "DEFAULT_MIN_SIZE",
    "CopyDetector",
    "CopyIndex",
    "CopyMatch",
    "CopyStats",
    "Destination",
    "DestinationKind",
    "Mount",
    "SealedFile",
    "classify_destination",
    "mount_for",
    "parse_mountinfo",
    "sample_digest",
]

DEFAULT_MIN_SIZE = 1 << 20
"""Files smaller than this are not indexed: configs and tokenizers are copied innocently."""
_SAMPLE_BLOCK = 64 << 10
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW

_TMPFS = frozenset({"tmpfs", "ramfs"})
_NETWORK = frozenset(
    {
        "9p", "afs", "beegfs", "ceph", "cifs", "fuse.gcsfuse", "fuse.juicefs",
        "fuse.mountpoint-s3", "fuse.rclone", "fuse.s3fs", "fuse.sshfs", "glusterfs", "gpfs",
        "lustre", "nfs", "nfs4", "smb3", "smbfs",
    }
)  # fmt: skip
_REMOVABLE_ROOTS = ("/media", "/run/media")
_TEMP_ROOTS = ("/tmp", "/var/tmp")  # noqa: S108 -- classifying paths, not creating files
DEFAULT_HOME_ROOTS = ("/home", "/root")


class DestinationKind(enum.StrEnum):
    """Where a copy landed, as far as exfiltration is concerned."""

    TMPFS = "tmpfs"
    """RAM-backed (``/dev/shm``, a tmpfs ``/tmp``): staging, leaves no trace on disk."""
    REMOVABLE = "removable"
    """A removable or USB-attached disk, or a mount under ``/media``."""
    NETWORK = "network"
    """A network filesystem (NFS, SMB, sshfs, an S3 FUSE mount ...): the bytes left the host."""
    HOME = "home"
    """Someone's home folder."""
    TEMP = "temp"
    """``/tmp`` or ``/var/tmp`` on disk."""
    OTHER = "other"
    """Anywhere else (another weight folder, a scratch disk)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    r"""One line of ``/proc/PID/mountinfo``.

    Attributes:
        mount_id: Unique id of the mount.
        parent_id: Id of the parent mount.
        major: Major device number of the filesystem (0 for virtual filesystems).
        minor: Minor device number.
        root: The path inside the filesystem that is mounted.
        mount_point: Where it is mounted (escapes such as ``\040`` decoded).
        fstype: Filesystem type, with subtype (``fuse.sshfs``).
        source: The mount source (``/dev/sdb1``, ``server:/export``, ``tmpfs``).
    """

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    fstype: str
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where a copy was written and what kind of place that is.

    Attributes:
        path: The copy's path.
        kind: The class of place.
        mount_point: The mount holding it, if found.
        fstype: That mount's filesystem type.
        source: That mount's source device or export.
        reason: Why it got this kind, in a few words (for the alert).
    """

    path: str
    kind: DestinationKind
    mount_point: str | None
    fstype: str | None
    source: str | None
    reason: str


def _unescape(text: str) -> str:
    r"""Decode the kernel's octal escapes (``\040`` space, ``\011`` tab, ``\134`` backslash)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        chunk = text[i + 1 : i + 4]
        if text[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):  # noqa: PLR2004
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> tuple[Mount, ...]:
    """Parse ``/proc/PID/mountinfo`` text; malformed lines are skipped.

    Format (proc(5)): ``id parent major:minor root mount_point options [optional...] -
    fstype source super_options``.
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split(" ")
        rest = tail.split(" ")
        if not sep or len(fields) < 6 or len(rest) < 2:  # noqa: PLR2004 -- mountinfo's fixed fields
            continue
        major, _, minor = fields[2].partition(":")
        if not all(x.isdigit() for x in (fields[0], fields[1], major, minor)):
            continue
        mounts.append(
            Mount(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                major=int(major),
                minor=int(minor),
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=rest[0],
                source=_unescape(rest[1]),
            )
        )
    return tuple(mounts)


def _under(path: str, root: str) -> bool:
    return root in ("/", path) or path.startswith(root.rstrip("/") + "/")


def mount_for(path: str | os.PathLike[str], mounts: Iterable[Mount]) -> Mount | None:
    """The mount holding ``path`` (absolute, symlinks already resolved), or None.

    That is the longest mount point above it; of mounts stacked on one point, the last
    listed (the visible one).
    """
    target = os.fspath(path)
    best: Mount | None = None
    for mount in mounts:
        if _under(target, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def _removable_reason(mount: Mount, sys_root: Path) -> str | None:
    """Why sysfs says the mount's disk is removable, or None."""
    if mount.major == 0:
        return None  # virtual filesystem: no block device
    try:
        device = (sys_root / "dev" / "block" / f"{mount.major}:{mount.minor}").resolve(strict=True)
    except OSError:
        return None
    disk = device.parent if (device / "partition").exists() else device
    try:
        flag = (disk / "removable").read_text().strip()
    except OSError:
        flag = ""
    if flag == "1":
        return f"sysfs marks {disk.name} removable"
    if any(part.startswith("usb") for part in device.parts):
        return f"{disk.name} is attached through USB"
    return None


def classify_destination(
    path: str | os.PathLike[str],
    mounts_text: str,
    sys_root: Path,
    *,
    home_roots: tuple[str, ...] = DEFAULT_HOME_ROOTS,
) -> Destination:
    """Say what kind of place ``path`` is, from mountinfo text and the sysfs tree at ``sys_root``.

    Checked in this order: RAM-backed filesystem, network filesystem, removable disk
    (sysfs ``removable`` flag of the mount's disk, a USB bus in its sysfs path, or a mount
    point under ``/media`` or ``/run/media``), home folder, ``/tmp`` or ``/var/tmp``,
    other. Reads only under ``sys_root``; ``path`` must be absolute and resolved.
    """
    target = os.fspath(path)
    mount = mount_for(target, parse_mountinfo(mounts_text))
    kind, reason = DestinationKind.OTHER, "no rule matched"
    removable = _removable_reason(mount, sys_root) if mount is not None else None
    if mount is not None and mount.fstype in _TMPFS:
        kind, reason = DestinationKind.TMPFS, f"{mount.fstype} mounted at {mount.mount_point}"
    elif mount is not None and mount.fstype in _NETWORK:
        kind, reason = DestinationKind.NETWORK, f"{mount.fstype} from {mount.source}"
    elif removable is not None:
        kind, reason = DestinationKind.REMOVABLE, removable
    elif mount is not None and any(_under(mount.mount_point, r) for r in _REMOVABLE_ROOTS):
        kind, reason = DestinationKind.REMOVABLE, f"mounted under {mount.mount_point}"
    elif any(_under(target, r) for r in home_roots):
        kind, reason = DestinationKind.HOME, "inside a home folder"
    elif any(_under(target, r) for r in _TEMP_ROOTS):
        kind, reason = DestinationKind.TEMP, "inside a temporary folder on disk"
    return Destination(
        path=target,
        kind=kind,
        mount_point=mount.mount_point if mount else None,
        fstype=mount.fstype if mount else None,
        source=mount.source if mount else None,
        reason=reason,
    )


def sample_digest(fd: int, size: int) -> bytes:
    """SHA-256 over the size and three 64 KiB blocks (start, middle, end) of an open file.

    Equal content gives an equal sample; different samples prove different content.
    """
    h = hashlib.sha256(size.to_bytes(8, "little"))
    middle = max(0, (size // 2) // 4096 * 4096)
    for offset in (0, middle, max(0, size - _SAMPLE_BLOCK)):
        h.update(os.pread(fd, _SAMPLE_BLOCK, offset))
    return h.digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedFile:
    """One sealed file as the copy index knows it.

    Attributes:
        path: Where the sealed file lives.
        model: The sealed model (folder or file) it belongs to.
        size: Its size in bytes.
        hash_type: How its seal hashed it.
        shard_size: The seal's shard size, or None for whole-file digests.
        digests: Raw digests in order (one, or one per shard).
        sample: :func:`sample_digest` of the file when indexed, or None to skip that step.
        identity: ``(st_dev, st_ino)`` when indexed: a write to the file itself is not a copy.
    """

    path: str
    model: str
    size: int
    hash_type: HashAlgorithm
    shard_size: int | None
    digests: tuple[bytes, ...]
    sample: bytes | None = None
    identity: tuple[int, int] | None = None

    @property
    def recipe(self) -> tuple[HashAlgorithm, int | None]:
        """What a candidate must be hashed with to compare against this file."""
        return self.hash_type, self.shard_size


def _files_of(manifest: Manifest) -> dict[PurePosixPath, list[tuple[int, str, bytes]]]:
    out: dict[PurePosixPath, list[tuple[int, str, bytes]]] = {}
    for r in manifest.resources:
        out.setdefault(r.file, []).append((r.start, r.name, r.digest))
    return out


class CopyIndex:
    """Sealed files by size; safe to update from one thread while another checks."""

    def __init__(self, *, min_size: int = DEFAULT_MIN_SIZE) -> None:
        self.min_size = max(1, min_size)
        self._lock = threading.Lock()
        self._by_path: dict[str, SealedFile] = {}
        self._by_size: dict[int, dict[str, SealedFile]] = {}

    def __len__(self) -> int:
        return len(self._by_path)

    def add(self, sealed: SealedFile) -> bool:
        """Index ``sealed`` (replacing an entry for the same path); False if under min_size."""
        if sealed.size < self.min_size:
            return False
        with self._lock:
            self._discard(sealed.path)
            self._by_path[sealed.path] = sealed
            self._by_size.setdefault(sealed.size, {})[sealed.path] = sealed
        return True

    def _discard(self, path: str) -> None:
        old = self._by_path.pop(path, None)
        if old is not None:
            same_size = self._by_size[old.size]
            del same_size[path]
            if not same_size:
                del self._by_size[old.size]

    def discard_model(self, model_path: str | os.PathLike[str]) -> int:
        """Forget every file of one sealed model (it was deleted or re-sealed); return how many."""
        model = os.fspath(model_path)
        with self._lock:
            doomed = [p for p, f in self._by_path.items() if f.model == model]
            for path in doomed:
                self._discard(path)
        return len(doomed)

    def candidates(self, size: int) -> tuple[SealedFile, ...]:
        """Sealed files of exactly ``size`` bytes."""
        with self._lock:
            return tuple(self._by_size.get(size, {}).values())

    def add_seal(self, result: SealResult) -> int:
        """Index the files of a seal just made; return how many were indexed."""
        return self.add_manifest(result.manifest, result.model_path)

    def add_manifest(self, manifest: Manifest, model_path: Path) -> int:
        """Index the files of a verified manifest of the model at ``model_path``.

        Each file is opened once for its size, identity and sample. Files that are gone, no
        longer regular, smaller than ``min_size``, or (for sharded seals) of another size
        than sealed are skipped. Returns how many files were indexed.
        """
        root = model_path.resolve()
        indexed = 0
        ser = manifest.serialization
        for name, parts in _files_of(manifest).items():
            parts.sort()
            path = root if name == PurePosixPath(".") else root / name
            sealed_size = int(parts[-1][1].rsplit(":", 1)[1]) if ser.method == "shards" else None
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                size = st.st_size if sealed_size is None else sealed_size
                if not stat.S_ISREG(st.st_mode) or st.st_size != size or size < self.min_size:
                    continue
                sample = sample_digest(fd, size)
            except OSError:
                continue
            finally:
                os.close(fd)
            indexed += self.add(
                SealedFile(
                    path=str(path),
                    model=str(root),
                    size=size,
                    hash_type=ser.hash_type,
                    shard_size=ser.shard_size if ser.method == "shards" else None,
                    digests=tuple(d for _, _, d in parts),
                    sample=sample,
                    identity=(st.st_dev, st.st_ino),
                )
            )
        return indexed


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyMatch:
    """A written file whose content equals one or more sealed files.

    Attributes:
        destination: Where the copy is and what kind of place that is.
        size: Its size in bytes.
        algorithm: The digest algorithm compared (``sha256``, ``blake3``,
            ``sha256-sharded-N``).
        digest: Hex digest of the copy: the file's own digest, or for a sharded seal the
            SHA-256 over the concatenated shard digests.
        sources: Every sealed file with this content, sorted.
        models: The sealed models those files belong to, sorted.
    """

    destination: Destination
    size: int
    algorithm: str
    digest: str
    sources: tuple[str, ...]
    models: tuple[str, ...]

    def file_ref(self) -> FileRef:
        """The copy as an event's ``file`` (with its hash when it is a whole-file digest)."""
        hashes = {} if "sharded" in self.algorithm else {self.algorithm: self.digest}
        return FileRef(path=self.destination.path, size=self.size, hashes=hashes)


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyStats:
    """What the detector did, for the daemon's health report.

    Attributes:
        checked: Files checked.
        size_matches: Files whose size matched a sealed file.
        sample_rejects: Of those, files the sample ruled out without hashing.
        hashed: Files hashed in full.
        bytes_hashed: Bytes hashed in full.
        matches: Copies found.
        unreadable: Files that vanished, could not be read, or changed while hashed: not
            decided either way.
    """

    checked: int
    size_matches: int
    sample_rejects: int
    hashed: int
    bytes_hashed: int
    matches: int
    unreadable: int


class CopyDetector:
    """Decides whether a file just written is a copy of a sealed file (see the module doc)."""

    def __init__(
        self,
        index: CopyIndex,
        *,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        home_roots: tuple[str, ...] = DEFAULT_HOME_ROOTS,
        workers: int = 1,
    ) -> None:
        self.index = index
        self._proc_root = proc_root
        self._sys_root = sys_root
        self._home_roots = home_roots
        self._workers = workers
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(CopyStats.__slots__, 0)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def stats(self) -> CopyStats:
        """Counters since start."""
        with self._lock:
            return CopyStats(**self._counts)

    def check(self, path: str | os.PathLike[str]) -> CopyMatch | None:
        """Return the match if the file at ``path`` (absolute) is a copy of a sealed file.

        Never raises for a file that vanished or changed: that is counted as unreadable and
        returns None.
        """
        target = os.fspath(path)
        self._count("checked")
        try:
            st = os.lstat(target)
        except OSError:
            self._count("unreadable")
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        identity = (st.st_dev, st.st_ino)
        candidates = [
            c
            for c in self.index.candidates(st.st_size)
            if c.path != target and c.identity != identity
        ]
        if not candidates:
            return None
        self._count("size_matches")
        try:
            candidates = self._sampled(target, st.st_size, candidates)
        except OSError:
            self._count("unreadable")
            return None
        if not candidates:
            self._count("sample_rejects")
            return None
        return self._hashed(target, st.st_size, candidates)

    def _sampled(self, target: str, size: int, candidates: list[SealedFile]) -> list[SealedFile]:
        if all(c.sample is None for c in candidates):
            return candidates
        fd = os.open(target, _OPEN_FLAGS)
        try:
            sample = sample_digest(fd, size)
        finally:
            os.close(fd)
        return [c for c in candidates if c.sample is None or c.sample == sample]

    def _hashed(self, target: str, size: int, candidates: list[SealedFile]) -> CopyMatch | None:
        recipes: dict[tuple[HashAlgorithm, int | None], list[SealedFile]] = {}
        for c in candidates:
            recipes.setdefault(c.recipe, []).append(c)
        for (hash_type, shard_size), group in recipes.items():
            serialization = Serialization(
                method="shards" if shard_size is not None else "files",
                hash_type=hash_type,
                allow_symlinks=False,
                ignore_paths=(),
                shard_size=shard_size,
            )
            try:
                manifest, hashed = build_manifest(
                    Path(target), serialization, workers=self._workers
                )
            except SealInputError:
                self._count("unreadable")
                return None
            self._count("hashed")
            self._count("bytes_hashed", hashed)
            digests = tuple(r.digest for r in manifest.resources)
            matched = [c for c in group if c.digests == digests]
            if matched:
                self._count("matches")
                return self._match(target, size, serialization.algorithm, digests, matched)
        return None

    def _match(
        self,
        target: str,
        size: int,
        algorithm: str,
        digests: tuple[bytes, ...],
        matched: list[SealedFile],
    ) -> CopyMatch:
        try:
            mounts_text = (self._proc_root / "self" / "mountinfo").read_text()
        except OSError:
            mounts_text = ""
        digest = digests[0] if len(digests) == 1 and "sharded" not in algorithm else None
        return CopyMatch(
            destination=classify_destination(
                target, mounts_text, self._sys_root, home_roots=self._home_roots
            ),
            size=size,
            algorithm=algorithm,
            digest=(digest or hashlib.sha256(b"".join(digests)).digest()).hex(),
            sources=tuple(sorted(c.path for c in matched)),
            models=tuple(sorted({c.model for c in matched})),
        )
