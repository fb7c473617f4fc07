"""Figures for generation inspection: matplotlib ``Figure`` objects built without pyplot."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from synthmed.inspection.curve import Curve


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
    left_name: str = "synthetic",
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
        ratio_text = "" if ratio[i] != ratio[i] else f" r {_fmt(float(ratio[i]))}"
        _show(axes[r][2 * c], synthetic[i], f"{pre}{left_name}")
        _show(axes[r][2 * c + 1], nearest[i], f"d {_fmt(float(nearest_distance[i]))}{ratio_text}")
    fig.tight_layout()
    return fig


def fidelity_diversity_figure(curve: Curve) -> Figure:
    """Per-class fidelity vs strength, precision/recall vs strength, per-class fidelity vs distance to source.

    Solid lines are the synthetic images at each strength; dashed lines, in the same colour, the
    real sources' values: the reference's own fidelity on them and real-vs-real precision/recall.
    """
    table = curve.table
    real = table[table["images"] == "real"].iloc[0]
    synth = table[table["images"] == "synthetic"].sort_values("strength")
    fig = Figure(figsize=(15, 4.8))
    ax_f, ax_r, ax_d = fig.subplots(1, 3)
    for i, (cls, name) in enumerate(zip(curve.classes, curve.names)):
        color = f"C{i}"
        ax_f.plot(synth["strength"], synth[f"fidelity_{name}"], "o-", color=color, label=cls)
        ax_d.plot(synth[f"distance_to_source_{name}"], synth[f"fidelity_{name}"], "o-", color=color, label=cls)
        for ax in (ax_f, ax_d):
            ax.axhline(real[f"fidelity_{name}"], color=color, linestyle="--", linewidth=1)
        for x, y, s in zip(synth[f"distance_to_source_{name}"], synth[f"fidelity_{name}"], synth["strength"]):
            ax_d.annotate(f"{s:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
    for column, marker, color in (("recall", "o-", "C0"), ("precision", "s-", "C1")):
        ax_r.plot(synth["strength"], synth[column], marker, color=color, label=column)
        ax_r.axhline(real[column], color=color, linestyle="--", linewidth=1, label=f"{column}, real vs real")
    ax_f.set_title("label fidelity per class (dashed: the reference on the real sources)", fontsize=9)
    ax_f.set_xlabel("strength")
    ax_r.set_title("k-NN precision / recall vs other real images", fontsize=9)
    ax_r.set_xlabel("strength")
    ax_d.set_title("fidelity vs distance to source (labels: strength)", fontsize=9)
    ax_d.set_xlabel("mean RMS pixel distance to the source ([0, 1] scale)")
    for ax in (ax_f, ax_r, ax_d):
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    ax_f.set_ylabel("share with the intended class")
    ax_f.legend(fontsize=7)
    ax_r.legend(fontsize=7)
    fig.suptitle("\n".join(textwrap.wrap(curve.note(), 160)), fontsize=8)
    fig.tight_layout()
    return fig


# --- the split audit (synthmed.inspection.split) ----------------------------------------------------
def twin_histogram_figure(test_nearest: torch.Tensor, neighbour_distances: torch.Tensor, threshold: float, *,
                          split: str, size: int) -> Figure:
    """Histograms of nearest RMS distances, the twin threshold marked.

    Left: every image's 1st..kth nearest other image (all pooled): the twin mode and the rest.
    Right: each test image's nearest training image: left of the line, a lookup finds a twin.
    """
    import numpy as np

    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    d = neighbour_distances.numpy()
    top = float(max(np.quantile(d, 0.995), float(test_nearest.max()) if len(test_nearest) else 0, threshold * 1.5))
    bins = np.linspace(0, top, 80)
    for k in range(d.shape[1]):
        left.hist(d[:, k], bins=bins, histtype="step", label=f"neighbour {k + 1}")
    left.set_title(f"all images pooled: nearest other images ({size} px)", fontsize=9)
    right.hist(test_nearest.numpy(), bins=bins, color="tab:blue", alpha=0.8)
    share = float((test_nearest < threshold).float().mean()) if len(test_nearest) else float("nan")
    right.set_title(f"{split} split: test image → nearest training image\n{share:.1%} below the threshold",
                    fontsize=9)
    for ax in (left, right):
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"twin threshold {threshold:.3f}")
        ax.set_xlabel("RMS distance (pixels in [0, 1])")
        ax.set_ylabel("images")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def closest_pairs_figure(test_images: torch.Tensor, train_images: torch.Tensor, distances: Sequence[float],
                         test_labels: Sequence[str], train_labels: Sequence[str], *, split: str) -> Figure:
    """Pairs ``test image | its nearest training image`` (closest first), labels and distance in the titles."""
    return worst_pairs_figure(test_images, train_images, distances, [float("nan")] * len(distances),
                              labels=[f"{a} → {b}" for a, b in zip(test_labels, train_labels)],
                              title=f"{split} split: the test images closest to a training image "
                                    "(left: test, right: nearest training image, d = RMS distance)",
                              left_name="(test → train)")
