"""The report card's pictures, drawn with matplotlib (headless): training curves and the data funnel.

    png = training_curves("pretrain", records)      # records: a stage's metrics.jsonl lines
    png = data_funnel(steps)                        # [(label, documents), ...] in pipeline order

Each returns PNG bytes (None when there is nothing to draw), written next to the run's output
and shown in the Prefect UI inline (flows/report_card.py). The PNGs carry no date or version,
so the same numbers draw the same bytes and a rerun rewrites nothing.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the flows run on workers and in tests

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

# (title, [(metric, label)...]): one panel each where the stage logged any of its metrics.
PANELS = (
    ("loss", [("train_loss", "train"), ("val_loss", "validation")]),
    ("bits per byte (validation)", [("val_bpb", "val_bpb")]),
    ("reward", [("reward_mean", "reward"), ("judge_mean", "held-out judge")]),
    ("KL to the reference", [("kl", "kl")]),
    ("accuracy (validation)", [("val_accuracy", "val_accuracy"), ("train_accuracy", "train")]),
)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def training_curves(stage: str, records: list[dict[str, Any]]) -> bytes | None:
    """One row of panels (loss, and whichever of bpb, reward, KL, accuracy the stage logged)."""
    panels = []
    for title, metrics in PANELS:
        series = []
        for metric, label in metrics:
            points = [(r["step"], r[metric]) for r in records if isinstance(r.get(metric), (int, float))]
            if points:
                series.append((label, points))
        if series:
            panels.append((title, series))
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels):
        for label, points in series:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o" if len(points) < 12 else None, markersize=3, label=label)
        axis.set_title(f"{stage}: {title}", fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if len(series) > 1:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def data_funnel(steps: list[tuple[str, int]]) -> bytes | None:
    """Documents left after each data step, as horizontal bars, first step on top."""
    if not steps:
        return None
    labels, counts = zip(*steps)
    figure, axis = plt.subplots(figsize=(7.0, 0.32 * len(steps) + 0.9))
    bars = axis.barh(range(len(steps)), counts, color="#4c78a8")
    axis.set_yticks(range(len(steps)), labels, fontsize=9)
    axis.invert_yaxis()
    axis.bar_label(bars, labels=[f"{count:,}" for count in counts], padding=3, fontsize=8)
    axis.set_xlabel("documents")
    axis.set_xlim(0, max(counts) * 1.15 or 1)
    axis.set_title("documents after each data step", fontsize=10)
    figure.tight_layout()
    return _png(figure)
