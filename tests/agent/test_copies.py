import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.copies import (
    CopyDetector,
    CopyIndex,
    DestinationKind,
    classify_destination,
    mount_for,
    parse_mountinfo,
)
from weightwarden.crypto.keys import generate_key
from weightwarden.safetensors import TensorSpec, write_safetensors
from weightwarden.seal import SealOptions, SealResult, load_manifest, seal

MIB = 1 << 20
SHM = Path("/dev/shm")  # noqa: S108 -- the RAM-backed staging area is what the test copies to
TMP = "/tmp/"  # noqa: S108 -- classifying paths, nothing is created there


def _checkpoint(root: Path, seed: str) -> Path:
    """A checkpoint with two ~1.5 MiB shards and a small config."""
    root.mkdir(parents=True)
    for shard in (1, 2):
        write_safetensors(
            root / f"model-0000{shard}-of-00002.safetensors",
            [TensorSpec(name=f"layers.{shard}.weight", dtype="BF16", shape=(768, 1024))],
            seed=f"{seed}-{shard}".encode(),
        )
    (root / "config.json").write_text('{"hidden_size": 1024}\n')
    return root


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> SealResult:
    """A real checkpoint sealed with a real key (whole-file SHA-256)."""
    model = _checkpoint(tmp_path_factory.mktemp("weights") / "step-1000", "copies")
    return seal(model, generate_key())


@pytest.fixture
def detector(sealed: SealResult) -> CopyDetector:
    index = CopyIndex()
    assert index.add_seal(sealed) == 2  # the two shards; config.json is under min_size
    return CopyDetector(index)


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    if not SHM.is_dir():
        pytest.skip("no /dev/shm on this machine")
    path = Path(tempfile.mkdtemp(prefix="ww-copies-", dir=SHM))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _cp(source: Path, dest: Path) -> Path:
    subprocess.run(["cp", str(source), str(dest)], check=True, timeout=60)
    return dest


def _shard(sealed: SealResult, n: int = 1) -> Path:
    return sealed.model_path / f"model-0000{n}-of-00002.safetensors"


def test_cp_of_a_sealed_shard_to_dev_shm_is_a_copy_to_ram(detector, sealed, shm_dir):
    """`cp` of a sealed shard into /dev/shm matches, naming the source and a tmpfs destination."""
    dest = _cp(_shard(sealed), shm_dir / "stolen.bin")
    match = detector.check(dest)
    assert match is not None
    assert match.sources == (str(_shard(sealed)),)
    assert match.models == (str(sealed.model_path),)
    assert match.destination.path == str(dest)
    assert match.destination.kind is DestinationKind.TMPFS
    assert match.algorithm == "sha256"
    ref = match.file_ref()
    assert ref.hashes["sha256"] == sealed.manifest.resources[1].digest.hex()
    assert ref.size == _shard(sealed).stat().st_size


def test_cp_of_a_sealed_shard_to_a_temp_dir_matches_with_its_destination(
    detector, sealed, tmp_path
):
    """`cp` into a folder under /tmp matches; the kind follows the filesystem /tmp is on."""
    dest = _cp(_shard(sealed, 2), tmp_path / "copy.safetensors")
    match = detector.check(dest)
    assert match is not None
    assert match.sources == (str(_shard(sealed, 2)),)
    mount = mount_for(
        str(dest.resolve()), parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    )
    assert mount is not None
    if mount.fstype == "tmpfs":
        assert match.destination.kind is DestinationKind.TMPFS
    elif str(dest).startswith(TMP):
        assert match.destination.kind is DestinationKind.TEMP
    assert match.destination.mount_point == mount.mount_point
    assert detector.stats().matches == 1


def test_a_same_size_file_with_other_content_is_not_a_copy(detector, sealed, tmp_path):
    """A file of exactly a shard's size but other content is ruled out by the sample, unhashed."""
    size = _shard(sealed).stat().st_size
    other = tmp_path / "other.bin"
    other.write_bytes(b"\x01" * size)
    assert detector.check(other) is None
    stats = detector.stats()
    assert (stats.size_matches, stats.sample_rejects, stats.hashed) == (1, 1, 0)


def test_a_copy_differing_in_one_unsampled_byte_is_hashed_and_not_a_copy(
    detector, sealed, tmp_path
):
    """A byte changed outside the sampled blocks passes the sample, fails the digest."""
    data = bytearray(_shard(sealed).read_bytes())
    data[300_000] ^= 0xFF
    near = tmp_path / "near.bin"
    near.write_bytes(bytes(data))
    assert detector.check(near) is None
    stats = detector.stats()
    assert (stats.hashed, stats.matches) == (1, 0)
    assert stats.bytes_hashed == len(data)


def test_writing_the_sealed_file_itself_is_not_a_copy(detector, sealed):
    """A close-after-write on the sealed file is tampering, not a copy."""
    assert detector.check(_shard(sealed)) is None


def test_small_files_are_not_indexed_so_copying_a_config_is_not_a_weight_copy(
    detector, sealed, tmp_path
):
    """config.json is below min_size: copying it is no event."""
    dest = _cp(sealed.model_path / "config.json", tmp_path / "config.json")
    assert detector.check(dest) is None
    assert detector.stats().size_matches == 0


def test_vanished_and_special_files_are_not_copies(detector, tmp_path):
    """A file gone before the check is counted unreadable; a folder is ignored."""
    assert detector.check(tmp_path / "gone") is None
    assert detector.check(tmp_path) is None
    assert detector.stats().unreadable == 1


def test_copies_of_sharded_and_blake3_seals_are_found(tmp_path, shm_dir):
    """A seal made with shards or BLAKE3 is compared using its own recipe."""
    key = generate_key()
    sharded = seal(_checkpoint(tmp_path / "sharded", "s"), key, options=SealOptions(shard_size=MIB))
    b3 = seal(_checkpoint(tmp_path / "b3", "b"), key, options=SealOptions(hash="blake3"))
    index = CopyIndex()
    assert index.add_seal(sharded) == 2
    assert index.add_seal(b3) == 2
    detector = CopyDetector(index)
    m1 = detector.check(_cp(_shard(sharded), shm_dir / "a"))
    m2 = detector.check(_cp(_shard(b3, 2), shm_dir / "b"))
    assert m1 is not None
    assert m1.algorithm == f"sha256-sharded-{MIB}"
    assert m1.file_ref().hashes == {}
    assert m2 is not None
    assert m2.algorithm == "blake3"
    assert m2.sources == (str(_shard(b3, 2)),)


def test_one_content_in_two_checkpoints_names_both_sources(tmp_path, shm_dir):
    """An unchanged shard sealed in two checkpoints yields both as sources."""
    key = generate_key()
    a = seal(_checkpoint(tmp_path / "a", "same"), key)
    b = seal(_checkpoint(tmp_path / "b", "same"), key)
    index = CopyIndex()
    index.add_seal(a)
    index.add_seal(b)
    match = CopyDetector(index).check(_cp(_shard(a), shm_dir / "x"))
    assert match is not None
    assert match.sources == tuple(sorted((str(_shard(a)), str(_shard(b)))))
    assert index.discard_model(a.model_path) == 2
    match = CopyDetector(index).check(shm_dir / "x")
    assert match is not None
    assert match.sources == (str(_shard(b)),)


MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 8:17 / /media/usb\040stick rw,nosuid shared:5 - vfat /dev/sdb1 rw
41 27 8:33 / /data rw - xfs /dev/sdc1 rw
42 27 8:48 / /scratch rw - ext4 /dev/sdd rw
43 27 0:50 / /mnt/share rw - nfs4 server:/export rw
44 27 0:51 / /home/alice/remote rw - fuse.sshfs alice@host:/ rw
45 27 0:52 / /scratch rw - tmpfs tmpfs rw
garbage line without separator
"""


@pytest.fixture
def sys_root(tmp_path: Path) -> Path:
    """A sysfs tree: sdb removable (partition sdb1), sdc on USB (partition), sdd fixed disk."""
    root = tmp_path / "sys"
    usb = root / "devices/pci0000:00/0000:00:14.0/usb2/2-1/host6/block/sdc"
    for disk, flag in ((root / "devices/virtual/block/sdb", "1"), (usb, "0")):
        (disk / f"{disk.name}1").mkdir(parents=True)
        (disk / f"{disk.name}1" / "partition").write_text("1\n")
        (disk / "removable").write_text(flag + "\n")
    sdd = root / "devices/pci0000:00/0000:00:1f.2/ata1/block/sdd"
    sdd.mkdir(parents=True)
    (sdd / "removable").write_text("0\n")
    links = root / "dev" / "block"
    links.mkdir(parents=True)
    (links / "8:17").symlink_to("../../devices/virtual/block/sdb/sdb1")
    (links / "8:33").symlink_to(
        "../../devices/pci0000:00/0000:00:14.0/usb2/2-1/host6/block/sdc/sdc1"
    )
    (links / "8:48").symlink_to("../../devices/pci0000:00/0000:00:1f.2/ata1/block/sdd")
    return root


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (f"{SHM}/x", DestinationKind.TMPFS),
        ("/media/usb stick/ckpt.bin", DestinationKind.REMOVABLE),
        ("/data/ckpt.bin", DestinationKind.REMOVABLE),
        ("/mnt/share/ckpt.bin", DestinationKind.NETWORK),
        ("/home/alice/remote/ckpt.bin", DestinationKind.NETWORK),
        ("/home/alice/ckpt.bin", DestinationKind.HOME),
        ("/root/ckpt.bin", DestinationKind.HOME),
        (f"{TMP}ckpt.bin", DestinationKind.TEMP),
        (f"/var{TMP}x", DestinationKind.TEMP),
        ("/scratch/ckpt.bin", DestinationKind.TMPFS),
        ("/srv/ckpt.bin", DestinationKind.OTHER),
    ],
)
def test_classify_destination_from_mountinfo_and_sysfs(sys_root, path, kind):
    """Each kind of place is recognised from mountinfo text and the sysfs tree."""
    destination = classify_destination(path, MOUNTINFO, sys_root)
    assert destination.kind is kind, destination
    assert destination.path == path


def test_classify_destination_explains_removable_disks(sys_root):
    """The reason names the removable flag, or the USB bus, of the mount's disk."""
    usb_stick = classify_destination("/media/usb stick/a", MOUNTINFO, sys_root)
    assert usb_stick.reason == "sysfs marks sdb removable"
    assert usb_stick.mount_point == "/media/usb stick"
    assert usb_stick.fstype == "vfat"
    assert usb_stick.source == "/dev/sdb1"
    usb_disk = classify_destination("/data/a", MOUNTINFO, sys_root)
    assert usb_disk.reason == "sdc is attached through USB"


def test_parse_mountinfo_decodes_escapes_and_skips_garbage():
    """Octal escapes are decoded and malformed lines are skipped."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 9
    assert mounts[3].mount_point == "/media/usb stick"
    assert (mounts[3].major, mounts[3].minor) == (8, 17)


def test_mount_for_picks_the_deepest_and_then_the_last_stacked_mount():
    """/home/alice/remote beats /; of two mounts on /scratch the later one is visible."""
    mounts = parse_mountinfo(MOUNTINFO)
    inner = mount_for("/home/alice/remote/x", mounts)
    assert inner is not None
    assert inner.fstype == "fuse.sshfs"
    scratch = mount_for("/scratch/x", mounts)
    assert scratch is not None
    assert scratch.fstype == "tmpfs"
    assert mount_for("/dataset", mounts).mount_point == "/"  # type: ignore[union-attr]


def test_parse_mountinfo_reads_this_machine():
    """The real /proc/self/mountinfo parses and has a root mount."""
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert any(m.mount_point == "/" for m in mounts)


def test_an_index_rebuilt_from_bundles_on_disk_finds_copies(tmp_path, shm_dir):
    """At start the daemon re-indexes earlier seals from their verified bundles."""
    key = generate_key()
    result = seal(_checkpoint(tmp_path / "old", "old"), key)
    manifest = load_manifest(result.signature_path, key.public)
    assert manifest is not None
    index = CopyIndex()
    assert index.add_manifest(manifest, result.model_path) == 2
    match = CopyDetector(index).check(_cp(_shard(result, 2), shm_dir / "y"))
    assert match is not None
    assert match.sources == (str(_shard(result, 2)),)
