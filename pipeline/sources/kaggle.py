"""`data.source: kaggle`: download the competition(s) with the kaggle 2.x client and unpack the HW2P2 layout.

The course ran classification and verification as two competitions, each shipping its half of the layout;
both archives are downloaded (once if the slugs are the same), extracted safely, and their layout entries
merged into `dest`. Nothing appears at `dest` until everything is complete:

    <dest.parent>/.download-<dest.name>/archives/<slug>/   kept after a failure: the next run resumes there
    <dest.parent>/.download-<dest.name>/extract/            rebuilt on every run
    <dest.parent>/.download-<dest.name>/staging/            renamed onto `dest` when the layout is whole
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pipeline.archive import (
    ArchiveError,
    LayoutError,
    find_layout_root,
    is_archive,
    layout_entries,
    missing_entries,
    safe_extract,
)
from pipeline.io import check_free_space
from pipeline.params import KaggleParams, LayoutParams

log = logging.getLogger(__name__)

SAFETY_FACTOR = 2.1  # archive + extracted copy of every listed byte, plus slack for file-system overhead


class DownloadError(RuntimeError):
    """The download stage cannot finish; `dest` is left as it was."""


def work_dir(dest: Path) -> Path:
    """The hidden folder beside `dest` where downloads and extraction happen."""
    return dest.parent / f".download-{dest.name}"


def _partial_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def check_space(folder: Path, listed_bytes: int, already: int = 0) -> None:
    """Fail early unless `folder` can hold the archives and their extracted contents."""
    needed = int(listed_bytes * SAFETY_FACTOR) - already
    what = f"downloading and extracting the competition files ({listed_bytes / 1e9:.2f} GB listed)"
    check_free_space(folder, needed, what)


def _merge(src: Path, dst: Path) -> None:
    """Move `src` to `dst`; where `dst` already exists (both archives ship it), merge folder by folder."""
    if not dst.exists() and not dst.is_symlink():
        os.replace(src, dst)
        return
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)
        return
    if src.is_file() and dst.is_file() and src.stat().st_size == dst.stat().st_size:
        return  # the same file from both competitions
    raise DownloadError(f"both competitions ship {dst.name} with different contents ({src} vs {dst})")


def _nested_archives(folder: Path, depth: int = 2) -> list[Path]:
    found: list[Path] = []
    level = [folder]
    for _ in range(depth):
        nxt = []
        for d in level:
            for child in sorted(d.iterdir()):
                if is_archive(child):
                    found.append(child)
                elif child.is_dir() and not child.name.startswith("."):
                    nxt.append(child)
        level = nxt
    return found


def _layout_root(extracted: Path, layout: LayoutParams, slug: str) -> Path:
    """The folder of one competition's extracted files that holds (its part of) the layout.

    A host may ship the data as an archive inside the download; those are unpacked one level deep.
    """
    try:
        return find_layout_root(extracted, layout, partial=True)
    except LayoutError:
        inner = _nested_archives(extracted)
        if not inner:
            raise
    for archive in inner:
        log.info("%s: unpacking the inner archive %s", slug, archive.name)
        safe_extract(archive, archive.with_name(archive.name.split(".")[0] + ".unpacked"))
        archive.unlink()
    return find_layout_root(extracted, layout, partial=True)


def _replace(staging: Path, dest: Path, work: Path) -> None:
    if dest.exists() or dest.is_symlink():
        old = work / "old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)


def download_kaggle(kaggle: KaggleParams, layout: LayoutParams, dest: Path) -> None:
    """Download both competitions' files, extract them safely and make `dest` hold exactly the HW2P2 layout.

    Raises:
        KaggleError: credentials, 401/403/404, network failure (the partial archive is kept for a resume).
        ArchiveError: an unsafe or corrupt archive (deleted, so the next run downloads afresh).
        LayoutError, DownloadError: the merged files do not form the layout, or clash between the competitions.
        DiskSpaceError: the disk cannot hold the archives and their extraction (checked before downloading).
    """
    from pipeline.kaggle_client import KaggleClient  # imports kaggle, which authenticates: only when used

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = work_dir(dest)
    slugs = list(dict.fromkeys([kaggle.classification, kaggle.verification]))
    client = KaggleClient()

    listed = sum(client.total_bytes(slug) for slug in slugs)
    check_space(dest.parent, listed, already=_partial_bytes(work / "archives"))

    archives = {slug: client.download(slug, work / "archives" / slug) for slug in slugs}
    for name in ("extract", "staging", "old"):
        shutil.rmtree(work / name, ignore_errors=True)
    staging = work / "staging"
    staging.mkdir(parents=True)
    try:
        tops = {rel.replace("\\", "/").split("/")[0] for rel in layout_entries(layout).values()}
        for slug, archive in archives.items():
            extracted = work / "extract" / slug
            safe_extract(archive, extracted)
            root = _layout_root(extracted, layout, slug)
            log.info("%s: layout found at %s", slug, root.relative_to(extracted) if root != extracted else ".")
            for top in sorted(tops):
                if (root / top).exists():
                    _merge(root / top, staging / top)
            extras = sorted(p.name for p in root.iterdir() if p.name not in tops)
            if extras:
                log.info("%s: ignoring files outside the layout: %s", slug, ", ".join(extras[:10]))
        missing = missing_entries(staging, layout)
        if missing:
            raise LayoutError(
                f"the downloaded competitions ({', '.join(slugs)}) lack {', '.join(missing)}; check the layout "
                "and kaggle sections of params.yaml against `kaggle competitions files <slug>`"
            )
        _replace(staging, dest, work)
    except ArchiveError:
        shutil.rmtree(work, ignore_errors=True)  # a hostile or corrupt archive is not worth resuming
        raise
    except BaseException:
        for name in ("extract", "staging"):
            shutil.rmtree(work / name, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    log.info("competition ready in %s", dest)
