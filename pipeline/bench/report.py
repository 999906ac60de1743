"""Result rows, the machine they were measured on, and the printed table / JSON."""

from __future__ import annotations

import os
import platform
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.io import write_json


@dataclass
class Row:
    """One measurement against its baseline or bound.

    `ratio` is always oriented so that the target reads naturally next to it (e.g. "<= 3x" for ours / bound,
    ">= 1.3x" for ours / baseline throughput); `met` is None for rows that only inform.
    """

    bench: str  # which benchmark produced it: scoring, loading, training, embedding, indexing
    name: str  # what was measured
    ours: float
    unit: str
    base: float | None = None
    base_name: str = ""  # what the baseline or bound is
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)  # machine-readable details (counts, sample sizes) for the JSON

    def __post_init__(self) -> None:
        # numpy scalars would not survive json.dumps
        self.ours = float(self.ours)
        self.base = None if self.base is None else float(self.base)
        self.ratio = None if self.ratio is None else float(self.ratio)
        self.met = None if self.met is None else bool(self.met)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """What the figures came from: CPU, cores, memory, library versions, device, load average at the time."""
    import numpy as np
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        text = f"{value:.3g}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif value == int(value):
        text = f"{int(value)}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def format_table(rows: list[Row], info: dict, scale: str) -> str:
    """A fixed-width text table (rows, then notes, then the machine)."""
    header = ("#", "measurement", "ours", "baseline / bound", "ratio", "target", "met?")
    body = []
    for i, r in enumerate(rows, start=1):
        base = f"{_fmt(r.base, r.unit)} ({r.base_name})" if r.base is not None else r.base_name or "-"
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}x"
        body.append((str(i), f"[{r.bench}] {r.name}", _fmt(r.ours, r.unit), base, ratio, r.target or "-", met))
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths)), *map(line, body)]
    notes = [f"  {i}. {r.note}" for i, r in enumerate(rows, start=1) if r.note]
    if notes:
        out += ["", "notes:", *notes]
    gpu = f" ({info['gpu']}, CUDA {info['cuda']})" if "gpu" in info else ""
    out += [
        "",
        f"scale: {scale}",
        f"machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"{info['memory_gib']} GiB; python {info['python']}, torch {info['torch']}, numpy {info['numpy']}; "
        f"device {info['device']}{gpu}",
        f"load average: {info['load_average_start']} at start (other work: figures are noise when it nears the core "
        f"count), {info['load_average']} at end (includes the bench itself); peak RSS {peak_rss_mib():.0f} MiB "
        "(memory-mapped arrays included)",
    ]
    return "\n".join(out)


def write(path: Path, rows: list[Row], info: dict, scale: str) -> None:
    write_json(path, {"scale": scale, "machine": info, "rows": [asdict(r) for r in rows]})
