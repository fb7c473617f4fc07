"""Matplotlib figures a run logs (Agg backend; no display needed). Drawing only: no MLflow here.

Class names arrive as the dataset's display names (``Splits.display_classes``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import matplotlib
import matplotlib.pyplot
import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (figures render without a display)."""
    matplotlib.use("Agg", force=False)
    return matplotlib.pyplot


def confusion_matrix_figure(confusion: np.ndarray, classes: Sequence[str], title: str = "Test confusion matrix") -> Figure:
    """Counts with row-normalised colour (recall per true class); ``classes`` as they should read."""
    plt = pyplot()
    rows = confusion.sum(1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 2, 1.4 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{confusion[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def image_grid_figure(
    images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str,
    flags: torch.Tensor | None = None, cols: int = 8,
) -> Figure:
    """A grid of uint8 ``(N, 1, H, W)`` images with their class (and 'synthetic' marks)."""
    plt = pyplot()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.7), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        name = classes[int(labels[k])]
        if flags is not None and bool(flags[k]):
            name += " (syn)"
        ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
