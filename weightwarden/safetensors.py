"""Write and read safetensors headers without loading tensors (and never a pickle).

Used to build demo and decoy checkpoints that look real to tools that inspect headers:
an 8-byte little-endian header length, a JSON header of tensor names, dtypes, shapes and
offsets, then the raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["TensorSpec", "WrittenFile", "read_header", "write_safetensors"]

_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1}
_MAX_HEADER = 100 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """A tensor's name, dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data."""
        n = _DTYPE_BYTES[self.dtype]
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True, slots=True, kw_only=True)
class WrittenFile:
    """What :func:`write_safetensors` wrote: its size and SHA-256, computed while writing."""

    size: int
    sha256: str


def write_safetensors(
    path: Path, tensors: list[TensorSpec], *, seed: bytes, metadata: dict[str, str] | None = None
) -> WrittenFile:
    """Write a safetensors file whose data is unique pseudo-random bytes.

    The data comes from SHAKE-256 of ``seed`` so two files with different seeds never share
    content (and a decoy never matches a real checkpoint's digest). The digest is taken as
    the bytes are written, so nobody has to read the file back (a read of a decoy is an
    alarm).
    """
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment
    digest = hashlib.sha256()

    def put(data: bytes) -> None:
        out.write(data)
        digest.update(data)

    with path.open("wb") as out:
        put(struct.pack("<Q", len(raw)))
        put(raw)
        chunk = 1 << 20
        written = 0
        counter = 0
        while written < offset:
            n = min(chunk, offset - written)
            put(hashlib.shake_256(seed + counter.to_bytes(8, "little")).digest(n))
            written += n
            counter += 1
        out.flush()
        os.fsync(out.fileno())
    return WrittenFile(size=8 + len(raw) + offset, sha256=digest.hexdigest())


def read_header(path: Path) -> dict[str, object]:
    """Read and parse a safetensors header only.

    Raises:
        UsageError: the file is not safetensors (bad length or JSON).
    """
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:  # noqa: PLR2004
            raise UsageError(f"{path} is too short to be safetensors")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise UsageError(f"{path}: safetensors header of {n} bytes is implausible")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise UsageError(f"{path}: safetensors header is not an object")
    return header
