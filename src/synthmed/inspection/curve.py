"""The fidelity–diversity curve: what a variation generator's ``strength`` trades.

A variation generator moves each source image by ``strength``: near 0 it hands back (a
reconstruction of) the source, near 1 something as far from it as it goes. Too little and a
synthetic image adds nothing the source did not; too much and it loses what made it its class.
:func:`fidelity_diversity_curve` measures both sides on the same sources, one variation each, at
every strength:

* ``fidelity`` (+ ``_<class>``): share the reference classifier gives the intended class;
* ``precision`` / ``recall``: k-NN manifolds (reference features) against *other* real images of
  the same classes, as many per class as there are sources (equal set sizes);
* ``distance_to_source`` (+ ``_<class>``): mean RMS pixel distance ([0, 1] scale) to the own source.

Its first row is the real sources themselves (``images = "real"``, no strength): the reference's
own fidelity on them and the real-vs-real precision/recall at the same size — what an identity
generator scores, the lines every synthetic row is read against. Computation only: drawing is
:func:`synthmed.inspection.figures.fidelity_diversity_figure`, running a generator is the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch

from synthmed.inspection.metrics import knn_precision_recall, label_fidelity, metric_suffix, pixel_vectors

if TYPE_CHECKING:
    from synthmed.data.base import ImageSet
    from synthmed.inspection.reference import ReferenceClassifier

__all__ = ["Curve", "curve_sources", "fidelity_diversity_curve"]


@dataclass
class Curve:
    """One row per strength after the real sources' row; see the module docstring for the columns."""

    table: pd.DataFrame
    classes: tuple[str, ...]
    sources_per_class: list[int]  # sources of each class on the curve
    comparison_size: int  # real images precision/recall are measured against (= synthetic images used)

    @property
    def names(self) -> list[str]:
        """The classes as column suffixes (``fidelity_<name>``)."""
        return [metric_suffix(c) for c in self.classes]

    def note(self) -> str:
        """What the curve looked at, in one sentence (for the CLI and the figure)."""
        per_class = ", ".join(f"{c} {n}" for c, n in zip(self.classes, self.sources_per_class))
        return (f"{sum(self.sources_per_class)} sources (seeded, stratified: {per_class}), one variation each "
                f"at every strength; precision/recall against {self.comparison_size} other real images of the "
                "same classes")

    def markdown(self) -> str:
        """The table as markdown: overall and per-class fidelity, precision, recall, distance to source."""
        columns = ["images", "strength", "fidelity", *(f"fidelity_{n}" for n in self.names), "precision", "recall",
                   "distance_to_source"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for kind, strength, *values in self.table[columns].itertuples(index=False):
            cells = [kind, "" if strength != strength else f"{strength:g}"]  # the real row has no strength
            cells += ["n/a" if v != v else f"{v:.3f}" for v in values]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def curve_sources(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted rows: a seeded draw of ``per_class`` rows of each class (every row of a class with fewer)."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        picked.append(rows[torch.randperm(len(rows), generator=g)[:per_class]])
    return torch.cat(picked).sort().values if picked else torch.empty(0, dtype=torch.long)


def _comparison_rows(sources: ImageSet, pool: ImageSet, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class ``n = min(sources of c, other pool images of c)``: n source rows and n pool rows (not sources)."""
    g = torch.Generator().manual_seed(seed + 1)
    is_source = torch.isin(pool.index, sources.index)
    src_rows, pool_rows = [], []
    for c in torch.unique(sources.labels).tolist():
        mine = torch.nonzero(sources.labels == c).flatten()
        others = torch.nonzero((pool.labels == c) & ~is_source).flatten()
        n = min(len(mine), len(others))
        src_rows.append(mine[torch.randperm(len(mine), generator=g)[:n]])
        pool_rows.append(others[torch.randperm(len(others), generator=g)[:n]])
    return torch.cat(src_rows), torch.cat(pool_rows)


def fidelity_diversity_curve(
    sources: ImageSet,
    variations: Callable[[float], torch.Tensor],
    strengths: Sequence[float],
    reference: ReferenceClassifier,
    classes: Sequence[str],
    pool: ImageSet,
    *,
    k: int = 3,
    seed: int = 0,
) -> Curve:
    """Fidelity, precision/recall and distance to source of one variation per source, per strength.

    Args:
        sources: the real source images (:func:`curve_sources` of the run's sample, say).
        variations: ``variations(s)`` → ``(N, 1, H, W)`` uint8, one variation of each source at
            strength ``s``, in the order of ``sources``.
        strengths: the strengths, in the order of the table's rows.
        reference: the reference classifier (features and predicted labels).
        classes: class names (label ``i`` is ``classes[i]``).
        pool: real images to compare with; those whose ``index`` is a source's are left out
            (same id space as ``sources.index``).
        k: neighbours of the k-NN manifolds.
        seed: the draw of the comparison images.
    """
    num_classes, names = len(classes), [metric_suffix(c) for c in classes]
    src_rows, cmp_rows = _comparison_rows(sources, pool, seed)
    f_cmp = reference.features(pool.images[cmp_rows]).double()  # (n, D)
    px_src = pixel_vectors(sources.images)  # (N, H*W)

    def row(kind: str, strength: float, images: torch.Tensor) -> dict[str, float | str]:
        if images.shape != sources.images.shape or images.dtype != torch.uint8:
            raise ValueError(f"strength {strength}: expected {tuple(sources.images.shape)} uint8 variations, "
                             f"got {tuple(images.shape)} {images.dtype}")
        f = reference.features(images).double()
        fid = label_fidelity(reference.predict_from_features(f), sources.labels, num_classes)
        dist = (pixel_vectors(images) - px_src).norm(dim=1).double()  # (N,) RMS pixel distance to the source
        precision, recall = knn_precision_recall(f_cmp, f[src_rows], k)
        out: dict[str, float | str] = {"images": kind, "strength": strength, "fidelity": fid["overall"]}
        out.update({f"fidelity_{n}": v for n, v in zip(names, fid["per_class"])})
        out.update(precision=precision, recall=recall, distance_to_source=float(dist.mean()) if len(dist) else math.nan)
        for c, n in enumerate(names):
            mask = sources.labels == c
            out[f"distance_to_source_{n}"] = float(dist[mask].mean()) if mask.any() else math.nan
        return out

    rows = [row("real", math.nan, sources.images)]
    rows += [row("synthetic", float(s), variations(float(s))) for s in strengths]
    return Curve(pd.DataFrame(rows), tuple(classes), sources.class_counts(num_classes), len(cmp_rows))
