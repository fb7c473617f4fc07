"""Learning generators: the fit contract (for ``ldm`` too), the fitted-state cache, ``pca`` and ``ddpm``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthmed.generators.base import Generator
from synthmed.generators.cache import plan_keys
from synthmed.generators.fitting import FitCache, check_open_set, ensure_fitted, fit_fingerprint
from synthmed.generators.ldm import LdmGenerator
from synthmed.hookspecs import hookimpl
from synthmed.plugins import registry

TINY_DDPM = {"steps": 3, "width": 8, "resolution": 16, "batch": 8, "sample_steps": 4}


def images_of(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return images, labels.long()


def test_fingerprint_is_order_free_and_sample_sensitive():
    images, labels = images_of(10)
    perm = torch.randperm(10)
    assert fit_fingerprint(images, labels) == fit_fingerprint(images[perm], labels[perm])
    assert fit_fingerprint(images, labels) != fit_fingerprint(images[:9], labels[:9])
    other = labels.clone()
    other[0] = 3
    assert fit_fingerprint(images, labels) != fit_fingerprint(images, other)


def test_pca_fits_once_and_the_fit_key_reaches_the_generation_cache_key(pm, tmp_path):
    cls = registry("generators", pm).get("pca")
    images, labels = images_of(24)
    cache = FitCache(tmp_path)
    gen = cls(components=5)
    info = ensure_fitted(gen, images, labels, cache, seed=0, quiet=True)
    assert not info.from_cache and info.n_images == 24 and gen.fit_key == info.key
    again = cls(components=5)
    assert ensure_fitted(again, images[torch.randperm(24)], labels, cache, seed=0, quiet=True) is not None
    hit = ensure_fitted(again, images, labels, cache, seed=0, quiet=True)
    assert hit.from_cache and hit.key == info.key
    a = gen.generate(images[:4], labels[:4], variation=0, seed=1)
    assert torch.equal(a, again.generate(images[:4], labels[:4], variation=0, seed=1))
    other = cls(components=5)
    moved = ensure_fitted(other, images[:20], labels[:20], cache, seed=0, quiet=True)
    assert moved.key != info.key  # another sample, another fit
    _, keys_a = plan_keys(gen, images, [(0, 0)])
    _, keys_b = plan_keys(other, images, [(0, 0)])
    assert keys_a != keys_b  # same params and source, different fit: different generated image



def test_a_fit_in_progress_blocks_only_the_same_fit(pm, tmp_path):
    """Another process fitting sample A (its lock held) neither delays a fit of sample B nor a load of a
    finished fit; the same fit waits for it (and then loads it instead of fitting twice)."""
    from filelock import Timeout

    from synthmed.generators.fitting import fit_key

    cls = registry("generators", pm).get("pca")
    images, labels = images_of(24)
    cache = FitCache(tmp_path)
    done = ensure_fitted(cls(components=5), images[:20], labels[:20], cache, seed=0, quiet=True)
    busy = fit_key(cls(components=5), fit_fingerprint(images, labels))
    with cache.lock("pca", busy).acquire(timeout=0):  # "another process" is fitting the full 24
        assert ensure_fitted(cls(components=5), images[:22], labels[:22], cache, seed=0, quiet=True).from_cache is False
        assert ensure_fitted(cls(components=5), images[:20], labels[:20], cache, seed=0, quiet=True).key == done.key
        with pytest.raises(Timeout):
            cache.lock("pca", busy).acquire(timeout=0.2)  # the same fit would wait for it

def test_pca_modes(pm, tmp_path):
    cls = registry("generators", pm).get("pca")
    images, labels = images_of(16)
    ident = cls(strength=0.0, keep_residual=1.0)
    ensure_fitted(ident, images, labels, FitCache(tmp_path), seed=0, quiet=True)
    out = ident.generate(images, labels, variation=0, seed=0)
    assert (out.int() - images.int()).abs().max() <= 1  # no move, full residual: the source back
    sample = cls(mode="sample")
    ensure_fitted(sample, images, labels, FitCache(tmp_path), seed=0, quiet=True)
    assert sample.generate(images, labels, variation=0, seed=0).shape == images.shape


def test_unfitted_learning_generator_refuses_to_key_the_cache(pm):
    gen = registry("generators", pm).get("pca")()
    images, _ = images_of(2)
    with pytest.raises(Exception, match="not fitted"):
        plan_keys(gen, images, [(0, 0)])


def test_tiny_ddpm_on_real_images_fits_generates_and_caches(pm, tmp_path, real_data_dir):
    from synthmed.config import Config
    from synthmed.training import load_splits

    splits = load_splits(Config(data_dir=str(real_data_dir), image_size=32), pm)
    rows = torch.cat([(splits.train.labels == c).nonzero().flatten()[:10] for c in range(splits.num_classes)])
    images, labels = splits.train.images[rows], splits.train.labels[rows]
    cls = registry("generators", pm).get("ddpm")
    cache = FitCache(tmp_path)
    logged: list[tuple[dict, int | None]] = []
    gen = cls(**TINY_DDPM)
    gen.bind(splits.classes)
    info = ensure_fitted(gen, images, labels, cache, seed=0, quiet=True,
                         log_metrics=lambda m, step=None: logged.append((m, step)))
    assert not info.from_cache and info.steps == 3
    assert any("generator_fit_loss" in m and s is not None for m, s in logged)
    out = gen.generate(images[:5], labels[:5], variation=0, seed=3)
    assert out.dtype == torch.uint8 and out.shape == images[:5].shape
    second = cls(**TINY_DDPM)
    second.bind(splits.classes)
    assert ensure_fitted(second, images, labels, cache, seed=0, quiet=True).from_cache
    assert torch.equal(out, second.generate(images[:5], labels[:5], variation=0, seed=3))
    assert ensure_fitted(cls(**TINY_DDPM), images[1:], labels[1:], cache, seed=0, quiet=True).key != info.key


def test_ddpm_warm_start_is_open_set_unless_the_sidecar_says_otherwise(pm, tmp_path):
    import json

    from synthmed.generators.base import source_hash

    cls = registry("generators", pm).get("ddpm")
    images, labels = images_of(8, size=16)
    first = cls(**TINY_DDPM)
    first.bind(("a", "b", "c", "d"))
    ensure_fitted(first, images, labels, FitCache(tmp_path / "c"), seed=0, quiet=True)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(first.state_dict(), ckpt)
    warm = cls(init=str(ckpt), **TINY_DDPM)
    assert check_open_set(warm, images) is True  # no sidecar: training data unknown
    (tmp_path / "ckpt.pt.json").write_text(json.dumps({"training_sources": [source_hash(i) for i in images[:4]]}))
    assert check_open_set(warm, images) is False
    assert check_open_set(warm, images[4:]) is True
    warm.bind(("a", "b", "c", "d"))
    info = ensure_fitted(warm, images, labels, FitCache(tmp_path / "c"), seed=0, quiet=True)
    assert info.key != first.fit_key  # the checkpoint is part of the fit


# --- the property: a fit sees exactly the run's sample ----------------------------------------------
SEEN: list[torch.Tensor] = []


class Recording(Generator):
    name = "recording"
    learns = True
    deterministic = True

    def fit(self, images, labels, *, seed, progress, log):  # noqa: ANN001
        SEEN.append(images.clone())
        log({"generator_fit_loss": 0.0}, 0)
        return {"steps": 1}

    def generate(self, images, labels, *, variation, seed):  # noqa: ANN001
        return 255 - images


class RecordingLdm(LdmGenerator):
    """The built-in ``ldm`` whose fit also records what it was given: the property covers a real fit."""

    name = "ldm-recording"

    def fit(self, images, labels, *, seed, progress, log):  # noqa: ANN001
        SEEN.append(images.clone())
        return super().fit(images, labels, seed=seed, progress=progress, log=log)


class RecordingPlugin:
    @hookimpl
    def register_generators(self):  # noqa: ANN201
        return [Recording, RecordingLdm]


@pytest.mark.parametrize("generator, options", [("recording", ""), ("ldm-recording", "ae_steps=2,steps=2,sample_steps=2")])
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(real_frac=st.sampled_from([0.25, 0.5, 0.75]), seed=st.integers(0, 1000), val_frac=st.sampled_from([0.0, 0.2, 0.4]))
def test_fit_sees_exactly_the_runs_sample(tiny_splits, mlflow_uri, tmp_path_factory, generator, options, real_frac, seed,
                                          val_frac):
    import synthmed
    from synthmed.data.sampling import split_validation, stratified_sample
    from synthmed.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.register(RecordingPlugin(), name="recording-test")
    SEEN.clear()
    synthmed.train(synthmed.Config(policy="synthetic", generator=generator, generator_options=options,
                                   real_frac=real_frac, seed=seed, val_frac=val_frac, epochs=1, image_size=32,
                                   gradcam=False, log_model=False, quiet=True,
                                   cache_dir=str(tmp_path_factory.mktemp("gen-cache"))),
                   splits=tiny_splits, pm=pm)
    rows = stratified_sample(tiny_splits.train.labels, real_frac, seed)
    sample = tiny_splits.train.subset(rows)
    if val_frac:
        train_rows, _ = split_validation(sample.labels, val_frac, seed)
        sample = sample.subset(train_rows)
    assert len(SEEN) == 1
    seen = SEEN[0]
    key = lambda t: sorted(bytes(x.numpy().tobytes()) for x in t)  # noqa: E731
    assert key(seen) == key(sample.images)  # the multiset of images is the sample, exactly
    test = {bytes(x.numpy().tobytes()) for x in tiny_splits.test.images}
    assert not any(bytes(x.numpy().tobytes()) in test for x in seen)
