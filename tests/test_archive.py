"""Safe extraction: real zip/tar files built here, hostile entries refused before anything escapes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive import ArchiveError, LayoutError, find_layout_root, missing_entries, safe_extract
from pipeline.params import LayoutParams

LAYOUT = LayoutParams()


def make_zip(path: Path, entries: list[tuple[str, bytes]], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def make_tar(path: Path, members: list[tuple], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, fileobj in members:
            tf.addfile(info, fileobj)
    return path


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A folder holding the archive and the target, so that anything written beside the target shows up."""
    (tmp_path / "box").mkdir()
    return tmp_path / "box"


def test_zip_round_trip(box: Path) -> None:
    archive = make_zip(box / "a.zip", [("top/x.txt", b"hello"), ("top/sub/", b""), ("top/sub/y.bin", b"\x00\x01")])
    assert safe_extract(archive, box / "out") == 3
    assert (box / "out/top/x.txt").read_bytes() == b"hello"
    assert (box / "out/top/sub/y.bin").read_bytes() == b"\x00\x01"


def test_tar_round_trip_with_inside_link(box: Path) -> None:
    archive = make_tar(
        box / "a.tar.gz",
        [tar_member("d/x.txt", data=b"data"), tar_member("d/alias.txt", tarfile.SYMTYPE, link="x.txt")],
    )
    safe_extract(archive, box / "out")
    assert (box / "out/d/alias.txt").is_symlink()
    assert (box / "out/d/alias.txt").read_bytes() == b"data"


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt", "..\\evil.txt", "a/..\\..\\e"]
)
def test_zip_slip_names_refused_before_writing(box: Path, name: str) -> None:
    archive = make_zip(box / "slip.zip", [("fine.txt", b"ok"), (name, b"pwned")])
    with pytest.raises(ArchiveError, match="unsafe entries") as err:
        safe_extract(archive, box / "out")
    assert "slip.zip" in str(err.value)
    assert not (box / "out").exists()  # refused before the first byte, even for the harmless entry
    assert files_under(box) == ["slip.zip"]


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd", "b/../../../x"])
def test_zip_symlink_escaping_refused(box: Path, target: str) -> None:
    archive = make_zip(box / "link.zip", [("a/f.txt", b"x")], links={"a/link": target})
    with pytest.raises(ArchiveError, match="link"):
        safe_extract(archive, box / "out")
    assert not (box / "out").exists()


def test_zip_link_chain_caught_at_write_time(box: Path) -> None:
    # Each link name and target looks harmless alone; together `a/b` resolves to the target's parent.
    archive = box / "chain.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # entries in this order: both links, then a file through them
        for name, target in (("a", "."), ("a/b", "..")):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        zf.writestr("a/b/evil.txt", b"pwned")
    with pytest.raises(ArchiveError, match="outside"):
        safe_extract(archive, box / "out")
    assert not (box / "evil.txt").exists()
    assert not (box.parent / "evil.txt").exists()


@pytest.mark.parametrize(
    "member",
    [
        tar_member("/abs.txt", data=b"x"),
        tar_member("../up.txt", data=b"x"),
        tar_member("d/../../up.txt", data=b"x"),
        tar_member("d/link", tarfile.SYMTYPE, link="/etc/passwd"),
        tar_member("d/link", tarfile.SYMTYPE, link="../../outside"),
        tar_member("d/hard", tarfile.LNKTYPE, link="../outside"),
        tar_member("dev", tarfile.CHRTYPE),
        tar_member("blk", tarfile.BLKTYPE),
        tar_member("fifo", tarfile.FIFOTYPE),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-abs", "symlink-up", "hardlink-up", "chr", "blk", "fifo"],
)
def test_tar_unsafe_members_refused(box: Path, member: tuple) -> None:
    archive = make_tar(box / "bad.tar", [tar_member("ok.txt", data=b"ok"), member], mode="w")
    with pytest.raises(ArchiveError, match="unsafe entries"):
        safe_extract(archive, box / "out")
    assert files_under(box) == ["bad.tar"]


def test_tar_link_chain_caught_at_write_time(box: Path) -> None:
    archive = make_tar(
        box / "chain.tar",
        [
            tar_member("a", tarfile.SYMTYPE, link="."),
            tar_member("a/b", tarfile.SYMTYPE, link=".."),
            tar_member("a/b/evil.txt", data=b"pwned"),
        ],
        mode="w",
    )
    with pytest.raises(ArchiveError, match="refusing"):
        safe_extract(archive, box / "out")
    assert not (box / "evil.txt").exists()


def test_corrupt_and_truncated_archives(box: Path) -> None:
    (box / "junk.zip").write_bytes(b"not an archive at all")
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        safe_extract(box / "junk.zip", box / "out")
    good = make_zip(box / "good.zip", [("x.txt", os.urandom(50_000))])
    data = good.read_bytes()
    (box / "cut.zip").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(ArchiveError):
        safe_extract(box / "cut.zip", box / "out2")
    with pytest.raises(ArchiveError, match="no such archive"):
        safe_extract(box / "missing.zip", box / "out3")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["a", "b", "..", ".", "", "/", "\\", "C:"]), min_size=1, max_size=5))
def test_any_name_lands_inside_or_is_refused(tmp_path_factory: pytest.TempPathFactory, parts: list[str]) -> None:
    root = tmp_path_factory.mktemp("prop")
    name = "/".join(parts) + "/f.txt"
    archive = make_zip(root / "p.zip", [(name, b"x")])
    try:
        safe_extract(archive, root / "out")
    except ArchiveError:
        assert files_under(root) == ["p.zip"]
        return
    written = [p for p in root.rglob("*") if p.is_file() and p.name == "f.txt"]
    assert written and all((root / "out") in p.parents for p in written)


def write_layout(root: Path, layout: LayoutParams = LAYOUT, skip: tuple[str, ...] = ()) -> Path:
    for name, rel in {
        "train_dir": layout.train_dir,
        "val_classification_dir": layout.val_classification_dir,
        "test_classification_dir": layout.test_classification_dir,
        "val_verification_dir": layout.val_verification_dir,
        "test_verification_dir": layout.test_verification_dir,
    }.items():
        if name not in skip:
            (root / rel).mkdir(parents=True, exist_ok=True)
    for name in ("test_order", "val_trials", "test_trials"):
        if name not in skip:
            (root / getattr(layout, name)).parent.mkdir(parents=True, exist_ok=True)
            (root / getattr(layout, name)).write_text("")
    return root


def test_find_layout_root_at_top_and_under_a_folder(tmp_path: Path) -> None:
    assert find_layout_root(write_layout(tmp_path / "flat"), LAYOUT) == tmp_path / "flat"
    nested = write_layout(tmp_path / "wrapped" / "11-785hw2p2-s20")
    (tmp_path / "wrapped" / "__MACOSX").mkdir()
    assert find_layout_root(tmp_path / "wrapped", LAYOUT) == nested
    renamed = LayoutParams(test_trials="test_trials_verification_student_new.txt")
    root = write_layout(tmp_path / "renamed", renamed)
    assert find_layout_root(root, renamed) == root
    with pytest.raises(LayoutError, match="test_trials_verification_student.txt"):
        find_layout_root(root, LAYOUT)


def test_find_layout_root_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(LayoutError, match="none of the layout entries"):
        find_layout_root(tmp_path / "empty", LAYOUT)
    half = write_layout(tmp_path / "half" / "top", skip=("val_trials", "test_verification_dir"))
    with pytest.raises(LayoutError, match="missing validation_trials_verification.txt, test_verification$") as err:
        find_layout_root(tmp_path / "half", LAYOUT)
    assert str(half) in str(err.value)
    assert find_layout_root(tmp_path / "half", LAYOUT, partial=True) == half
    assert missing_entries(half, LAYOUT) == [LAYOUT.val_trials, LAYOUT.test_verification_dir]
    write_layout(tmp_path / "two" / "a")
    write_layout(tmp_path / "two" / "b")
    with pytest.raises(LayoutError, match="several folders"):
        find_layout_root(tmp_path / "two", LAYOUT)
