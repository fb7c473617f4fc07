"""What memorization alone scores: the 1-nearest-neighbour pixel lookup beside every run.

No learning: a test image gets the label of the nearest image (RMS distance in raw pixels) among
the real images a run learns from. Where the test split holds near-twins of training images (the
Alzheimer MRI dataset's own split: slices of one brain on both sides), this lookup is nearly
perfect, and a classifier that scores no better than it has shown nothing beyond lookup.

Probabilities, so that the lookup has a cross-entropy comparable with a model's: a softmax over
negative distances to each class's nearest reference image, ``p(c) ∝ exp(-d_c / T)``, with the
temperature ``T`` fitted on held-out images (the run's validation carve; without one, each
reference image against the others, leaving out its own group under a grouped split) by
minimizing their cross-entropy. The test split is never used to fit anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from synthmed.data.base import ImageSet
from synthmed.data.twins import as_vectors, rms_distances
from synthmed.errors import SynthmedError

__all__ = ["LookupResult", "class_distances", "fit_temperature", "lookup_baseline"]

_MAX_FIT_QUERIES = 2000  # held-out images that fit the temperature (a seeded subset of larger sets)
_BLOCK = 512


@dataclass(frozen=True)
class LookupResult:
    """The lookup's test scores (``metrics()`` names them as a run logs them)."""

    accuracy: float
    balanced_accuracy: float
    cross_entropy: float
    temperature: float
    reference_images: int
    fitted_on: str  # "validation" or "leave-one-out"

    def metrics(self) -> dict[str, float]:
        return {"lookup_test_accuracy": self.accuracy, "lookup_test_balanced_accuracy": self.balanced_accuracy,
                "lookup_test_cross_entropy": self.cross_entropy, "lookup_temperature": self.temperature}


def class_distances(query: torch.Tensor, reference: torch.Tensor, reference_labels: torch.Tensor, num_classes: int,
                    *, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``(Nq, K)``: each query's RMS distance to the nearest reference image of each class (``inf`` if none).

    ``exclude``: ``(Nq, Nr)`` bool mask of pairs that must not count (the query itself, its group).
    """
    out = torch.full((len(query), num_classes), math.inf, device=query.device)
    for start in range(0, len(query), _BLOCK):
        d = rms_distances(query[start:start + _BLOCK], reference)
        if exclude is not None:
            d = d.masked_fill(exclude[start:start + _BLOCK], math.inf)
        for c in range(num_classes):
            cols = reference_labels == c
            if cols.any():
                out[start:start + len(d), c] = d[:, cols].min(dim=1).values
    return out


def _log_probs(distances: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(-distances.double() / temperature, dim=1)


def _cross_entropy(distances: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(-_log_probs(distances, temperature).gather(1, labels[:, None]).mean())


def fit_temperature(distances: torch.Tensor, labels: torch.Tensor) -> float:
    """The ``T`` that minimizes held-out cross-entropy of ``softmax(-d / T)`` (bounded search on ``log T``)."""
    from scipy.optimize import minimize_scalar

    finite = torch.isfinite(distances.gather(1, labels[:, None])).flatten()
    distances, labels = distances[finite], labels[finite]
    if not len(labels):
        raise SynthmedError("no held-out image has a reference image of its own class: cannot fit the lookup's "
                            "temperature")
    fit = minimize_scalar(lambda log_t: _cross_entropy(distances, labels, math.exp(log_t)),
                          bounds=(math.log(1e-5), math.log(10.0)), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(fit.x))


def lookup_baseline(reference: ImageSet, test: ImageSet, num_classes: int, *, validation: ImageSet | None = None,
                    size: int | None = None, device: str | torch.device = "cpu", seed: int = 0) -> LookupResult:
    """The 1-NN lookup's test accuracy and cross-entropy, learning from ``reference`` only.

    Args:
        reference: the real images a run learns from (its sample, without the validation carve).
        test: the images to label.
        num_classes: number of classes.
        validation: held-out images that fit the temperature; ``None``: leave-one-out over
            ``reference`` (leave-one-group-out when its images carry groups).
        size: compare at this many px (area-averaged down); ``None``: the images' own size.
        device: where the distances are computed.
        seed: picks the held-out subset when more than 2,000 images could fit the temperature.
    """
    if not len(reference) or not len(test):
        raise SynthmedError("the lookup baseline needs reference and test images")
    ref = as_vectors(reference.images, size).to(device)
    ref_labels = reference.labels.to(device)
    rng = torch.Generator().manual_seed(seed)
    if validation is not None and len(validation):
        rows = torch.randperm(len(validation), generator=rng)[:_MAX_FIT_QUERIES]
        held = class_distances(as_vectors(validation.images[rows], size).to(device), ref, ref_labels, num_classes)
        held_labels, fitted_on = validation.labels[rows], "validation"
    else:
        rows = torch.randperm(len(reference), generator=rng)[:_MAX_FIT_QUERIES]
        if reference.grouped:
            exclude = reference.groups[rows][:, None] == reference.groups[None, :]
        else:
            exclude = rows[:, None] == torch.arange(len(reference))[None, :]
        held = class_distances(ref[rows.to(device)], ref, ref_labels, num_classes, exclude=exclude.to(device))
        held_labels, fitted_on = reference.labels[rows], "leave-one-out"
    temperature = fit_temperature(held.cpu(), held_labels)
    dist = class_distances(as_vectors(test.images, size).to(device), ref, ref_labels, num_classes).cpu()
    predicted = dist.argmin(dim=1)
    correct = predicted == test.labels
    recalls = [float(correct[test.labels == c].float().mean()) for c in range(num_classes) if (test.labels == c).any()]
    return LookupResult(
        accuracy=float(correct.float().mean()),
        balanced_accuracy=sum(recalls) / len(recalls),
        cross_entropy=_cross_entropy(dist, test.labels, temperature),
        temperature=temperature,
        reference_images=len(reference),
        fitted_on=fitted_on,
    )
