"""What a dataset plugin returns: images decoded once into memory as uint8 tensors."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import torch

from synthmed.errors import SynthmedError

if TYPE_CHECKING:
    from synthmed.config import Config


@dataclass
class ImageSet:
    """Images and labels of one split (or of a sample of one).

    Attributes:
        images: ``(N, 1, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor of class indices.
        index: ``(N,)`` int64 tensor: row of each image in its source split (provenance).
        synthetic: ``(N,)`` bool tensor, True where the image came from a generator.
        groups: ``(N,)`` int64 tensor: the subject (or near-twin group) of each image under a grouped
            split (:mod:`synthmed.data.grouped`); ``-1`` where no group is known (the dataset's own
            split, synthetic images).
    """

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor | None = None
    synthetic: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be (N, 1, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.images.shape[0] != n:
            raise ValueError(f"{self.images.shape[0]} images but {n} labels")
        if self.index is None:
            self.index = torch.arange(n)
        if self.synthetic is None:
            self.synthetic = torch.zeros(n, dtype=torch.bool)
        if self.groups is None:
            self.groups = torch.full((n,), -1, dtype=torch.long)

    @property
    def grouped(self) -> bool:
        """True when every image carries a group (a grouped split's real images)."""
        return len(self.groups) > 0 and bool((self.groups >= 0).all())

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[rows], self.labels[rows], self.index[rows], self.synthetic[rows], self.groups[rows])

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    @staticmethod
    def concat(sets: list[ImageSet]) -> ImageSet:
        return ImageSet(
            torch.cat([s.images for s in sets]),
            torch.cat([s.labels for s in sets]),
            torch.cat([s.index for s in sets]),
            torch.cat([s.synthetic for s in sets]),
            torch.cat([s.groups for s in sets]),
        )


@dataclass
class Splits:
    """A loaded dataset: train and test splits plus what a run should record about them."""

    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)  # logged as params/tags (source, skipped files, ...)
    #: short class names for figures, in label order (set from the dataset plugin by ``load_splits``)
    display_classes: tuple[str, ...] = ()
    #: the classes Grad-CAM shows when none are named (set from the dataset plugin by ``load_splits``)
    gradcam_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.display_classes:
            self.display_classes = tuple(Dataset.display_name(c) for c in self.classes)
        if not self.gradcam_classes:
            self.gradcam_classes = tuple(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class Dataset(ABC):
    """A source of labelled images with a train and a test split.

    Subclasses set ``name`` and implement :meth:`load`. Register them with the
    ``register_datasets`` hook.
    """

    name: ClassVar[str]
    #: True when loading may reach the network (a hub); used in error messages and docs.
    may_download: ClassVar[bool] = False
    #: The class names, in label order, that this dataset must have (``None``: whatever the source
    #: says, as for an image folder). A source whose label set differs is refused by
    #: :func:`check_classes`, so a renamed or merged class never trains silently.
    expected_classes: ClassVar[tuple[str, ...] | None] = None

    #: short names for figures, by class name; a class not listed shows with ``_`` as spaces
    display_names: ClassVar[Mapping[str, str]] = {}
    #: the classes Grad-CAM shows by default when the dataset has them all (``None``: every class)
    gradcam_classes: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def display_name(cls, class_name: str) -> str:
        """How figures label ``class_name``."""
        return cls.display_names.get(class_name, class_name.replace("_", " "))

    @classmethod
    def default_gradcam_classes(cls, classes: Sequence[str]) -> tuple[str, ...]:
        """:attr:`gradcam_classes` when ``classes`` holds them all, else every class."""
        wanted = cls.gradcam_classes
        return tuple(wanted) if wanted and set(wanted) <= set(classes) else tuple(classes)

    @abstractmethod
    def load(self, config: Config) -> Splits:
        """Load both splits, decoded and resized to ``config.image_size``, as uint8 tensors."""


def check_classes(dataset: str, found: tuple[str, ...], expected: tuple[str, ...] | None, source: str) -> None:
    """Refuse a source whose class names (in label order) are not the ones ``dataset`` expects."""
    if expected is None or tuple(found) == tuple(expected):
        return
    raise SynthmedError(
        f"{source} lists the classes [{', '.join(found)}] but dataset {dataset!r} expects "
        f"[{', '.join(expected)}] in that label order — a different label set would change what every "
        "metric means; use the dataset revision it was written for (--revision) or load the folder "
        "with --dataset imagefolder"
    )


def fingerprint_tensors(*tensors: torch.Tensor) -> str:
    """A short sha256 over tensors' bytes: the dataset fingerprint logged as a run tag."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
