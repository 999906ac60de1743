"""Run one command and measure what it cost: wall time, peak memory of its process tree, bytes written to disk.

- **Peak RSS** is the largest resident set any single process of the tree reached: `ru_maxrss` of
  `RUSAGE_CHILDREN`, read by a small launcher (`child_usage.py`) after the command ends; Linux folds each reaped
  child's peak into its parent's, so it covers DVC, the stage's Python process, its loader workers and render pool.
  It is a maximum over processes, not a sum, and exact (the kernel's high-water mark), where sampling could miss a
  short peak.
- **Peak PSS of the tree** is the sum over the live tree (the command and all its descendants) of each process's
  proportional set size, sampled every second from `/proc/<pid>/smaps_rollup`: the memory the processes take
  together, with shared pages (a memory-mapped array read by the stage and its loader workers) counted once.
- **Written** is the tree's block output (`ru_oublock` x 512 bytes): what reached the storage layer, temporary
  files and DVC's cache copies included; a file system without block devices (tmpfs) reports 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LAUNCHER = Path(__file__).with_name("child_usage.py")  # runs the command and reads its tree's usage
KIB = 1024


@dataclass(frozen=True)
class Measured:
    returncode: int
    wall_s: float
    max_rss: int  # bytes: the largest single process of the tree (exact high-water mark)
    peak_tree: int  # bytes: the largest sampled sum of PSS over the live tree; 0 without /proc
    written: int  # bytes of block output by the tree
    last_line: str  # the last line the command printed (a progress bar's latest state included)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])  # the name in parentheses may hold spaces
        kids[ppid].append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    kids, tree, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, ()))
    return tree


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (its resident size where smaps_rollup is unreadable); 0 once gone."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * KIB
    except (OSError, ValueError):
        pass
    try:
        return int((PROC / str(pid) / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tree_pss(pid: int) -> int:
    if not PROC.is_dir():
        return 0
    return sum(pss_bytes(p) for p in process_tree(pid))


def disk_usage(paths: Iterable[Path]) -> int:
    """Bytes the files under `paths` take on disk (allocated blocks, so a 1 KB JPEG counts its 4 KiB block); a file
    with several hard links is counted once; symbolic links are not followed; missing paths count 0."""
    seen: set[tuple[int, int]] = set()
    total = 0
    todo = [Path(p) for p in paths]
    while todo:
        path = todo.pop()
        try:
            st = path.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if path.is_dir() and not path.is_symlink():
            with os.scandir(path) as it:
                todo.extend(Path(e.path) for e in it)
    return total


class _Output:
    """Copies the command's output to its log file and keeps the last line (a `\\r`-redrawn bar counts as lines)."""

    def __init__(self, stream, log) -> None:
        self.last_line = ""
        self._stream, self._log = stream, log
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for chunk in iter(lambda: self._stream.read1(1 << 16), b""):
            self._log.write(chunk)
            self._log.flush()
            lines = [s.strip() for s in chunk.decode("utf-8", "replace").replace("\r", "\n").split("\n")]
            lines = [s for s in lines if s]
            if lines:
                self.last_line = lines[-1]


def run_measured(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    progress: Callable[[float, int, str], None] | None = None,
    progress_every_s: float = 60.0,
    sample_every_s: float = 1.0,
) -> Measured:
    """Run `cmd` to the end, its output (stdout and stderr) into `log_path`, and measure it.

    `progress(elapsed_s, tree_pss_bytes, last_line)` is called every `progress_every_s` while it runs. A Ctrl-C
    reaches the command too (same process group); this waits for it to stop, then raises KeyboardInterrupt.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        usage_file = log_path.with_name(f".{log_path.name}.usage.json")
        usage_file.unlink(missing_ok=True)
        launcher = [sys.executable, "-I", str(LAUNCHER), str(usage_file), "--", *cmd]
        start = time.perf_counter()
        proc = subprocess.Popen(launcher, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = _Output(proc.stdout, log)
        done = threading.Event()
        peak = [0]

        def sample() -> None:
            next_report = progress_every_s
            while True:  # a first sample at once: a command of under a second still gets one
                now = tree_pss(proc.pid)
                peak[0] = max(peak[0], now)
                elapsed = time.perf_counter() - start
                if progress is not None and elapsed >= next_report:
                    next_report += progress_every_s
                    progress(elapsed, now, output.last_line)
                if done.wait(sample_every_s):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        interrupted = False
        while True:
            try:
                proc.wait()
                break
            except KeyboardInterrupt:  # the command got the same SIGINT: let it finish its own way, then stop
                interrupted = True
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        output.thread.join(timeout=10)  # a descendant left running could hold the pipe open: do not hang on it
        proc.stdout.close()
    if interrupted:
        raise KeyboardInterrupt
    try:
        usage = json.loads(usage_file.read_text(encoding="utf-8"))
        usage_file.unlink()
    except (OSError, ValueError):  # the launcher itself was killed: nothing measured
        usage = {"max_rss_kib": 0, "oublock": 0}
    return Measured(
        returncode=proc.returncode,
        wall_s=wall,
        max_rss=usage["max_rss_kib"] * KIB,  # Linux reports KiB
        peak_tree=peak[0],
        written=usage["oublock"] * 512,
        last_line=output.last_line,
    )
