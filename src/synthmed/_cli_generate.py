"""``synthmed generate`` (pre-fill the generation cache) and ``synthmed cache stats|prune``.

``generate`` computes exactly the variations a ``synthmed train --policy synthetic`` run with the
same options would use (same real sample, same plan: the code is shared with the policy) and
makes the missing ones, so the run itself only reads the cache.
"""

from __future__ import annotations

from typing import Any

import click

from synthmed.errors import SynthmedError


def _options(config_file: str | None, **given: Any) -> Any:
    from synthmed.config import Config

    values = {k: v for k, v in given.items() if v is not None}
    return Config.from_yaml(config_file, **values) if config_file else Config.from_mapping(values)


@click.command("generate")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (the same file `synthmed train --config` takes); options below override it")
@click.option("--dataset", help="dataset plugin name [default: alzheimer_mri]")
@click.option("--data-dir", help="local copy of the dataset")
@click.option("--image-size", type=int, help="side of the images fed to the model [default: 128]")
@click.option("--real-frac", type=float, help="stratified fraction X of the real training images [default: 1.0]")
@click.option("--val-frac", type=float, help="validation share carved from the sample, as in the run [default: 0]")
@click.option("--synth-frac", type=float, help="synthetic share Y of the full training size [default: 1 - X]")
@click.option("--generator", help="generator plugin name [default: elastic]")
@click.option("--generator-options", help="generator params as 'key=value,key=value'")
@click.option("--variations-per-image", type=int, help="variations k per source (pool size) [default: 1]")
@click.option("--balance/--no-balance", default=None, help="give rare classes more synthetic images")
@click.option("--seed", type=int, help="the run's seed (decides the sample and which pool entries) [default: 0]")
@click.option("--cache-dir", help="generation cache folder [default: $SYNTHMED_CACHE_DIR or the user cache dir]")
@click.option("--allow-external", is_flag=True, default=None, help="allow generators that send images off this machine")
@click.option("--estimate", is_flag=True, help="only print how many new images and their estimated cost")
@click.option("--max-cost", type=float, default=1.0, show_default=True,
              help="ask for confirmation when the estimated cost (USD) is above this")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--quiet", "-q", is_flag=True, default=None, help="no progress bar")
def generate(config_file: str | None, estimate: bool, max_cost: float, yes: bool, **given: Any) -> None:
    """Pre-fill the generation cache for a synthetic run (resumable; never pays twice)."""
    try:
        _generate(_options(config_file, **given), estimate=estimate, max_cost=max_cost, yes=yes)
    except SynthmedError as exc:
        raise click.ClickException(str(exc)) from None


def _generate(config: Any, *, estimate: bool, max_cost: float, yes: bool) -> None:
    from synthmed.generators.cache import GenerationCache, fill, plan_keys
    from synthmed.plugins import default_plugin_manager, registry
    from synthmed.policies.synthetic import check_external, plan_for
    from synthmed.training import load_splits, sample_real

    pm = default_plugin_manager()
    cls = registry("generators", pm).get(config.generator)
    if not estimate:
        check_external(cls, config)
    generator = cls.from_config(config)
    splits = load_splits(config, pm)
    generator.bind(splits.classes)
    real, _ = sample_real(splits, config)
    if generator.learns:  # fitted on the run's sample after the validation carve, as in the run
        from synthmed.generators.fitting import ensure_fitted, fit_cache_for

        info = ensure_fitted(generator, real.images, real.labels, fit_cache_for(config), seed=config.seed,
                             quiet=config.quiet)
        click.echo(f"fit {info.key[:16]}… on {info.n_images} images: "
                   + ("from the cache" if info.from_cache else f"{info.steps} steps in {info.seconds:.0f} s"))
    plan = plan_for(real, splits.train, splits.num_classes, config)
    cache = GenerationCache.from_config(config)
    _, keys = plan_keys(generator, real.images, plan.requests)
    missing = sum(not cache.has(generator.name, k) for k in keys)
    price = generator.cost_per_image_usd
    cost = missing * (price or 0.0)
    click.echo(
        f"{len(keys)} synthetic images from {len(real)} real sources "
        f"({config.dataset}, real_frac={config.real_frac}, seed={config.seed}, generator={generator.name}): "
        f"{len(keys) - missing} cached, {missing} to generate, "
        + (f"estimated cost ${cost:.2f} (${price:.4f}/image)" if price is not None else "free (local)")
    )
    click.echo(f"cache: {cache.root}")
    if estimate:
        if cls.sends_data_off_machine and not config.allow_external:
            click.echo(f"note: {generator.name!r} sends images off this machine — generating needs --allow-external")
        return
    if missing and cost > max_cost and not yes:
        click.confirm(f"Generate {missing} images for about ${cost:.2f} (above --max-cost {max_cost})?", abort=True)
    result = fill(cache, generator, real.images, real.labels, plan.requests, quiet=config.quiet, load=False)
    s = result.stats
    click.echo(f"generated {s.generated}, refused {s.refused}, cache hits {s.hits}, spent about ${s.cost_usd:.2f}")


@click.group("cache")
def cache() -> None:
    """Inspect or prune the generation cache."""


@cache.command("stats")
@click.option("--cache-dir", help="generation cache folder [default: $SYNTHMED_CACHE_DIR or the user cache dir]")
def cache_stats(cache_dir: str | None) -> None:
    """Entries and size per generator."""
    store = _cache(cache_dir)
    rows = store.stats()
    click.echo(f"cache: {store.root}")
    if not rows:
        click.echo("empty")
        return
    click.echo(f"{'generator':<20} {'entries':>9} {'MB':>10}")
    for name, row in rows.items():
        click.echo(f"{name:<20} {row['entries']:>9} {row['bytes'] / 1e6:>10.2f}")
    total = sum(r["entries"] for r in rows.values()), sum(r["bytes"] for r in rows.values())
    click.echo(f"{'total':<20} {total[0]:>9} {total[1] / 1e6:>10.2f}")


@cache.command("prune")
@click.option("--cache-dir", help="generation cache folder [default: $SYNTHMED_CACHE_DIR or the user cache dir]")
@click.option("--generator", help="only this generator's entries")
@click.option("--older-than", type=float, help="only entries older than this many days")
@click.option("--all", "everything", is_flag=True, help="every entry (needed when no filter is given)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
def cache_prune(cache_dir: str | None, generator: str | None, older_than: float | None, everything: bool, yes: bool) -> None:
    """Delete cache entries (paid images too: they would be paid again)."""
    if generator is None and older_than is None and not everything:
        raise click.UsageError("say what to prune: --generator NAME, --older-than DAYS, or --all")
    if older_than is not None and older_than < 0:
        raise click.BadParameter(f"{older_than} is negative", param_hint="--older-than")
    store = _cache(cache_dir)
    preview = store.prune(generator=generator, older_than_days=older_than, dry_run=True)
    if not preview["entries"]:
        click.echo(f"nothing to prune in {store.root}")
        return
    if not yes:
        click.confirm(f"Delete {preview['entries']} entries ({preview['bytes'] / 1e6:.2f} MB) from {store.root}?",
                      abort=True)
    done = store.prune(generator=generator, older_than_days=older_than)
    click.echo(f"deleted {done['entries']} entries ({done['bytes'] / 1e6:.2f} MB)")


def _cache(cache_dir: str | None) -> Any:
    from synthmed.generators.cache import GenerationCache

    return GenerationCache(cache_dir) if cache_dir else GenerationCache.from_config(None)
