"""``synthmed generate`` (pre-fill the generation cache) and ``synthmed cache stats|prune``.

``generate`` is :func:`synthmed.policies.prefill.prefill` with a confirmation: it makes exactly
the variations a ``synthmed train --policy synthetic`` run with the same options would use.
Its options are the Config fields that decide those images (:data:`GENERATE_FIELDS`).
"""

from __future__ import annotations

from typing import Any

import click

from synthmed.cli.options import build_config, config_options


#: the Config fields that decide which images a synthetic run uses (and where they are cached)
GENERATE_FIELDS = ("dataset", "data_dir", "revision", "image_size", "skip_bad_images", "split", "groups", "twin_threshold",
                   "test_frac", "split_seed",
                   "real_frac", "val_frac", "synth_frac", "generator", "generator_options", "variations_per_image",
                   "balance", "seed", "cache_dir", "allow_external", "quiet", "checkpoint_every")


@click.command("generate")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config (the same file `synthmed train --config` takes); options below override it")
@click.option("--estimate", is_flag=True, help="only print how many new images and their estimated cost")
@click.option("--max-cost", type=float, default=1.0, show_default=True,
              help="ask for confirmation when the estimated cost (USD) is above this")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@config_options(only=GENERATE_FIELDS)
def generate(config_file: str | None, estimate: bool, max_cost: float, yes: bool, **given: Any) -> None:
    """Pre-fill the generation cache for a synthetic run (resumable; never pays twice)."""
    from synthmed.policies.prefill import prefill

    config = build_config(config_file, given)

    def confirm(found: Any) -> bool:
        _describe(found, config)
        if found.estimated_cost_usd > max_cost and not yes:
            click.confirm(f"Generate {found.missing} images for about ${found.estimated_cost_usd:.2f} "
                          f"(above --max-cost {max_cost})?", abort=True)
        return True

    found = prefill(config, estimate=estimate, confirm=confirm)
    if found.stats is None:  # estimating, or nothing was missing: confirm() was not asked
        _describe(found, config)
        if estimate and found.sends_data_off_machine and not config.allow_external:
            click.echo(f"note: {found.generator!r} sends images off this machine — generating needs --allow-external")
        return
    s = found.stats
    click.echo(f"generated {s.generated}, refused {s.refused}, cache hits {s.hits}, spent about ${s.cost_usd:.2f}")


def _describe(found: Any, config: Any) -> None:
    price = found.price_per_image_usd
    click.echo(
        f"{found.planned} synthetic images from {found.sources} real sources "
        f"({config.dataset}, real_frac={config.real_frac}, seed={config.seed}, generator={found.generator}): "
        f"{found.cached} cached, {found.missing} to generate, "
        + (f"estimated cost ${found.estimated_cost_usd:.2f} (${price:.4f}/image)" if price is not None else "free (local)")
    )
    click.echo(f"cache: {found.cache_root}")
    if found.generations == "per-simulation":
        click.echo("generations=per-simulation: each seed makes its own images — a sweep of N simulations "
                   f"generates N × {found.planned} images (cost × N); generations=shared reuses one pool")


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

    return GenerationCache(cache_dir).check_root() if cache_dir else GenerationCache.from_config(None)
