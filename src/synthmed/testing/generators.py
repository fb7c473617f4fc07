"""``check_generator``: the generator contract, on tiny scans on the CPU."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from synthmed.config import SECRET_KEY
from synthmed.generators.base import Generator
from synthmed.generators.fitting import FitCache, ensure_fitted
from synthmed.testing._contract import (
    CLASSES,
    Broken,
    ContractReport,
    NotChecked,
    call_as,
    expect,
    plugin_name,
    run_rules,
    scans,
    select,
)

__all__ = ["GENERATOR_RULES", "check_generator"]

SHAPES = ((3, 32, 32), (2, 24, 40))  # (B, H, W): square and not
FIT_IMAGES = 8  # a learning generator is fitted on this many 32 px scans first


@dataclass
class _Subject:
    generator: Generator
    secrets: tuple[str, ...]  # values of the options whose names say they are credentials
    allow_external: bool


def _generates_here(s: _Subject) -> None:
    if s.generator.sends_data_off_machine and not s.allow_external:
        raise NotChecked("it sends data off this machine — point it at a local stand-in of its service and "
                         "pass allow_external=True to check it")


def _deterministic(s: _Subject) -> None:
    _generates_here(s)
    if not s.generator.deterministic:
        raise NotChecked("it is not declared deterministic")


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"{tuple(x.shape)} {x.dtype}"
    return type(x).__name__


# --- the rules, in the order they are checked ------------------------------------------------------
def fit(s: _Subject) -> None:
    """A learning generator fits on eight tiny scans (``ensure_fitted``), and its fit keys the cache."""
    _generates_here(s)
    if not s.generator.learns:
        raise NotChecked("it does not learn")
    key = s.generator.fit_key
    expect(key is not None, "ensure_fitted() left fit_key unset")
    expect(s.generator.cache_params().get("fit") == key, "cache_params() does not hold the fit key")


def declarations(s: _Subject) -> None:
    """Declares a name, its flags as booleans, a cost per image (``None`` or a finite float ≥ 0) and a batch size ≥ 1."""
    gen = s.generator
    expect(isinstance(gen.name, str) and bool(gen.name), f"name must be a non-empty string, got {gen.name!r}")
    for flag in ("sends_data_off_machine", "deterministic", "learns", "ignores_seed"):
        value = getattr(gen, flag)
        expect(isinstance(value, bool), f"{flag} must be True or False, got {value!r}")
    cost = gen.cost_per_image_usd
    expect(cost is None or (isinstance(cost, float) and math.isfinite(cost) and cost >= 0),
           f"cost_per_image_usd must be None (free) or a finite float >= 0, got {cost!r}")
    size = gen.batch_size
    expect(isinstance(size, int) and not isinstance(size, bool) and size >= 1,
           f"batch_size must be an int >= 1, got {size!r}")


def output_params(s: _Subject) -> None:
    """``output_params()`` is a JSON-serialisable dict with no secret in it, and ``repr()`` shows none either."""
    params = s.generator.output_params()
    expect(isinstance(params, dict), f"output_params() must return a dict, got {type(params).__name__}")
    try:
        text = json.dumps(params, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise Broken(f"output_params() keys the cache and is logged, so it must be JSON-serialisable: {exc}") from None
    named = [k for k in params if SECRET_KEY.search(str(k))]
    expect(not named, f"output_params() is logged but has key(s) naming a secret: {', '.join(map(repr, named))}")
    for secret in s.secrets:
        expect(secret not in text, "output_params() holds the value of a secret option (it is logged)")
        expect(secret not in repr(s.generator), "repr() shows the value of a secret option")


def shape_and_dtype(s: _Subject) -> None:
    """``generate()`` returns uint8 ``(B, 1, H, W)``, the shape of its sources, square or not."""
    _generates_here(s)
    for b, h, w in SHAPES:
        images, labels = scans(b, h, w)  # (B, 1, H, W) uint8
        out = s.generator.generate(images, labels, variation=0, seed=123)
        expect(isinstance(out, torch.Tensor), f"generate() returned {type(out).__name__}, not a tensor")
        expect(tuple(out.shape) == tuple(images.shape),
               f"generate() on {tuple(images.shape)} sources returned shape {tuple(out.shape)}")
        expect(out.dtype == torch.uint8, f"generate() on uint8 sources returned dtype {out.dtype}, not torch.uint8")


def iter_generate_every_item_once(s: _Subject) -> None:
    """``iter_generate()`` yields each item's index exactly once, with a ``(1, H, W)`` uint8 image or ``None``."""
    _generates_here(s)
    images, labels = scans(3)
    images, labels = torch.cat([images, images[:1]]), torch.cat([labels, labels[:1]])  # a source twice
    got = list(s.generator.iter_generate(images, labels, variations=[0, 0, 0, 1], seeds=[1, 2, 3, 4]))
    indices = sorted(int(i) for i, _ in got)
    expect(indices == [0, 1, 2, 3], f"asked for items 0-3, iter_generate() yielded indices {indices}")
    for i, image in got:
        expect(image is None or (isinstance(image, torch.Tensor) and image.dtype == torch.uint8
                                 and tuple(image.shape) == (1, 32, 32)),
               f"item {i} is {_describe(image)}, not a (1, 32, 32) torch.uint8 image or None")


def reproducible(s: _Subject) -> None:
    """Declared deterministic: the same call twice gives the same images."""
    _deterministic(s)
    images, labels = scans(4)
    first = s.generator.generate(images, labels, variation=1, seed=7)
    again = s.generator.generate(images, labels, variation=1, seed=7)
    expect(torch.equal(first, again), "declared deterministic=True but two identical generate() calls differ")


def batch_independent(s: _Subject) -> None:
    """Declared deterministic: an item's image depends only on (image, variation, seed), not on its batch-mates."""
    _deterministic(s)
    gen = s.generator
    images, labels = scans(4)
    batch = gen.generate(images, labels, variation=1, seed=7)
    alone = []
    for i in range(4):
        alone.append(gen.generate(images[i : i + 1], labels[i : i + 1], variation=1, seed=7)[0])
        expect(torch.equal(alone[i], batch[i]),
               f"declared deterministic=True but item {i} differs when generated alone vs in a batch of 4")
    variations, seeds = [1, 0, 1, 0], [7, 8, 7, 8]
    items = dict(gen.iter_generate(images, labels, variations=variations, seeds=seeds))
    for i in range(4):
        one = gen.generate(images[i : i + 1], labels[i : i + 1], variation=variations[i], seed=seeds[i])[0]
        expect(isinstance(items.get(i), torch.Tensor) and torch.equal(items[i], one),
               f"declared deterministic=True but iter_generate() item {i} (variation {variations[i]}, seed "
               f"{seeds[i]}) differs from generate() of that item alone")


#: The generator contract: rule name → check, in order.
GENERATOR_RULES = {
    "fit": fit,
    "declarations": declarations,
    "output-params": output_params,
    "shape-and-dtype": shape_and_dtype,
    "iter-generate-every-item-once": iter_generate_every_item_once,
    "reproducible": reproducible,
    "batch-independent": batch_independent,
}


def check_generator(cls: type[Generator], /, *, allow_external: bool = False, rules: Iterable[str] | None = None,
                    **options: Any) -> ContractReport:
    """Check a generator class against synthmed's generator contract (:data:`GENERATOR_RULES`).

    Builds ``cls(**options)``, binds it to :data:`~synthmed.testing.CLASSES` and — when it learns —
    fits it on eight 32 px scans with :func:`~synthmed.generators.fitting.ensure_fitted` (in a temporary
    fit cache), then checks each rule on tiny scans on the CPU, in seconds.

    A generator that sends data off this machine (``sends_data_off_machine``) is only checked for
    ``declarations`` and ``output-params``: the report lists the other rules as not checked, unless
    ``allow_external=True`` says its options point it at a local stand-in of its service.

    Args:
        cls: the :class:`~synthmed.generators.Generator` subclass.
        allow_external: generate with an off-machine generator too.
        rules: check only these rules (names in :data:`GENERATOR_RULES`); all by default.
        **options: the generator's ``__init__`` keywords, as ``--generator-options`` gives them
            (strings) or as Python values; option values whose names say they are credentials
            (``api_key``...) must not show in ``output_params()`` or ``repr()``.

    Returns:
        What was checked, and which rules were not checked and why.

    Raises:
        ContractError: a rule is broken; the message names the generator and the rule.
    """
    __tracebackhide__ = True  # under pytest, a failure points at the caller's line
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise TypeError(f"check_generator takes a synthmed.generators.Generator subclass, got {cls!r}")
    selected = select(GENERATOR_RULES, rules, "generator")
    generator = cls(**options)
    generator.bind(CLASSES)
    secrets = tuple(str(v) for k, v in options.items() if SECRET_KEY.search(k) and v not in (None, ""))
    subject = _Subject(generator, secrets, allow_external)
    if generator.learns and not (generator.sends_data_off_machine and not allow_external):
        call_as("generator", plugin_name(cls), "fit", _fit, generator)  # nothing is checked unfitted
    return run_rules("generator", plugin_name(cls), selected, subject)


def _fit(generator: Generator) -> None:
    images, labels = scans(FIT_IMAGES)  # (8, 1, 32, 32) uint8
    with tempfile.TemporaryDirectory(prefix="synthmed-check-fit-") as tmp:
        ensure_fitted(generator, images, labels, FitCache(tmp), seed=0, quiet=True)
