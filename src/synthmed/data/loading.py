"""From a config to the data a run uses: the dataset through its plugin, then the real sample.

:func:`load_splits` also attaches what the dataset plugin says about presenting its classes
(short display names for figures, the classes Grad-CAM shows by default), so figure code never
needs to know a dataset's naming habits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthmed.data.sampling import split_validation, stratified_sample
from synthmed.plugins import registry

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits

__all__ = ["load_splits", "present", "sample_real"]


def load_splits(config: Config, pm: pluggy.PluginManager | None = None) -> Splits:
    """Load the configured dataset through its plugin (decoded once per process and image size)."""
    return present(registry("datasets", pm).get(config.dataset)().load(config), config, pm)


def present(splits: Splits, config: Config, pm: pluggy.PluginManager | None = None) -> Splits:
    """Attach how ``config.dataset``'s plugin presents its classes (display names, Grad-CAM defaults)."""
    cls = registry("datasets", pm).get(config.dataset)
    splits.display_classes = tuple(cls.display_name(c) for c in splits.classes)
    splits.gradcam_classes = cls.default_gradcam_classes(splits.classes)
    return splits


def sample_real(splits: Splits, config: Config) -> tuple[ImageSet, ImageSet | None]:
    """The stratified real sample (fraction X) and, when ``val_frac`` > 0, a validation part carved from it.

    The first part is everything the run may learn from: the policy's training set, a learned
    generator's fit. The validation part only selects the epoch (early stopping).
    """
    rows = stratified_sample(splits.train.labels, config.real_frac, config.seed)
    real = splits.train.subset(rows)
    if not config.val_frac:
        return real, None
    train_rows, val_rows = split_validation(real.labels, config.val_frac, config.seed)
    return real.subset(train_rows), real.subset(val_rows)
