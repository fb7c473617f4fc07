"""``synthetic``: the thesis' policy (Chapter 6.3) — real sample plus generated variations of it.

``training_set`` makes (or reads from the cache) the variations the run needs with the run's one
fitted generator (``PolicyContext.generator``), logs the cache statistics, a grid of sources
beside their variations and a provenance CSV, and returns the mixed set; ``epoch_set``
implements ``mix=replace``; ``augment`` applies ``base_policy``. See docs/synthetic.md.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.figure import Figure  # no pyplot: no global backend state

from synthmed.data.base import ImageSet
from synthmed.errors import SynthmedError
from synthmed.generators.base import source_hash
from synthmed.generators.build import check_generator, fitted_generator
from synthmed.generators.cache import GenerationCache, fill, generation_salt, generations_mode
from synthmed.hookspecs import hookimpl
from synthmed.options import construct
from synthmed.plugins import registry
from synthmed.policies._mixing import SyntheticPlan, plan_synthetic, synthetic_counts, synthetic_total
from synthmed.policies.base import AugmentationPolicy, PolicyContext

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config


def plan_for(real: ImageSet, full_train: ImageSet, num_classes: int, config: Config,
             held_out: ImageSet | None = None) -> SyntheticPlan:
    """The run's synthetic plan: counts per class from the full split, sources from ``real`` only.

    ``held_out`` is the run's validation carve: the set is filled to the full split's size *less
    the carve*, class by class, so the carve's images are not replaced by synthetic ones (the
    mixed set is as large as what ``none`` at real fraction 1.0 trains on with the same carve).
    """
    full_counts = full_train.class_counts(num_classes)
    if held_out is not None and len(held_out):
        full_counts = [max(0, n - v) for n, v in zip(full_counts, held_out.class_counts(num_classes))]
    total = synthetic_total(sum(full_counts), len(real), config.synth_frac)
    counts = synthetic_counts(full_counts, real.class_counts(num_classes), total, balance=config.balance)
    return plan_synthetic(real.labels, counts, variations_per_image=config.variations_per_image, seed=config.seed)


class SyntheticPolicy(AugmentationPolicy):
    """Real sample + synthetic variations of it (``mix=append``), or swapped in per epoch (``replace``)."""

    name = "synthetic"
    uses_generator = True

    def __init__(self, config: Config, pm: pluggy.PluginManager | None = None):
        if config.base_policy == self.name:
            raise SynthmedError("base_policy='synthetic' is not allowed — choose a classic policy (or none)")
        self.config = config
        self._pm = pm
        self._base: AugmentationPolicy | None = None

    @classmethod
    def from_config(cls, config: Config, pm: pluggy.PluginManager | None = None) -> SyntheticPolicy:
        """Check what can be checked before data loading: base policy, generator name, opt-in and options.

        The generator itself is not built here: the run builds and fits its one instance after
        sampling and hands it to :meth:`training_set`. Its settings are Config fields
        (``synth_frac``, ``mix``, ``balance``...), so it takes no ``policy_options``.
        """
        check_generator(config, pm)  # an unknown name, an off-machine one without opt-in, unknown options
        GenerationCache.from_config(config)  # a cache_dir that is a file (or below one)
        return construct(cls, config.policy_params(), kind="policy", field="policy_options",
                         fixed={"config": config, "pm": pm})

    def training_set(self, real: ImageSet, ctx: PolicyContext) -> ImageSet:
        """``real`` plus variations of it from the run's generator (``ctx.generator``, made here when absent)."""
        config = ctx.config
        self._pm = ctx.pm if ctx.pm is not None else self._pm
        self._resolve_base()
        generator = ctx.generator
        if generator is None:  # called outside a run (which hands over its one): fitted on `real` only
            generator = fitted_generator(config, self._pm, ctx.splits, real, log_metrics=ctx.log_metrics,
                                         log_params=ctx.log_params)
        plan = plan_for(real, ctx.splits.train, ctx.splits.num_classes, config, ctx.validation)
        result = fill(GenerationCache.from_config(config), generator, real.images, real.labels, plan.requests,
                      quiet=config.quiet, salt=generation_salt(config, generator))
        kept = [i for i, img in enumerate(result.images) if img is not None]  # refusals leave gaps
        rows = [plan.requests[i][0] for i in kept]
        images = torch.stack([result.images[i] for i in kept]) if kept else real.images[:0]
        synth = ImageSet(images, real.labels[rows], real.index[rows], torch.ones(len(kept), dtype=torch.bool),
                         real.groups[rows])  # a variation belongs to its source's subject
        refuse_test_images(synth, ctx.splits.test, generator.name)
        mixed = ImageSet.concat([real, synth])

        ctx.log_params({
            "synthetic_real_images": len(real),
            "synthetic_images": len(synth),
            "synthetic_generator_provider": registry("generators", self._pm).provider(generator.name),
            "synthetic_generator_params": json.dumps(generator.output_params(), sort_keys=True, default=str),
            "synthetic_sends_data_off_machine": generator.sends_data_off_machine,
            "synthetic_generations": generations_mode(config, generator),
            "synthetic_per_class": json.dumps(plan.counts),
            "synthetic_pool_per_source": json.dumps(plan.pool),
        })
        ctx.log_metrics({**result.stats.metrics(), "synthetic_images": float(len(synth))})
        _log_report(ctx, real, mixed, len(real), [plan.requests[i] for i in kept], [result.keys[i] for i in kept],
                    [result.source_hashes[i] for i in kept])
        return mixed

    def epoch_set(self, train: ImageSet, epoch: int, rng: torch.Generator) -> ImageSet:
        """``append``: the mixed set. ``replace``: the real images, each swapped with probability
        ``replace_p`` for one of its variations drawn uniformly (so each epoch has ``R`` images)."""
        if self.config.mix == "append":
            return train
        return replace_epoch(train, self.config.replace_p, rng)

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self._base is None and self.config.base_policy != "none":
            self._resolve_base()
        return images if self._base is None else self._base.augment(images, rng)

    def augment_many(self, batches: list[torch.Tensor], rngs: list[torch.Generator]) -> list[torch.Tensor]:
        if self._base is None and self.config.base_policy != "none":
            self._resolve_base()
        return list(batches) if self._base is None else self._base.augment_many(batches, rngs)

    def _resolve_base(self) -> None:
        if self.config.base_policy != "none":
            base = registry("policies", self._pm).get(self.config.base_policy)
            self._base = base.from_config(self.config.replace(policy_options=None), self._pm)


def refuse_test_images(synth: ImageSet, test: ImageSet, generator: str) -> None:
    """A "synthetic" image identical to a test image (a ``folder`` pool exported from the test
    split, say) would leak the test set into training: refuse it."""
    if len(synth) == 0 or synth.images.shape[1:] != test.images.shape[1:]:
        return
    test_hashes = {source_hash(image) for image in test.images}
    leaked = [i for i, image in enumerate(synth.images) if source_hash(image) in test_hashes]
    if leaked:
        raise SynthmedError(
            f"generator {generator!r} returned {len(leaked)} image(s) identical to test images — training on "
            "them would leak the test set; check where its images come from (e.g. a folder path)"
        )


def replace_epoch(train: ImageSet, p: float, rng: torch.Generator) -> ImageSet:
    """Real rows of ``train``, each replaced with probability ``p`` by one of its synthetic rows."""
    real_rows = (~train.synthetic).nonzero().flatten()  # (R,)
    pool_rows = train.synthetic.nonzero().flatten()  # (P,)
    swap_u = torch.rand(len(real_rows), generator=rng)
    pick_u = torch.rand(len(real_rows), generator=rng)
    if len(pool_rows) == 0:
        return train.subset(real_rows)
    real_idx = train.index[real_rows]
    order = torch.argsort(real_idx)
    owner = order[torch.searchsorted(real_idx[order], train.index[pool_rows])]  # (P,) position in real_rows
    counts = torch.bincount(owner, minlength=len(real_rows))  # variations per real image
    pool_sorted = pool_rows[torch.argsort(owner, stable=True)]
    offsets = torch.cumsum(counts, 0) - counts
    pick = offsets + torch.minimum((pick_u * counts).long(), (counts - 1).clamp(min=0))
    swap = (swap_u < p) & (counts > 0)
    chosen = torch.where(swap, pool_sorted[pick.clamp(max=len(pool_sorted) - 1)], real_rows)
    return train.subset(chosen)


def _log_report(ctx: PolicyContext, real: ImageSet, mixed: ImageSet, offset: int,
                requests: list[tuple[int, int]], keys: list[str], hashes: list[str]) -> None:
    """Log ``synthetic/provenance.csv`` and ``synthetic/grid.png``."""
    classes = ctx.splits.classes
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "provenance.csv"
        with csv_path.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["train_row", "source_index", "source_label", "source_class", "source_sha256",
                          "variation", "cache_key"])
            for j, ((row, variation), key, digest) in enumerate(zip(requests, keys, hashes)):
                label = int(real.labels[row])
                out.writerow([offset + j, int(real.index[row]), label, classes[label], digest, variation, key])
        ctx.log_artifact(str(csv_path), "synthetic")
        if requests:
            grid_path = Path(tmp) / "grid.png"
            _save_grid(grid_path, real, mixed, offset, requests, classes)
            ctx.log_artifact(str(grid_path), "synthetic")


def _save_grid(path: Any, real: ImageSet, mixed: ImageSet, offset: int, requests: list[tuple[int, int]],
               classes: tuple[str, ...], per_class: int = 2, max_variations: int = 4) -> None:
    """Rows: up to ``per_class`` sources of each class; columns: the source, then its variations."""
    by_source: dict[int, list[int]] = {}
    for j, (row, _) in enumerate(requests):
        by_source.setdefault(row, []).append(offset + j)
    chosen: list[int] = []
    for c in range(len(classes)):
        chosen += [row for row in by_source if int(real.labels[row]) == c][:per_class]
    cols = 1 + min(max_variations, max(len(by_source[r]) for r in chosen))
    fig = Figure(figsize=(1.6 * cols, 1.6 * len(chosen)))
    axes = fig.subplots(len(chosen), cols, squeeze=False)
    for i, row in enumerate(chosen):
        tiles = [real.images[row]] + [mixed.images[t] for t in by_source[row][: cols - 1]]
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(tiles):
                ax.imshow(tiles[j][0].numpy(), cmap="gray", vmin=0, vmax=255)
        axes[i][0].set_title(f"{classes[int(real.labels[row])]} (real)", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@hookimpl
def register_policies() -> list[type[AugmentationPolicy]]:
    return [SyntheticPolicy]
