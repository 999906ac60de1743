"""`python -m pipeline leaderboard`: your Kaggle scores next to the local validation scores that predicted them.

Fetches your submissions (with public and private scores) for the configured competition(s), joins them with
`submissions/history.csv` on the Kaggle reference, prints one table, and plots local validation score
against public score (`submissions/leaderboard.png`): points near the diagonal mean local validation
predicts the leaderboard. The joined table is also written as `submissions/leaderboard.csv`, oldest first: dvc.yaml
declares it a plot (local validation and leaderboard figures of each submission over time) for `dvc plots show`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.params import PARAMS_FILE

log = logging.getLogger(__name__)

TASKS = ("classification", "verification")
COLUMNS = ("date", "task", "ref", "status", "local", "public", "private", "file", "message")
# submissions/leaderboard.csv: the plot data of the submission history (dvc.yaml, .dvc/plots/submission_history.json).
CSV_COLUMNS = ("time", "task", "ref", "local_metric", "local", "public", "private", "status", "file", "message")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both", help="which competition(s)")
    parser.add_argument("--history", type=Path, default=Path("submissions/history.csv"), help="default: %(default)s")
    parser.add_argument(
        "--plot", type=Path, default=Path("submissions/leaderboard.png"), help="plot to write (default: %(default)s)"
    )
    parser.add_argument(
        "--csv", type=Path, default=Path("submissions/leaderboard.csv"), help="table to write (default: %(default)s)"
    )
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: %(default)s)")


def _num(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def join(
    remote: dict[str, list[Any]], history: list[dict[str, str]], slug_tasks: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """One row per Kaggle submission (newest first), with the history row that has its reference.

    Args:
        remote: slug -> that competition's `RemoteSubmission`s.
        history: rows of history.csv.
        slug_tasks: slug -> the tasks it scores (one, unless both tasks share a competition).
    """
    from pipeline.history import LOCAL_METRIC

    by_ref = {(h["competition"], h["kaggle_ref"]): h for h in history}
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for slug, subs in remote.items():
        for s in subs:
            key = (slug, str(s.ref))
            seen.add(key)
            h = by_ref.get(key, {})
            task = h.get("task") or (slug_tasks[slug][0] if len(slug_tasks[slug]) == 1 else "?")
            rows.append(
                {
                    "date": s.date.strftime("%Y-%m-%d %H:%M") if s.date else "",
                    # when `submit` uploaded it (history.csv), else Kaggle's date: the plot's time axis
                    "time": h.get("time") or (s.date.strftime("%Y-%m-%dT%H:%M:%SZ") if s.date else ""),
                    "task": task,
                    "ref": s.ref,
                    "status": s.status if not s.error else f"{s.status}: {s.error}",
                    "local": _num(h.get(LOCAL_METRIC.get(task, ""))),
                    "public": s.public_score,
                    "private": s.private_score,
                    "file": h.get("file") or s.file_name,
                    "message": s.description,
                    "in_history": bool(h),
                }
            )
    for h in history:
        if h["competition"] in remote and (h["competition"], h["kaggle_ref"]) not in seen:
            rows.append(
                {
                    "date": h.get("time", "")[:16].replace("T", " "),
                    "time": h.get("time", ""),
                    "task": h["task"],
                    "ref": h["kaggle_ref"],
                    "status": "not listed by Kaggle",
                    "local": _num(h.get(LOCAL_METRIC.get(h["task"], ""))),
                    "public": None,
                    "private": None,
                    "file": h.get("file", ""),
                    "message": h.get("message", ""),
                    "in_history": True,
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.5f}"
        text = str(v)
        return text if len(text) <= 40 else text[:37] + "..."

    table = [list(COLUMNS)] + [[cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], tasks: tuple[str, ...], out: Path) -> int:
    """Scatter of local validation score against public score per task; the number of points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.history import LOCAL_METRIC
    from pipeline.io import atomic_path

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.5), squeeze=False)
    drawn = 0
    for ax, task in zip(axes[0], tasks, strict=True):
        pts = [(r["local"], r["public"], r["ref"]) for r in rows if r["task"] == task]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        drawn += len(pts)
        if pts:
            xs, ys, refs = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=30)
            for x, y, ref in pts[:30]:
                ax.annotate(str(ref), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            lo, hi = min(*xs, *ys), max(*xs, *ys)
            pad = max(hi - lo, 0.01) * 0.1
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="grey", lw=1, label="public = local")
            ax.legend(loc="lower right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no scored submission\nwith local metrics yet", ha="center", va="center")
        ax.set_title(task)
        ax.set_xlabel(f"local {LOCAL_METRIC[task]}")
        ax.set_ylabel("Kaggle public score")
        ax.grid(alpha=0.3)
    fig.suptitle("Does local validation predict the leaderboard?")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return drawn


def write_csv(rows: list[dict[str, Any]], tasks: tuple[str, ...], out: Path) -> int:
    """The joined rows, oldest first, as `CSV_COLUMNS` (a missing score is an empty cell); rows of other tasks
    already in `out` stay (`--task verification` keeps the classification history). Returns the rows written."""
    import csv

    from pipeline.history import LOCAL_METRIC
    from pipeline.io import atomic_path

    kept: list[dict[str, Any]] = []
    if out.is_file():
        with open(out, newline="", encoding="utf-8") as f:
            kept = [r for r in csv.DictReader(f) if r.get("task") not in (*tasks, "?")]
    fresh = [{**r, "local_metric": LOCAL_METRIC.get(r["task"], "")} for r in rows]
    ordered = sorted([*kept, *fresh], key=lambda r: (str(r.get("time") or ""), str(r.get("ref") or "")))
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS} for r in ordered)
    return len(ordered)


def main(args: argparse.Namespace) -> int:
    from pipeline.history import LOCAL_METRIC, HistoryError, read_history
    from pipeline.kaggle_client import KaggleClient, KaggleError
    from pipeline.params import load_params

    tasks = TASKS if args.task == "both" else (args.task,)
    try:
        params = load_params(args.params, check_model=False)
        history = read_history(args.history)
        client = KaggleClient()
        slug_tasks: dict[str, list[str]] = {}
        for task in tasks:
            slug_tasks.setdefault(getattr(params.kaggle, task), []).append(task)
        remote = {slug: client.submissions(slug) for slug in slug_tasks}
    except (ValueError, OSError, KaggleError, HistoryError) as err:
        log.error("%s", err)
        return 1
    rows = join(remote, history, slug_tasks)
    rows = [r for r in rows if r["task"] in (*tasks, "?")]
    if rows:
        print(format_table(rows))
    else:
        print(f"no submissions yet to {', '.join(slug_tasks)}")
    print("local = " + ", ".join(f"{LOCAL_METRIC[t]} ({t})" for t in tasks) + f" from {args.history}")
    n = plot(rows, tasks, args.plot)
    log.info("wrote %s (%d points)", args.plot, n)
    n = write_csv(rows, tasks, args.csv)
    log.info("wrote %s (%d submissions; `dvc plots show` draws them over time)", args.csv, n)
    return 0
