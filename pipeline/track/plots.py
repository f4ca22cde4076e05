"""Plots logged with every run."""

from __future__ import annotations

from pathlib import Path


def learning_curves(history: dict[str, list[float]], best_epoch: int | None, out: Path) -> Path:
    """Train vs validation loss and metric per epoch, with the epoch early stopping kept.

    Args:
        history: Keras ``History.history``.
        best_epoch: 1-based epoch whose weights were kept; None to omit the marker.
        out: PNG path to write.
    """
    from pipeline.files import pyplot, save_figure

    plt = pyplot()

    metrics = [k for k in history if not k.startswith("val_") and k != "learning_rate" and f"val_{k}" in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    epochs = range(1, len(history[metrics[0]]) + 1)
    for ax, name in zip(axes[0], metrics):
        ax.plot(epochs, history[name], label=f"train {name}")
        ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)
