"""Plots people would rather look at than read: ROC curves and score histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def roc_and_histogram(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, scores: np.ndarray, title: str, path: Path
) -> None:
    """Left: ROC curves (fpr, tpr) per model; right: same/different score histograms of the ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, hist_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, (fpr, tpr) in curves.items():
        roc_ax.plot(fpr, tpr, label=name, lw=2 if name == "ensemble" else 1)
    roc_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    roc_ax.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC (validation trials)")
    roc_ax.legend(fontsize=8)
    bins = np.linspace(float(scores.min()), float(scores.max()), 60)
    hist_ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="same identity", density=True)
    hist_ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="different", density=True)
    hist_ax.set(xlabel="score", title="ensemble scores (validation trials)")
    hist_ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
