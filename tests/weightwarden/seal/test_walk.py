"""Which files make up a model: order, ignore rules, symlink policy, special files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightwarden.errors import SealInputError
from weightwarden.seal._walk import (
    DEFAULT_IGNORES,
    SINGLE_FILE_NAME,
    list_model_files,
    model_name_of,
)

NO_IGNORES: frozenset[PurePosixPath] = frozenset()
GIT_IGNORES = frozenset(PurePosixPath(p) for p in DEFAULT_IGNORES)


def names(root: Path, ignores: frozenset[PurePosixPath] = NO_IGNORES, *, allow: bool = False):
    return [str(f.name) for f in list_model_files(root, ignore_paths=ignores, allow_symlinks=allow)]


def test_files_are_sorted_by_path_components_not_by_string(make_model):
    """Path a/b sorts before a-b and a.b, as model_signing sorts, unlike a plain string sort."""
    root = make_model(dict.fromkeys(["b", "a.b", "a/c/d", "a-b", "a/b", "A"], b"x"))
    assert names(root) == ["A", "a/b", "a/c/d", "a-b", "a.b", "b"]
    assert sorted(names(root)) != names(root)


def test_entries_carry_name_path_and_size_and_empty_files_count(make_model):
    """Each entry has its POSIX name, the path to read and its size; empty files are listed."""
    root = make_model({"w/x.bin": b"12345", "empty": b""})
    files = list_model_files(root, ignore_paths=NO_IGNORES, allow_symlinks=False)
    assert [(str(f.name), f.path, f.size) for f in files] == [
        ("empty", root / "empty", 0),
        ("w/x.bin", root / "w" / "x.bin", 5),
    ]


def test_empty_folders_contribute_nothing(make_model):
    """A folder with no files below it is not a resource."""
    root = make_model({"a": b"1"})
    (root / "nothing" / "here").mkdir(parents=True)
    assert names(root) == ["a"]


def test_a_single_file_model_is_named_dot(tmp_path):
    """A single-file model has one resource, named "." as OpenSSF model signing names it."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    files = list_model_files(weights, ignore_paths=NO_IGNORES, allow_symlinks=False)
    assert [(f.name, f.path, f.size) for f in files] == [(SINGLE_FILE_NAME, weights, 3)]
    assert model_name_of(weights) == "w.bin"


def test_model_name_is_the_last_component_of_the_resolved_path(make_model):
    """Both model/. and model/sub/.. name the model "model"."""
    root = make_model({"sub/a": b"1"}, name="model")
    assert model_name_of(root / ".") == "model"
    assert model_name_of(root / "sub" / "..") == "model"


def test_an_ignored_folder_hides_everything_below_it_but_not_lookalikes(make_model):
    """Ignoring "a" drops a/ and everything in it, never "a.b" or "ab"."""
    root = make_model(dict.fromkeys(["a/x", "a/y/z", "a.b", "ab", "c"], b"1"))
    assert names(root, frozenset({PurePosixPath("a")})) == ["a.b", "ab", "c"]
    assert names(root, frozenset({PurePosixPath("a/y")})) == ["a/x", "a.b", "ab", "c"]
    assert names(root, frozenset({PurePosixPath("c")})) == ["a/x", "a/y/z", "a.b", "ab"]


def test_git_paths_are_dropped_by_the_default_ignores(make_model):
    """.git/, .github/, .gitattributes and .gitignore go; .gitkeep and nested .git do not."""
    root = make_model(
        dict.fromkeys(
            [
                ".git/HEAD",
                ".git/objects/ab/cd",
                ".github/workflows/ci.yml",
                ".gitattributes",
                ".gitignore",
                ".gitkeep",
                "sub/.gitignore",
                "weights.bin",
            ],
            b"x",
        )
    )
    assert names(root, GIT_IGNORES) == [".gitkeep", "sub/.gitignore", "weights.bin"]


def test_a_symlink_is_refused_unless_allowed(make_model):
    """A symlink to a file inside is a SealInputError naming it, unless symlinks are allowed."""
    root = make_model({"a": b"1"})
    (root / "link").symlink_to("a")
    with pytest.raises(SealInputError, match=r"^link is a symlink: refused"):
        names(root)
    files = list_model_files(root, ignore_paths=NO_IGNORES, allow_symlinks=True)
    assert [(str(f.name), f.path, f.size) for f in files] == [
        ("a", root / "a", 1),
        ("link", root / "a", 1),
    ]


@pytest.mark.parametrize("target", ["/etc/hostname", "../outside"])
def test_a_symlink_out_of_the_folder_is_refused_even_when_allowed(make_model, target):
    """No path escapes the model folder: absolute and climbing links are errors."""
    root = make_model({"a": b"1"})
    (root.parent / "outside").write_bytes(b"secret")
    (root / "escape").symlink_to(target)
    with pytest.raises(SealInputError, match="symlink escape points outside the model folder"):
        names(root, allow=True)


def test_a_symlink_to_a_folder_is_refused_even_when_allowed(make_model):
    """Links to folders are never followed, so a walk cannot loop or leave the model."""
    root = make_model({"sub/a": b"1"})
    (root / "alias").symlink_to("sub", target_is_directory=True)
    with pytest.raises(SealInputError, match="alias is a symlink"):
        names(root)
    with pytest.raises(SealInputError, match=r"alias points to .* not a regular file"):
        names(root, allow=True)


def test_a_dangling_symlink_is_refused(make_model):
    """A link to nothing is an error, not a silently skipped file."""
    root = make_model({"a": b"1"})
    (root / "dangling").symlink_to("missing")
    with pytest.raises(SealInputError, match=r"dangling points to .* not a regular file"):
        names(root, allow=True)


def test_a_symlink_inside_an_ignored_folder_is_not_looked_at(make_model):
    """Ignored paths are skipped before the symlink policy applies."""
    root = make_model({"a": b"1", ".git/HEAD": b"ref"})
    (root / ".git" / "escape").symlink_to("/etc/hostname")
    assert names(root, GIT_IGNORES) == ["a"]


def test_a_model_path_that_is_a_symlink_needs_allow_symlinks(make_model, tmp_path):
    """Passing a link as the model is refused unless allowed; allowed, it walks the target."""
    root = make_model({"a": b"1"})
    link = tmp_path / "via-link"
    link.symlink_to(root, target_is_directory=True)
    with pytest.raises(SealInputError, match="is a symlink: pass its target"):
        names(link)
    assert names(link, allow=True) == ["a"]


def test_a_missing_model_path_is_an_error(tmp_path):
    """A path that does not exist is a SealInputError that names it."""
    with pytest.raises(SealInputError, match=r"model path .*nope does not exist"):
        names(tmp_path / "nope")


def test_a_fifo_in_the_model_is_refused(make_model):
    """Special files cannot be sealed (reading a FIFO would block forever)."""
    root = make_model({"a": b"1"})
    os.mkfifo(root / "pipe")
    with pytest.raises(SealInputError, match="pipe is not a regular file"):
        names(root)


def test_a_model_path_that_is_a_fifo_is_refused(tmp_path):
    """The model itself must be a regular file or a folder."""
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(SealInputError, match="neither a regular file nor a folder"):
        names(tmp_path / "pipe")


_component = st.sampled_from(["a", "b", "a.b", "a-b", "B", "z0", "é"])


@settings(max_examples=25, deadline=None)
@given(st.sets(st.lists(_component, min_size=1, max_size=3).map(tuple), min_size=1, max_size=8))
def test_the_listing_is_exactly_the_files_sorted_by_components(paths):
    """Whatever the names, every file is listed once, ordered by its path components."""
    # A name cannot be both a file and a folder: drop paths that are a prefix of another.
    files = {p for p in paths if not any(q[: len(p)] == p and q != p for q in paths)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "m"
        for parts in files:
            path = root.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        assert names(root) == ["/".join(p) for p in sorted(files)]
