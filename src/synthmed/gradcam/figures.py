"""Grad-CAM figures: grayscale MRI with the heat map blended on top, real next to synthetic.

One figure per class, like the thesis's Figures 3.1–3.4: a row per (real source, synthetic
variation) pair and six columns — real image, real CAM(true class), real CAM(predicted class),
synthetic image, synthetic CAM(true), synthetic CAM(predicted) — titled with probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

CAM_ALPHA = 0.5  # opacity of the heat map where the CAM is 1 (0 where it is 0)
MIN_TILE = 128  # tiles are enlarged to at least this many pixels a side


@dataclass
class ClassPanel:
    """Everything one class's figure shows; arrays hold one entry per pair.

    Attributes:
        class_name: the true class of every pair.
        label: its class index.
        classes: the names figures show for all classes (index → display name).
        real / synthetic: ``(N, H, W)`` float images in ``[0, 1]``.
        probs_real / probs_synthetic: ``(N, C)`` softmax probabilities.
        cam_real_true / cam_real_pred / cam_synthetic_true / cam_synthetic_pred: ``(N, H, W)``
            maps in ``[0, 1]`` for the true and for the predicted class.
        source_rows: ``(N,)`` row of each real image in its split (shown in the titles).
    """

    class_name: str
    label: int
    classes: tuple[str, ...]
    real: np.ndarray
    synthetic: np.ndarray
    probs_real: np.ndarray
    probs_synthetic: np.ndarray
    cam_real_true: np.ndarray
    cam_real_pred: np.ndarray
    cam_synthetic_true: np.ndarray
    cam_synthetic_pred: np.ndarray
    source_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.real)


def overlay(image: np.ndarray, cam: np.ndarray, *, cmap: str = "jet", alpha: float = CAM_ALPHA) -> np.ndarray:
    """Blend a heat map over a grayscale image: ``(H, W, 3)`` RGB uint8.

    The image is drawn in gray (replicated to three channels); the colormapped CAM is mixed in
    with a per-pixel opacity ``alpha * cam``, so pixels with CAM 0 keep exactly their gray value
    and the hottest pixels are ``alpha`` colour. (pytorch-grad-cam's ``show_cam_on_image`` wants
    an RGB float image and tints the whole picture with the colormap's zero colour.)

    Args:
        image: ``(H, W)`` grayscale, uint8 or float in ``[0, 1]``.
        cam: ``(H, W)`` map in ``[0, 1]``.
        cmap: a matplotlib colormap name (``jet``, ``inferno``, ...).
        alpha: opacity of the heat map where the CAM is 1.
    """
    import matplotlib
    import numpy as np

    gray = np.asarray(image, dtype=np.float64)
    if np.asarray(image).dtype == np.uint8:
        gray = gray / 255.0
    if gray.ndim != 2 or np.shape(cam) != gray.shape:
        raise ValueError(f"overlay needs (H, W) image and map of one size, got {gray.shape} and {np.shape(cam)}")
    heat = np.clip(np.asarray(cam, dtype=np.float64), 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](heat)[..., :3]  # (H, W, 3) in [0, 1]
    weight = (alpha * heat)[..., None]  # (H, W, 1)
    rgb = (1.0 - weight) * np.clip(gray, 0.0, 1.0)[..., None] + weight * colour
    return np.round(rgb * 255.0).astype(np.uint8)


def panel_figure(
    panel: ClassPanel,
    *,
    title: str,
    notes: Sequence[str] | None = None,
    cmap: str = "jet",
) -> Figure:
    """The thesis-style grid for one class (rows = pairs, six columns).

    The tiles are composed into one RGB mosaic and drawn as a single image with text labels
    (24 separate axes take seconds to lay out and save; this takes a fraction of one).

    Args:
        panel: what to draw.
        title: the figure's title (method, image source, generator).
        notes: one short line per pair shown over the synthetic image (e.g. its agreement).
        cmap: heat-map colormap.
    """
    import numpy as np
    from matplotlib.figure import Figure

    n, classes, true = len(panel), panel.classes, panel.label
    h, w = panel.real.shape[1:]
    up = max(1, -(-MIN_TILE // max(h, w)))  # small images are enlarged (nearest) so labels fit
    th, tw = h * up, w * up
    band, gap, top = round(0.32 * th), max(2, round(0.05 * tw)), 30  # label band, gap between tiles, title
    cols = [c * (tw + gap) + (gap * 3 if c >= 3 else 0) for c in range(6)]  # extra gap: real | synthetic
    canvas = np.full((top + n * (band + th + gap), cols[-1] + tw, 3), 255, np.uint8)
    labels: list[tuple[float, float, str]] = []
    sides = (
        ("real", panel.real, panel.probs_real, panel.cam_real_true, panel.cam_real_pred),
        ("synthetic", panel.synthetic, panel.probs_synthetic, panel.cam_synthetic_true, panel.cam_synthetic_pred),
    )
    for i in range(n):
        y = top + i * (band + th + gap) + band
        for s, (kind, images, probs, cam_true, cam_pred) in enumerate(sides):
            pred = int(probs[i].argmax())
            head = f"{kind} #{int(panel.source_rows[i])}" if kind == "real" else kind
            if kind == "synthetic" and notes is not None:
                head = f"{head} ({notes[i]})"
            gray = np.round(np.clip(images[i], 0, 1) * 255).astype(np.uint8)
            tiles = (
                (np.repeat(gray[..., None], 3, axis=2), f"{head}\np({classes[true]})={probs[i, true]:.2f}"),
                (overlay(images[i], cam_true[i], cmap=cmap), f"CAM true: {classes[true]}\np={probs[i, true]:.2f}"),
                (overlay(images[i], cam_pred[i], cmap=cmap), f"CAM pred: {classes[pred]}\np={probs[i, pred]:.2f}"),
            )
            for j, (tile, text) in enumerate(tiles):
                x = cols[3 * s + j]
                canvas[y : y + th, x : x + tw] = tile.repeat(up, axis=0).repeat(up, axis=1)
                labels.append((x + tw / 2, y - band / 2, text))
    dpi = 100
    fig = Figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="center", fontsize=7)
    ax.text(canvas.shape[1] / 2, top / 2, title, ha="center", va="center", fontsize=9)
    ax.set_axis_off()
    return fig
