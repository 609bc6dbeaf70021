"""Which files make up a model: the walk, the ignore rules and the symlink policy.

A model is a single file or a folder. Names are POSIX paths relative to the folder (for a
single file, its own name), sorted by path components as OpenSSF model signing sorts them.
Nothing outside the model folder is ever read: a symlink is refused unless allowed, and an
allowed one must resolve to a regular file inside the folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from weightwarden.errors import SealInputError

__all__ = ["DEFAULT_IGNORES", "SINGLE_FILE_NAME", "ModelFile", "list_model_files", "model_name_of"]

SINGLE_FILE_NAME = PurePosixPath(".")
DEFAULT_IGNORES: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFile:
    """One regular file of a model: its manifest name, the path to read and its size."""

    name: PurePosixPath
    path: Path
    size: int


def model_name_of(model_path: Path) -> str:
    """The subject name OpenSSF model signing records: the last path component."""
    return model_path.resolve().name


def _is_ignored(name: PurePosixPath, ignores: frozenset[PurePosixPath]) -> bool:
    return any(name == ig or ig in name.parents for ig in ignores)


def _checked_target(root: Path, link: Path, name: PurePosixPath) -> Path:
    target = link.resolve()
    if not target.is_relative_to(root):
        raise SealInputError(f"symlink {name} points outside the model folder (to {target})")
    if not target.is_file():
        raise SealInputError(
            f"symlink {name} points to {target}, which is not a regular file; only links to "
            "files inside the model folder can be sealed"
        )
    return target


def _resolve_root(model_path: Path, *, allow_symlinks: bool) -> Path:
    if model_path.is_symlink() and not allow_symlinks:
        raise SealInputError(
            f"{model_path} is a symlink: pass its target, or --allow-symlinks to follow it"
        )
    try:
        return model_path.resolve(strict=True)
    except FileNotFoundError:
        raise SealInputError(f"model path {model_path} does not exist") from None
    except OSError as exc:
        raise SealInputError(f"cannot resolve model path {model_path}: {exc.strerror}") from exc


def _refuse_symlink(name: PurePosixPath) -> SealInputError:
    return SealInputError(f"{name} is a symlink: refused (pass --allow-symlinks, or remove it)")


def _entry(root: Path, path: Path, name: PurePosixPath, *, allow_symlinks: bool) -> ModelFile:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        if not allow_symlinks:
            raise _refuse_symlink(name)
        target = _checked_target(root, path, name)
        return ModelFile(name=name, path=target, size=target.stat().st_size)
    if stat.S_ISREG(st.st_mode):
        return ModelFile(name=name, path=path, size=st.st_size)
    raise SealInputError(f"{name} is not a regular file (FIFO, socket or device)")


def list_model_files(
    model_path: Path, *, ignore_paths: frozenset[PurePosixPath], allow_symlinks: bool
) -> list[ModelFile]:
    """List the model's regular files, sorted as OpenSSF model signing sorts resources.

    Args:
        model_path: the model folder or single model file.
        ignore_paths: names relative to the folder; a folder ignores all beneath it.
        allow_symlinks: follow symlinks that resolve to files inside the folder.

    Raises:
        SealInputError: the path is missing, a symlink is refused or escapes the folder,
            a special file (FIFO, socket, device) is present, or a folder is unreadable.
    """
    root = _resolve_root(model_path, allow_symlinks=allow_symlinks)
    if root.is_file():
        # OpenSSF model signing names a single-file model's only resource ".".
        return [ModelFile(name=SINGLE_FILE_NAME, path=root, size=root.stat().st_size)]
    if not root.is_dir():
        raise SealInputError(f"model path {model_path} is neither a regular file nor a folder")

    def on_error(exc: OSError) -> None:
        raise SealInputError(f"cannot list {exc.filename}: {exc.strerror}") from exc

    files: list[ModelFile] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        kept_dirs = []
        for d in dirnames:
            name = rel_dir / d
            if _is_ignored(name, ignore_paths):
                continue
            if (here / d).is_symlink():
                if not allow_symlinks:
                    raise _refuse_symlink(name)
                _checked_target(root, here / d, name)  # raises: links to folders are refused
            kept_dirs.append(d)
        dirnames[:] = kept_dirs
        files.extend(
            _entry(root, here / f, rel_dir / f, allow_symlinks=allow_symlinks)
            for f in filenames
            if not _is_ignored(rel_dir / f, ignore_paths)
        )
    files.sort(key=lambda mf: mf.name.parts)
    return files
