"""`data.source: local`: a competition the user already has, as a folder or an archive in the HW2P2 layout.

The layout is linked (hard links where the file system allows, copies otherwise) into the pipeline's raw folder,
so DVC tracks exactly what was used and the user's folder is never written to.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from pipeline.archive import find_layout_root, is_archive, safe_extract
from pipeline.io import atomic_dir, check_free_space
from pipeline.params import LayoutParams

log = logging.getLogger(__name__)


def mirror_tree(src: Path, dest: Path) -> int:
    """Recreate `src` under `dest` file by file: hard links (no space, no time) when `dest` is on the same file
    system, else copies, after checking there is room for them. Returns the number of files."""
    files = [Path(d, f) for d, _, names in os.walk(src) for f in names if not f.startswith(".")]
    place = os.link
    for i, path in enumerate(tqdm(files, desc="linking", unit="file", mininterval=1.0)):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            place(str(path), str(target))
        except OSError:
            if place is shutil.copy2:
                raise
            place = shutil.copy2  # another file system: copy from here on
            check_free_space(dest, sum(f.stat().st_size + 4096 for f in files[i:]), f"copying {src}")
            place(str(path), str(target))
    return len(files)


def import_local(path: str | Path, layout: LayoutParams, dest: Path) -> None:
    """Put the HW2P2 layout found in `path` (a folder, or a zip/tar) into `dest`, atomically."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data.path {path}: no such folder or archive")
    with atomic_dir(dest) as tmp:
        if is_archive(path):
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".extract-") as unpacked:
                safe_extract(path, unpacked)
                root = find_layout_root(unpacked, layout)
                for entry in root.iterdir():
                    os.replace(entry, tmp / entry.name)
        else:
            root = find_layout_root(path, layout)
            n = mirror_tree(root, tmp)
            log.info("linked %d files from %s", n, root)
