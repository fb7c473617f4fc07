"""From a config to the data a run uses: the dataset through its plugin, then the real sample.

:func:`load_splits` also attaches what the dataset plugin says about presenting its classes
(short display names for figures, the classes Grad-CAM shows by default), so figure code never
needs to know a dataset's naming habits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from synthmed.data.grouped import group_split, regroup
from synthmed.data.sampling import split_validation, stratified_sample
from synthmed.data.twins import GROUP_SIZE
from synthmed.errors import SynthmedError
from synthmed.plugins import registry

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits

__all__ = ["VALIDATION_MIN_GROUPS", "keras_validation_split", "load_measured", "load_splits", "present", "sample_real",
           "split_as_configured", "unsampled_rest"]

#: a class of a grouped sample gives groups to the validation carve only when it has at least this many
VALIDATION_MIN_GROUPS = 3


def load_splits(config: Config, pm: pluggy.PluginManager | None = None) -> Splits:
    """Load the configured dataset through its plugin (decoded once per process and image size), split
    as ``config.split`` says (the dataset's own split, or grouped: :mod:`synthmed.data.grouped`)."""
    dataset = registry("datasets", pm).get(config.dataset)()
    splits = dataset.load(config)
    measured = None
    if config.split == "grouped" and config.groups == "auto" and config.image_size != GROUP_SIZE:
        measured = dataset.load(config.replace(image_size=GROUP_SIZE))  # near-twins are linked at one size
    return present(regroup(splits, config, measured=measured), config, pm)


def load_measured(config: Config, pm: pluggy.PluginManager | None = None) -> Splits | None:
    """The run's splits decoded at :data:`GROUP_SIZE` px (the size near-twins are measured at), same rows in
    the same order; ``None`` when the run's size is that size."""
    if config.image_size == GROUP_SIZE:
        return None
    return load_splits(config.replace(image_size=GROUP_SIZE), pm)


def split_as_configured(splits: Splits, config: Config) -> Splits:
    """Splits handed in by a caller (a sweep loads once), regrouped if ``config`` asks for a grouped split."""
    if config.split == "grouped" and splits.meta.get("split") != "grouped":
        return regroup(splits, config)
    if config.split == "given" and splits.meta.get("split") == "grouped":
        raise SynthmedError("these splits were regrouped (split=grouped) but the config says split=given — load "
                            "the dataset again, or set split=grouped")
    return splits


def present(splits: Splits, config: Config, pm: pluggy.PluginManager | None = None) -> Splits:
    """Attach how ``config.dataset``'s plugin presents its classes (display names, Grad-CAM defaults)."""
    cls = registry("datasets", pm).get(config.dataset)
    splits.display_classes = tuple(cls.display_name(c) for c in splits.classes)
    splits.gradcam_classes = cls.default_gradcam_classes(splits.classes)
    return splits


def sample_real(splits: Splits, config: Config) -> tuple[ImageSet, ImageSet | None]:
    """The stratified real sample (fraction X) and, when ``val_frac`` > 0, a validation part carved from it.

    The first part is everything the run may learn from: the policy's training set, a learned
    generator's fit. The validation part only selects the epoch (early stopping). Under a grouped
    split the validation part is carved by group too (whole subjects), so that the epoch is not
    chosen by twins of the training images. A class with fewer than :data:`VALIDATION_MIN_GROUPS`
    groups in the sample gives none to validation: taking one of its two subjects away would halve
    what the run learns that class from (Moderate Demented has three groups in all).
    """
    rows = stratified_sample(splits.train.labels, config.real_frac, config.seed)
    real = splits.train.subset(rows)
    if not config.val_frac:
        return real, None
    if config.protocol == "thesis":  # a reading of the thesis's "validation loss", never a selection
        train_rows, val_rows = keras_validation_split(len(real), config.val_frac)
    elif real.grouped:
        cut = group_split(real.labels, real.groups, config.val_frac, config.seed, classes=splits.classes,
                          what="validation", min_groups=VALIDATION_MIN_GROUPS)
        train_rows, val_rows = cut.train_rows, cut.test_rows
    else:
        train_rows, val_rows = split_validation(real.labels, config.val_frac, config.seed)
    return real.subset(train_rows), real.subset(val_rows)


def keras_validation_split(n: int, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras's ``validation_split``: the last ``val_frac`` of the rows, as given, unshuffled and unstratified.

    ``split_at = int(n * (1 - val_frac))`` as in ``keras.Model.fit``. The sample's rows are in the
    dataset's order (the Alzheimer MRI parquet files are shuffled), so the part is a random,
    unstratified one that shares subjects with the rest of the sample.
    """
    split_at = int(n * (1 - val_frac))
    return torch.arange(split_at), torch.arange(split_at, n)


def unsampled_rest(splits: Splits, config: Config) -> ImageSet:
    """The training split's images the run's stratified sample left out (empty at ``real_frac`` 1).

    One of the readings ``protocol=thesis`` reports: a loss on images the run never trained on,
    but from the same subjects as its sample.
    """
    keep = torch.ones(len(splits.train), dtype=torch.bool)
    keep[stratified_sample(splits.train.labels, config.real_frac, config.seed)] = False
    return splits.train.subset(torch.nonzero(keep).flatten())
