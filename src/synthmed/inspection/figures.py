"""Figures for generation inspection: matplotlib ``Figure`` objects built without pyplot."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure


def _show(ax, img: torch.Tensor | None, title: str) -> None:
    ax.set_axis_off()
    if img is not None:
        ax.imshow(img.squeeze().cpu().numpy(), cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=7)


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3g}"


def per_class_figure(
    sources: torch.Tensor | Sequence[torch.Tensor | None],
    synthetic: torch.Tensor,
    nearest: torch.Tensor,
    source_distance: Sequence[float],
    nearest_distance: Sequence[float],
    title: str,
    *,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Rows of ``source | its synthetic image | nearest OTHER real image`` with distances in titles.

    All images are uint8 ``(1, H, W)``; a missing source may be ``None``. ``labels`` (optional)
    prefix each row's first title (e.g. the class in an overview).
    """
    n = len(synthetic)
    fig = Figure(figsize=(6, 2.0 * max(n, 1) + 0.4))
    fig.suptitle(title, fontsize=9)
    if n == 0:
        return fig
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        pre = f"{labels[i]}: " if labels else ""
        _show(axes[i][0], sources[i], f"{pre}source")
        _show(axes[i][1], synthetic[i], f"synthetic (d_src {_fmt(float(source_distance[i]))})")
        _show(axes[i][2], nearest[i], f"nearest other (d {_fmt(float(nearest_distance[i]))})")
    fig.tight_layout()
    return fig


def worst_pairs_figure(
    synthetic: torch.Tensor,
    nearest: torch.Tensor,
    nearest_distance: Sequence[float],
    ratio: Sequence[float],
    *,
    labels: Sequence[str] | None = None,
    title: str = "Synthetic images closest to another real training image",
) -> Figure:
    """Pairs ``synthetic | nearest other real image``, columns of pairs, most copy-like first."""
    n = len(synthetic)
    cols = 4  # pairs per row
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(2.0 * 2 * cols, 2.1 * rows + 0.4))
    fig.suptitle(title, fontsize=9)
    if n == 0:
        return fig
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, cols)
        pre = f"{labels[i]} " if labels else ""
        _show(axes[r][2 * c], synthetic[i], f"{pre}synthetic")
        _show(axes[r][2 * c + 1], nearest[i], f"d {_fmt(float(nearest_distance[i]))} r {_fmt(float(ratio[i]))}")
    fig.tight_layout()
    return fig
