"""``oversample``: the control for the synthetic policy — same size, same classes, no new information.

The synthetic policy at real fraction X trains on more images per epoch than ``none`` (at X=0.3,
5,120 against 1,536) and with the full split's class balance. Any gain it shows could come from
those two things alone. ``oversample`` repeats the sampled real images instead of generating
variations of them: it follows *the very plan the synthetic policy would follow for the same
config* (:func:`synthmed.policies.synthetic.plan_for`: per-class counts, which sources, how many
times each), and puts a copy of the source where the synthetic policy would put a variation.
So the two policies differ only in what the extra images show, and a comparison of ``synthetic``
against ``oversample`` isolates the information the generator adds.

Options (``--policy-options``): ``base_policy`` is taken from ``config.base_policy`` exactly as
the synthetic policy does, so a classic policy on top stays matched too.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import torch

from synthmed.data.base import ImageSet
from synthmed.errors import SynthmedError
from synthmed.hookspecs import hookimpl
from synthmed.options import construct
from synthmed.plugins import registry
from synthmed.policies.base import AugmentationPolicy, PolicyContext
from synthmed.policies.synthetic import plan_for

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config


class OversamplePolicy(AugmentationPolicy):
    """The real sample plus repeated copies of it, sized and stratified like ``synthetic``."""

    name = "oversample"

    def __init__(self, config: Config, pm: pluggy.PluginManager | None = None):
        if config.base_policy in (self.name, "synthetic"):
            raise SynthmedError(f"base_policy={config.base_policy!r} is not allowed with policy=oversample — "
                                "choose a classic policy (or none)")
        self.config = config
        self._pm = pm
        self._base: AugmentationPolicy | None = None

    @classmethod
    def from_config(cls, config: Config, pm: pluggy.PluginManager | None = None) -> OversamplePolicy:
        """Its settings are the synthetic policy's Config fields; it takes no ``policy_options``."""
        return construct(cls, config.policy_params(), kind="policy", field="policy_options",
                         fixed={"config": config, "pm": pm})

    def training_set(self, real: ImageSet, ctx: PolicyContext) -> ImageSet:
        self._pm = ctx.pm if ctx.pm is not None else self._pm
        plan = plan_for(real, ctx.splits.train, ctx.splits.num_classes, ctx.config, ctx.validation)
        rows = torch.tensor([row for row, _ in plan.requests], dtype=torch.long)  # (S,) rows of `real`
        copies = ImageSet(real.images[rows], real.labels[rows], real.index[rows],
                          torch.zeros(len(rows), dtype=torch.bool), real.groups[rows])  # copies are real images
        ctx.log_params({"oversample_real_images": len(real), "oversample_copies": len(copies),
                        "oversample_per_class": json.dumps(plan.counts)})
        return ImageSet.concat([real, copies])

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        base = self._base_policy()
        return images if base is None else base.augment(images, rng)

    def augment_many(self, batches: list[torch.Tensor], rngs: list[torch.Generator]) -> list[torch.Tensor]:
        base = self._base_policy()
        return list(batches) if base is None else base.augment_many(batches, rngs)

    def _base_policy(self) -> AugmentationPolicy | None:
        if self._base is None and self.config.base_policy != "none":
            base = registry("policies", self._pm).get(self.config.base_policy)
            self._base = base.from_config(self.config.replace(policy_options=None), self._pm)
        return self._base


@hookimpl
def register_policies() -> list[type[AugmentationPolicy]]:
    return [OversamplePolicy]
