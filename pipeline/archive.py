"""Safe extraction of zip/tar archives and locating the HW2P2 layout inside what they held.

Downloaded archives are untrusted: an entry named `../x` or `/etc/x`, a link pointing out of the target, a
chain of in-target links that resolves outside it, or a device node must never be written. Every name is
checked before the first byte is written (such an archive leaves nothing behind); where each entry really
lands is checked again at write time to defeat link chains, so callers extract into a temporary folder.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from pipeline.io import check_free_space
from pipeline.params import LayoutParams

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SKIP_DIRS = ("__MACOSX",)  # macOS resource forks that zips made by Finder carry
_MAX_CHILDREN = 64  # a folder with more sub-folders is data (identity folders), not a wrapper: don't descend


class ArchiveError(ValueError):
    """An archive that cannot be extracted safely; the message names the archive and the entry."""


class LayoutError(ValueError):
    """A folder that does not hold the HW2P2 layout; the message names what is missing."""


def is_archive(path: str | Path) -> bool:
    """Whether `path` is a file whose name says zip or tar (the content is checked on extraction)."""
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _entry_problem(name: str) -> str | None:
    """Why an entry name may not be extracted, or None. Backslashes count as separators (Windows zips)."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        return "absolute path"
    if ".." in norm.split("/"):
        return "'..' in path"
    return None


def _link_problem(name: str, target: str, hard: bool) -> str | None:
    """Why a link entry may not be extracted: its target is absolute or resolves outside the archive root."""
    if not target:
        return "link with an empty target"
    norm = target.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        return f"link to absolute path {target!r}"
    # Hard link targets are archive paths; symlink targets are relative to the link's own folder.
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, norm))
    if resolved == ".." or resolved.startswith("../"):
        return f"link to {target!r} escapes the target folder"
    return None


def _within(path: str | Path, root: str | Path) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root + os.sep)


def _guard(archive: Path, name: str, out: Path, dest: Path) -> None:
    """Refuse `out` unless its deepest existing ancestor really lies in `dest` (checked before any mkdir)."""
    probe = out.parent
    while not probe.exists() and probe != dest:
        probe = probe.parent
    if not _within(probe, dest):
        raise ArchiveError(f"{archive}: entry {name!r} resolves outside {dest} through a link")


def _check_space(archive: Path, dest: Path, needed: int) -> None:
    check_free_space(dest, needed, f"extracting {archive}")


def _refuse(archive: Path, problems: list[tuple[str, str]]) -> None:
    if problems:
        shown = "; ".join(f"{name!r}: {why}" for name, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ArchiveError(f"{archive}: refusing to extract {len(problems)} unsafe entries: {shown}{more}")


def _zip_symlink_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return zf.read(info).decode("utf-8", errors="replace")
    return None


def _extract_zip(archive: Path, dest: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        problems: list[tuple[str, str]] = []
        for info in infos:
            why = _entry_problem(info.filename)
            mode = info.external_attr >> 16
            if why is None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                why = "device or special file"
            if why is None and (target := _zip_symlink_target(zf, info)) is not None:
                why = _link_problem(info.filename, target, hard=False)
            if why:
                problems.append((info.filename, why))
        _refuse(archive, problems)
        _check_space(archive, dest, sum(i.file_size for i in infos))
        dest.mkdir(parents=True, exist_ok=True)
        for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", disable=len(infos) < 2000):
            rel = info.filename.replace("\\", "/").rstrip("/")
            if not rel:
                continue
            out = dest / rel
            # Earlier in-target links may redirect a later path: check where it really lands, not its name.
            _guard(archive, info.filename, out, dest)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            target = _zip_symlink_target(zf, info)
            if target is not None:
                if not _within(out.parent / target, dest):
                    raise ArchiveError(f"{archive}: link {info.filename!r} -> {target!r} resolves outside {dest}")
                if out.is_symlink() or out.exists():
                    out.unlink()
                os.symlink(target, out)
                continue
            # O_NOFOLLOW: never write through a link that an earlier entry planted under this very name.
            try:
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as err:
                raise ArchiveError(f"{archive}: cannot write entry {info.filename!r}: {err.strerror}") from None
            with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return len(infos)


def _extract_tar(archive: Path, dest: Path) -> int:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        problems: list[tuple[str, str]] = []
        for m in members:
            why = _entry_problem(m.name)
            if why is None and (m.isdev() or not (m.isfile() or m.isdir() or m.issym() or m.islnk())):
                why = "device or special file"
            if why is None and (m.issym() or m.islnk()):
                why = _link_problem(m.name, m.linkname, hard=m.islnk())
            if why:
                problems.append((m.name, why))
        _refuse(archive, problems)
        _check_space(archive, dest, sum(m.size for m in members if m.isfile()))
        dest.mkdir(parents=True, exist_ok=True)
        for m in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=len(members) < 2000):
            try:
                # The "data" filter re-checks each member against where links really resolve at write time.
                tf.extract(m, dest, filter="data")
            except tarfile.FilterError as err:
                raise ArchiveError(f"{archive}: refusing entry {m.name!r}: {err}") from None
        return len(members)


def safe_extract(archive: str | Path, dest: str | Path) -> int:
    """Extract a zip or tar archive (format read from the content) into `dest`, creating it.

    Refuses, before writing anything: absolute names, `..` components, links whose target is absolute or
    leaves `dest`, device files, FIFOs, and archives larger than the free space.

    Returns:
        The number of entries extracted.

    Raises:
        ArchiveError: naming the archive and the offending entries.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    if zipfile.is_zipfile(archive):
        count = _extract_zip(archive, dest)
    else:
        try:
            is_tar = tarfile.is_tarfile(archive)
        except OSError:
            is_tar = False
        if not is_tar:
            raise ArchiveError(f"{archive}: neither a zip nor a tar archive (corrupt or incomplete download?)")
        try:
            count = _extract_tar(archive, dest)
        except (tarfile.TarError, EOFError) as err:
            raise ArchiveError(f"{archive}: corrupt tar archive: {err}") from None
    log.info("extracted %d entries from %s into %s", count, archive, dest)
    return count


def layout_entries(layout: LayoutParams) -> dict[str, str]:
    """The layout's required entries: params name -> path relative to the competition root."""
    return {name: str(getattr(layout, name)) for name in LayoutParams.model_fields}


def missing_entries(folder: str | Path, layout: LayoutParams) -> list[str]:
    """Relative paths of the layout entries that `folder` lacks."""
    folder = Path(folder)
    return [rel for rel in layout_entries(layout).values() if not (folder / rel).exists()]


def _candidates(folder: Path, max_depth: int) -> Iterable[tuple[int, Path]]:
    """Folders under `folder` (itself first) breadth-first, skipping hidden, macOS and data-sized folders."""
    level = [folder]
    for depth in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            yield depth, d
            try:
                children = [c for c in d.iterdir() if c.is_dir() and not c.name.startswith((".", *_SKIP_DIRS))]
            except OSError:
                continue
            if len(children) <= _MAX_CHILDREN:
                nxt.extend(sorted(children))
        level = nxt


def find_layout_root(folder: str | Path, layout: LayoutParams, partial: bool = False, max_depth: int = 3) -> Path:
    """The folder under `folder` (or `folder` itself) that holds the HW2P2 layout.

    Archives often wrap the layout in a top folder such as `11-785hw2p2-s20/`; this looks up to `max_depth`
    folders down and picks the shallowest match.

    Args:
        folder: where the archive was extracted.
        layout: the entry names to look for.
        partial: accept the folder holding the most entries (at least one) instead of all of them; for a
            competition that ships only part of the layout (the course split classification and verification).

    Raises:
        LayoutError: no folder matches, or two folders at the same depth match equally well.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(f"{folder}: not a folder")
    wanted = list(layout_entries(layout).values())
    best: list[tuple[int, int, Path]] = []  # (-entries found, depth, path)
    for depth, cand in _candidates(folder, max_depth):
        found = sum((cand / rel).exists() for rel in wanted)
        if found:
            best.append((-found, depth, cand))
    best.sort(key=lambda t: (t[0], t[1]))
    if not best:
        raise LayoutError(
            f"{folder}: none of the layout entries ({', '.join(wanted)}) found within {max_depth} folders; "
            "check the layout section of params.yaml against the archive's contents"
        )
    top_found, top_depth, root = best[0]
    if not partial and -top_found < len(wanted):
        missing = missing_entries(root, layout)
        raise LayoutError(f"{root}: incomplete HW2P2 layout, missing {', '.join(missing)}")
    ties = [p for f, d, p in best if f == top_found and d == top_depth and p != root]
    if ties:
        names = ", ".join(str(p) for p in [root, *ties])
        raise LayoutError(f"{folder}: the layout appears in several folders ({names}); keep only one")
    return root
