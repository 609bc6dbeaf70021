"""Weight roots: how they are checked, and which mounts lie under them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sensors._roots import WeightRoots, unescape_mount_point
from weightwarden.errors import UsageError

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /data/weights/nvme rw,relatime shared:20 - xfs /dev/nvme0n1 rw
41 22 0:36 / /data/weights-old rw,relatime shared:21 - xfs /dev/nvme1n1 rw
42 22 0:37 / /data/weights/with\\040space rw - tmpfs tmpfs rw
"""


def test_roots_are_resolved_through_symlinks(tmp_path: Path) -> None:
    """A root given through a symlink is stored as its real path."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    roots = WeightRoots([link])
    assert roots.paths == (real.resolve(),)
    assert roots.contains(str(real.resolve() / "model.bin"))


def test_contains_matches_whole_components_only(tmp_path: Path) -> None:
    """/w/weights-old is not under /w/weights; /w/weights itself and below are."""
    root = tmp_path / "weights"
    root.mkdir()
    roots = WeightRoots([root])
    base = str(root.resolve())
    assert roots.contains(base)
    assert roots.contains(base + "/a/b")
    assert not roots.contains(base + "-old/a")
    assert not roots.contains(str(Path(base).parent))


def test_the_filesystem_root_contains_everything() -> None:
    """A root of / covers every absolute path."""
    assert WeightRoots([Path("/")]).contains("/etc/passwd")


def test_mount_points_below_a_root_are_found(tmp_path: Path) -> None:
    """Mounts at or under a root are listed (octal escapes undone); siblings are not."""
    roots = WeightRoots([tmp_path])
    text = MOUNTINFO.replace("/data/weights", str(tmp_path.resolve()))
    below = roots.mount_points_below(text)
    assert below == (f"{tmp_path.resolve()}/nvme", f"{tmp_path.resolve()}/with space")


def test_unescape_mount_point_undoes_octal_escapes() -> None:
    r"""\040 is a space, \011 a tab, \134 a backslash."""
    assert unescape_mount_point(r"/a\040b\011c\134d") == "/a b\tc\\d"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (Path("relative/dir"), "relative"),
        (Path("/nonexistent/weightwarden/root"), "cannot be resolved"),
    ],
)
def test_bad_roots_are_usage_errors(given: Path, message: str) -> None:
    """A relative or missing root is a usage error that names the problem."""
    with pytest.raises(UsageError, match=message):
        WeightRoots([given])


def test_a_file_is_not_a_root(tmp_path: Path) -> None:
    """A regular file given as a root is refused."""
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        WeightRoots([file])


def test_no_roots_is_a_usage_error() -> None:
    """An empty list of roots is refused rather than watching nothing."""
    with pytest.raises(UsageError, match="no weight roots"):
        WeightRoots([])
