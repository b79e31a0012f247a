"""Precision-recall curves per class and source (model curve, each reader's single operating point)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipelines.contracts import CLASS_NAMES
from pipelines.evaluate.scoring import Matched, pr_curve


def plot_pr_curves(
    sources: Mapping[str, Matched], out_dir: Path, set_name: str, iou: float, synthetic: bool
) -> list[Path]:
    """One PNG per class: the model's curve and each reader's point; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for class_id, name in enumerate(CLASS_NAMES):
        fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
        for source, m in sources.items():
            recall, precision, _ = pr_curve(m, class_id, iou)
            if recall.size == 0:
                continue
            if recall.size == 1:
                ax.plot(recall, precision, "o", label=source)
            else:
                ax.plot(recall, precision, "-", label=source, linewidth=1.5 if source == "model" else 1.0)
        title = f"{set_name.replace('_', ' ')}: {name} (IoU {iou:.2f})"
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
        if synthetic:
            ax.text(0.02, 0.03, "SYNTHETIC DATA", transform=ax.transAxes, fontsize=8, color="firebrick")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left" if not synthetic else "center left")
        path = out_dir / f"pr_{set_name}_{name}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
