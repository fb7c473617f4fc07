"""Pre-filling the generation cache for a synthetic run (``synthmed generate``), as a library function.

:func:`prefill` computes exactly the variations a ``policy=synthetic`` run with the same config
would use — the same real sample, the same fitted generator (from
:func:`~synthmed.generators.build.fitted_generator`, as the run's) and the same plan (the code is
the policy's) — and makes the missing ones, so the run itself only reads the cache. With ``estimate=True`` it only counts
them and prices them: nothing is generated and nothing leaves the machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from synthmed.data.loading import load_splits, sample_real
from synthmed.generators.build import check_generator, fitted_generator
from synthmed.generators.cache import GenerationCache, fill, generation_salt, generations_mode, plan_keys
from synthmed.policies.synthetic import plan_for

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.generators.cache import FillStats

__all__ = ["Prefill", "prefill"]


@dataclass
class Prefill:
    """What :func:`prefill` found (and, unless estimating, did).

    Attributes:
        generator: the generator's name.
        sources: real source images in the run's sample.
        planned: synthetic images the run uses.
        cached: of those, already in the cache before this call.
        missing: of those, not in the cache before this call.
        price_per_image_usd: the generator's estimate, ``None`` when free.
        cache_root: the cache folder.
        sends_data_off_machine: whether generating sends the sources to a third party.
        generations: ``per-simulation`` (each seed makes its own images: a sweep of N simulations
            costs N times this) or ``shared``.
        stats: the fill's counts (``None`` when estimating or nothing was missing).
    """

    generator: str
    sources: int
    planned: int
    cached: int
    missing: int
    price_per_image_usd: float | None
    cache_root: str
    sends_data_off_machine: bool
    generations: str = "shared"
    stats: FillStats | None = field(default=None)

    @property
    def estimated_cost_usd(self) -> float:
        return self.missing * (self.price_per_image_usd or 0.0)


def prefill(config: Config, pm: pluggy.PluginManager | None = None, *, estimate: bool = False,
            confirm: Callable[[Prefill], bool] | None = None) -> Prefill:
    """Make (or, with ``estimate``, count and price) the images a synthetic run with ``config`` needs.

    Args:
        config: the run's config (dataset, real fraction, seed, generator and its options...).
        pm: plugin manager (default: the process-wide one).
        estimate: only count what is missing and what it would cost; generate nothing. Allowed
            without ``allow_external`` (nothing is sent).
        confirm: called with the estimate before generating anything that is missing; return
            False to stop there (the CLI asks the user when the cost is above ``--max-cost``).

    Returns:
        The counts, and the fill's statistics when it generated.
    """
    check_generator(config, pm, external_ok=estimate)  # a typo or an off-machine generator fails before loading
    cache = GenerationCache.from_config(config)  # so does a cache_dir that is a file
    splits = load_splits(config, pm)
    real, val = sample_real(splits, config)  # the run's sample after the validation carve, as in training
    # fitted on exactly that sample, as the run's; an estimate only computes which fit it would be
    generator = fitted_generator(config, pm, splits, real, estimate=estimate)
    plan = plan_for(real, splits.train, splits.num_classes, config, val)
    salt = generation_salt(config, generator)
    _, keys = plan_keys(generator, real.images, plan.requests, salt)
    missing = sum(not cache.has(generator.name, k) for k in keys)
    found = Prefill(generator.name, len(real), len(keys), len(keys) - missing, missing,
                    generator.cost_per_image_usd, str(cache.root), generator.sends_data_off_machine,
                    generations_mode(config, generator))
    if estimate or not missing or (confirm is not None and not confirm(found)):
        return found
    found.stats = fill(cache, generator, real.images, real.labels, plan.requests, quiet=config.quiet, load=False,
                       salt=salt).stats
    return found
