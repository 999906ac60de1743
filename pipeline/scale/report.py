"""The scale run's rows against the issue's targets, as a markdown table (docs/SCALE.md's format) and JSON.

Targets (2 cores, 24 GiB): every stage's largest process under 8 GiB; no stage but train and embed above 5 minutes;
a second `dvc repro` with nothing changed under 60 s; disk use reported against the raw data's size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RSS_LIMIT = 8 * 2**30  # bytes: any stage's largest process
STAGE_LIMIT_S = 300.0  # seconds: any stage but train@k and embed@k
NOOP_LIMIT_S = 60.0  # seconds: `dvc repro` with nothing changed
LONG_STAGES = ("train@", "embed@")  # allowed above STAGE_LIMIT_S: they scale with the training budget


@dataclass
class StageRow:
    stage: str
    # ran | earlier (up to date now; the figures are those of the earlier run of this working copy that ran it) |
    # skipped (up to date, and no earlier figures) | failed
    status: str
    wall_s: float
    max_rss: int  # bytes, largest single process
    peak_tree: int  # bytes, sum of PSS over the processes, sampled
    outputs: int  # bytes on disk of the stage's outputs (dvc.lock's outs)
    written: int  # bytes of block output while it ran

    @property
    def time_limit_s(self) -> float | None:
        return None if self.stage.startswith(LONG_STAGES) else STAGE_LIMIT_S

    def met(self) -> bool:
        fast = self.time_limit_s is None or self.wall_s <= self.time_limit_s
        return self.status != "failed" and self.max_rss < RSS_LIMIT and fast


@dataclass
class NoopRow:
    wall_s: float
    ran: list[str]  # stages the second `dvc repro` ran (should be none)
    max_rss: int

    def met(self) -> bool:
        return not self.ran and self.wall_s < NOOP_LIMIT_S


@dataclass
class Validation:
    """`python -m pipeline validate FILE` of one submission, as a user checks it before uploading."""

    file: str
    ok: bool  # exit status 0
    said: str  # the command's last line (or the exit status when it printed nothing)
    seconds: float

    def line(self) -> str:
        return f"{self.file}: {'ok' if self.ok else 'FAILED'}: {self.said} ({self.seconds:.1f} s)"


@dataclass
class ScaleReport:
    title: str  # what was rendered and how long it trained, in words
    workdir: str
    commit: str
    machine: dict[str, Any]
    params: dict[str, Any]  # the keys this run set, by dotted name
    stages: list[StageRow] = field(default_factory=list)
    noop: NoopRow | None = None
    disk: dict[str, int] = field(default_factory=dict)  # raw, decoded, dvc_cache, workdir (bytes on disk)
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics/ensemble.json's validation figures, per fold too
    summary: list[str] = field(default_factory=list)  # `python -m pipeline summary`'s figure lines
    validated: list[Validation] = field(default_factory=list)  # each submission
    wall_s: float = 0.0  # the whole run: stages, no-op repro and measurements

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = {"rss_bytes": RSS_LIMIT, "stage_s": STAGE_LIMIT_S, "noop_s": NOOP_LIMIT_S}
        out["met"] = self.met()
        return out

    def met(self) -> bool:
        valid = all(v.ok for v in self.validated)
        return all(r.met() for r in self.stages) and self.noop is not None and self.noop.met() and valid


def earlier_rows(report_json: dict[str, Any]) -> dict[str, StageRow]:
    """The rows of stages an earlier run measured (ran, or carried over from a run before it), by stage."""
    rows = {}
    for row in report_json.get("stages", []):
        if row.get("status") in ("ran", "earlier"):
            rows[row["stage"]] = StageRow(**{**row, "status": "earlier"})
    return rows


def duration(seconds: float) -> str:
    """4 min 58 s, 1 h 02 min, 12.3 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(n: int) -> str:
    """Bytes in GiB/MiB/KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def stage_line(i: int, n: int, row: StageRow) -> str:
    """The progress line printed when a stage ends."""
    if row.status == "skipped":
        return f"[{i}/{n}] {row.stage}: up to date, skipped ({duration(row.wall_s)}; no earlier figures)"
    if row.status == "earlier":
        return f"[{i}/{n}] {row.stage}: up to date; the figures an earlier run measured: {duration(row.wall_s)}"
    return (
        f"[{i}/{n}] {row.stage}: {row.status} in {duration(row.wall_s)}; peak RSS {size(row.max_rss)} "
        f"(all processes {size(row.peak_tree)}); outputs {size(row.outputs)}; written {size(row.written)}"
    )


def markdown(report: ScaleReport) -> str:
    raw = report.disk.get("raw", 0)
    lines = [
        f"### {report.title}",
        "",
        f"Working copy `{report.workdir}` (commit {report.commit[:7]}); {_machine_line(report.machine)}.",
        "",
        "| stage | wall time | peak RSS (largest process) | peak PSS (all processes) | outputs on disk "
        "| written | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.stages:
        limit = "RSS < 8 GiB" + (f", < {duration(r.time_limit_s)}" if r.time_limit_s else "")
        status = {"ran": "", "earlier": " (an earlier run)"}.get(r.status, f" ({r.status})")
        lines.append(
            f"| `{r.stage}`{status} | {duration(r.wall_s)} | {size(r.max_rss)} | {size(r.peak_tree)} "
            f"| {size(r.outputs)} | {size(r.written)} | {limit} | {_yes(r.met())} |"
        )
    if report.noop is not None:
        n = report.noop
        ran = f" (ran {', '.join(n.ran)})" if n.ran else ""
        lines.append(
            f"| second `dvc repro`, nothing changed{ran} | {duration(n.wall_s)} | {size(n.max_rss)} | - | - | - "
            f"| < {duration(NOOP_LIMIT_S)}, no stage runs | {_yes(n.met())} |"
        )
    lines.append("")
    if raw:
        d = report.disk
        lines.append(
            f"Disk: raw JPEGs {size(raw)}; decoded arrays {size(d.get('decoded', 0))}; DVC cache "
            f"{size(d.get('dvc_cache', 0))}; the whole working copy (without .git) {size(d.get('workdir', 0))} = "
            f"{d.get('workdir', 0) / raw:.1f}x the raw data."
        )
    m = report.metrics
    if m:
        folds = ", ".join(f"{k} {v:.4f}" for k, v in m.get("fold_auc", {}).items())
        lines.append(
            f"Validation: AUC {m['val_auc']:.4f} ({folds}), accuracy {m['val_accuracy']:.4f} (out of fold), "
            f"EER {m['val_eer']:.4f}. Training ran {m.get('training', 'n/a')}."
        )
    lines += [f"`python -m pipeline summary`: {line}" for line in report.summary]
    lines += [f"`python -m pipeline validate` {v.line()}" for v in report.validated]
    lines.append(f"Whole run: {duration(report.wall_s)}; every target met: {_yes(report.met())}.")
    return "\n".join(lines) + "\n"


def _machine_line(info: dict[str, Any]) -> str:
    if not info:
        return "machine not recorded"
    gpu = f", {info['gpu']}" if info.get("gpu") else ""
    return (
        f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, {info.get('memory_gib', '?')} GiB{gpu}; "
        f"torch {info.get('torch', '?')}; load average {info.get('load_average_start', '?')} at the start"
    )
