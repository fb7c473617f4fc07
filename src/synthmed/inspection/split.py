"""The split audit: how many test images have a near-twin in training, and what a lookup scores.

``synthmed audit-split`` (:func:`audit_split`, logged by :func:`run_audit`) measures, for the
split a run would use (``split=given`` or ``grouped``):

- every test image's nearest training image in pixels (RMS at ≤ 64 px, the space near-twins are
  linked in: :mod:`synthmed.data.twins`) and, optionally, in the reference classifier's features;
- the share of test images with a near-twin in training (nearest distance below the threshold),
  overall and per class, and the histogram of the distances with the threshold marked;
- the near-twin groups of all images pooled: how many per class, how many mix labels, and how many
  span both sides of the split (the leak; 0 on a grouped split by construction);
- the 1-nearest-neighbour lookup's test accuracy and cross-entropy (:mod:`synthmed.lookup`) at each
  real fraction, over seeded samples drawn exactly as runs draw them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from synthmed.data.grouped import near_twin_groups, pooled
from synthmed.data.loading import sample_real
from synthmed.data.twins import GROUP_SIZE, as_vectors, nearest
from synthmed.errors import SynthmedError
from synthmed.lookup import lookup_baseline

if TYPE_CHECKING:
    from synthmed.config import Config
    from synthmed.data.base import Splits

__all__ = ["SplitAudit", "audit_split"]

DEFAULT_FRACTIONS = (0.05, 0.1, 0.3, 1.0)


@dataclass
class SplitAudit:
    """What :func:`audit_split` found (``metrics()`` and ``table()`` as logged)."""

    split: str
    classes: tuple[str, ...]
    threshold: float
    threshold_source: str
    size: int  # px of the pixel distances
    test_nearest: torch.Tensor  # (Nt,) RMS distance of each test image to its nearest training image
    test_nearest_row: torch.Tensor  # (Nt,) that training image's row
    neighbour_distances: torch.Tensor  # (N, k) nearest distances of every pooled image (the histogram's sample)
    twin_share: float
    twin_share_per_class: dict[str, float]
    groups: int
    groups_per_class: dict[str, int]
    groups_spanning: int  # groups with images on both sides of the split
    mixed_groups: int
    lookup: list[dict[str, Any]] = field(default_factory=list)  # one row per (fraction, simulation)
    feature_nn_accuracy: float | None = None
    feature_pixel_agreement: float | None = None  # share of test images whose two nearest neighbours coincide

    def lookup_by_fraction(self) -> list[dict[str, float]]:
        """Median lookup accuracy and cross-entropy per fraction (over the simulations)."""
        out = []
        for frac in sorted({r["real_frac"] for r in self.lookup}):
            rows = [r for r in self.lookup if r["real_frac"] == frac]
            out.append({"real_frac": frac, "simulations": len(rows),
                        **{k: statistics.median(r[k] for r in rows)
                           for k in ("accuracy", "balanced_accuracy", "cross_entropy")}})
        return out

    def metrics(self) -> dict[str, float]:
        m = {"audit_twin_share": self.twin_share, "audit_threshold": self.threshold, "audit_groups": self.groups,
             "audit_groups_spanning": self.groups_spanning,
             "audit_groups_spanning_share": self.groups_spanning / max(self.groups, 1),
             "audit_mixed_groups": self.mixed_groups,
             "audit_test_nearest_median": float(self.test_nearest.median())}
        for name, share in self.twin_share_per_class.items():
            m[f"audit_twin_share.{name}"] = share
        for name, n in self.groups_per_class.items():
            m[f"audit_groups.{name}"] = n
        for row in self.lookup_by_fraction():
            tag = f"{row['real_frac']:g}"
            m[f"audit_lookup_accuracy.{tag}"] = row["accuracy"]
            m[f"audit_lookup_cross_entropy.{tag}"] = row["cross_entropy"]
        if self.feature_nn_accuracy is not None:
            m["audit_feature_nn_accuracy"] = self.feature_nn_accuracy
            m["audit_feature_pixel_agreement"] = float(self.feature_pixel_agreement or 0.0)
        return m

    def markdown(self) -> str:
        """The audit as a short Markdown report (what ``--output`` writes and the run logs)."""
        lines = [f"# Split audit ({self.split} split)", "",
                 f"Pixel distances: RMS over [0, 1] pixels at {self.size} px. Twin threshold {self.threshold:.4f} "
                 f"({self.threshold_source}).", "",
                 f"- test images with a near-twin in training: **{self.twin_share:.1%}** "
                 f"(median nearest distance {float(self.test_nearest.median()):.4f})",
                 f"- near-twin groups of all images pooled: {self.groups}; spanning train and test: "
                 f"{self.groups_spanning} ({self.groups_spanning / max(self.groups, 1):.1%}); mixing labels: "
                 f"{self.mixed_groups}", "",
                 "| class | groups | test images with a twin in training |", "|---|---:|---:|"]
        lines += [f"| {c} | {self.groups_per_class.get(c, 0)} | {self.twin_share_per_class.get(c, float('nan')):.1%} |"
                  for c in self.classes]
        lines += ["", "1-nearest-neighbour pixel lookup (no learning), median over simulations:", "",
                  "| real fraction | simulations | accuracy | balanced accuracy | cross-entropy |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['real_frac']:g} | {r['simulations']} | {r['accuracy']:.4f} | {r['balanced_accuracy']:.4f} | "
                  f"{r['cross_entropy']:.4f} |" for r in self.lookup_by_fraction()]
        if self.feature_nn_accuracy is not None:
            lines += ["", f"Reference classifier features: 1-NN test accuracy {self.feature_nn_accuracy:.4f}; the "
                          f"nearest training image in features is the nearest in pixels for "
                          f"{self.feature_pixel_agreement:.1%} of test images."]
        return "\n".join(lines) + "\n"


def audit_split(splits: Splits, config: Config, *, fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
                simulations: int = 3, reference: Any = None, measured: Splits | None = None,
                device: str = "cpu") -> SplitAudit:
    """Measure the near-twin leak of ``splits`` and the lookup baseline at each of ``fractions``.

    ``reference``: a fitted reference classifier whose features are searched too (``None``: pixels only).
    ``measured``: the same splits decoded at :data:`GROUP_SIZE` px (:func:`synthmed.data.loading.load_measured`),
    where twins are measured and linked; ``None``: ``splits``' own images, area-averaged down.
    The lookup (at the run's size) fits its temperature on each sample's validation carve
    (``config.val_frac``, or 0.1 when it is 0), never on the test split.
    """
    pixels = measured if measured is not None else splits
    both = pooled(pixels)
    if not (torch.equal(both.labels, pooled(splits).labels) and len(pixels.train) == len(splits.train)):
        raise SynthmedError("the splits measured at 64 px are not the run's splits (rows or labels differ)")
    twins = near_twin_groups(both.images, both.labels, config.twin_threshold, keep_neighbours=True)
    n_train = len(pixels.train)
    test_side = torch.zeros(len(both), dtype=torch.bool)
    test_side[n_train:] = True
    groups = twins.groups
    spanning = mixed = 0
    per_class: dict[str, int] = {c: 0 for c in splits.classes}
    for g in torch.unique(groups).tolist():
        members = groups == g
        sides = test_side[members]
        spanning += bool(sides.any() and (~sides).any())
        labels = torch.unique(both.labels[members])
        mixed += len(labels) > 1
        per_class[splits.classes[int(torch.mode(both.labels[members]).values)]] += 1
    vectors = as_vectors(both.images, GROUP_SIZE)
    distances, rows = nearest(vectors[n_train:], vectors[:n_train], 1)
    test_nearest, test_row = distances[:, 0], rows[:, 0]
    neighbours = twins.neighbour_distances
    has_twin = test_nearest < twins.threshold
    share_per_class = {c: float(has_twin[splits.test.labels == i].float().mean())
                       for i, c in enumerate(splits.classes) if (splits.test.labels == i).any()}
    audit = SplitAudit(
        split=config.split, classes=splits.classes, threshold=twins.threshold,
        threshold_source="chosen from the distance gap" if twins.chosen else "given", size=twins.size,
        test_nearest=test_nearest, test_nearest_row=test_row, neighbour_distances=neighbours,
        twin_share=float(has_twin.float().mean()), twin_share_per_class=share_per_class, groups=int(groups.max()) + 1,
        groups_per_class=per_class, groups_spanning=spanning, mixed_groups=mixed)
    lookup_config = config.replace(val_frac=config.val_frac or 0.1)
    for frac in fractions:
        for sim in range(simulations):
            real, val = sample_real(splits, lookup_config.replace(real_frac=frac, seed=sim))
            found = lookup_baseline(real, splits.test, splits.num_classes, validation=val, device=device, seed=sim)
            audit.lookup.append({"real_frac": frac, "simulation": sim, "accuracy": found.accuracy,
                                 "balanced_accuracy": found.balanced_accuracy, "cross_entropy": found.cross_entropy,
                                 "temperature": found.temperature})
    if reference is not None:
        train_f, test_f = reference.features(splits.train.images), reference.features(splits.test.images)
        _, f_rows = nearest(test_f.float(), train_f.float(), 1)
        f_rows = f_rows[:, 0]
        audit.feature_nn_accuracy = float((splits.train.labels[f_rows] == splits.test.labels).float().mean())
        audit.feature_pixel_agreement = float((f_rows == test_row).float().mean())
    return audit
