"""``ldm``: the latent diffusion generator on MONAI — fit, cache, modes, sizes (the fit contract's property test
in tests/test_learned_generators.py runs it too)."""

from __future__ import annotations

import pytest
import torch

from synthmed.errors import SynthmedError
from synthmed.generators.fitting import FitCache, ensure_fitted
from synthmed.generators.ldm import LdmGenerator

TINY = {"ae_steps": 3, "steps": 3, "sample_steps": 4}
CLASSES = ("a", "b", "c", "d")


def brains(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Discs of class-dependent radius with texture on black: (n, 1, size, size) uint8, labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r2 = (xx**2 + yy**2)[None]
    radius = 0.3 + 0.1 * labels.float()[:, None, None]
    disc = (r2 < radius).float()
    tex = torch.rand(n, size, size, generator=g) * 0.3 + 0.7
    return (disc * tex * 255).to(torch.uint8).unsqueeze(1), labels.long()


def fitted(images, labels, tmp_path, **options) -> LdmGenerator:  # noqa: ANN001
    gen = LdmGenerator(**{**TINY, **options})
    gen.bind(CLASSES)
    ensure_fitted(gen, images, labels, FitCache(tmp_path), seed=0, quiet=True)
    return gen


def test_registered_and_declared(pm):
    from synthmed.plugins import registry

    cls = registry("generators", pm).get("ldm")
    assert cls is LdmGenerator and cls.learns and cls.deterministic and not cls.sends_data_off_machine


def test_tiny_fit_generates_at_the_runs_size_and_reloads_from_the_cache(tmp_path):
    images, labels = brains(24, size=32)
    gen = fitted(images, labels, tmp_path)
    assert gen._latent_side(32) == (16, 16) and gen._levels(128) == 4  # latent 16 px: fewer levels below 128 px
    out = gen.generate(images[:6], labels[:6], variation=0, seed=3)
    assert out.shape == (6, 1, 32, 32) and out.dtype == torch.uint8
    again = LdmGenerator(**TINY)
    again.bind(CLASSES)
    assert ensure_fitted(again, images, labels, FitCache(tmp_path), seed=0, quiet=True).from_cache
    assert torch.equal(again.generate(images[:6], labels[:6], variation=0, seed=3), out)


def test_strength_and_mode_share_one_fit_and_change_the_images(tmp_path):
    images, labels = brains(24)
    low = fitted(images, labels, tmp_path, strength=0.2)
    high = fitted(images, labels, tmp_path, strength=1.0)
    sample = fitted(images, labels, tmp_path, mode="sample")
    assert low.fit_key == high.fit_key == sample.fit_key  # one fit serves every strength and mode
    assert low.cache_params() != high.cache_params() != sample.cache_params()
    a = low.generate(images[:4], labels[:4], variation=0, seed=1)
    assert not torch.equal(a, high.generate(images[:4], labels[:4], variation=0, seed=1))
    assert not torch.equal(a, low.generate(images[:4], labels[:4], variation=1, seed=1))


def test_keep_residual_puts_the_sources_detail_back(tmp_path):
    images, labels = brains(24)
    plain = fitted(images, labels, tmp_path, strength=0.01, keep_residual=0)
    kept = fitted(images, labels, tmp_path, strength=0.01, keep_residual=1.0)
    assert plain.fit_key == kept.fit_key  # an output option: the same fit
    err = lambda g: (g.generate(images, labels, variation=0, seed=0).float() - images.float()).abs().mean()  # noqa: E731
    assert err(kept) < 0.25 * err(plain)  # the barely-moved latent decodes blurred; the residual restores the source


def test_the_autoencoders_held_back_reconstruction_error_is_logged_and_falls(tmp_path):
    images, labels = brains(40, size=16)
    logged: list[tuple[int, dict[str, float]]] = []
    gen = LdmGenerator(ae_steps=60, steps=2, sample_steps=2)
    gen.bind(CLASSES)
    torch.manual_seed(0)
    info = gen.fit(images, labels, seed=0, progress=False, log=lambda m, step: logged.append((step, m)))
    held = [m["generator_ae_heldout_l1"] for _, m in logged if "generator_ae_heldout_l1" in m]
    assert len(held) >= 3 and held[-1] < 0.7 * held[0]
    names = {k for _, m in logged for k in m}
    assert {"generator_ae_loss", "generator_ae_l1", "generator_fit_loss", "generator_ae_seconds",
            "generator_unet_seconds", "generator_latent_scale"} <= names
    assert info["steps"] == 62


def test_unfitted_and_bad_labels_and_bad_options_are_refused(tmp_path):
    images, labels = brains(8)
    with pytest.raises(SynthmedError, match="not fitted"):
        LdmGenerator(**TINY).generate(images, labels, variation=0, seed=0)
    gen = fitted(*brains(24), tmp_path)
    with pytest.raises(SynthmedError, match="label 7"):
        gen.generate(images[:1], torch.tensor([7]), variation=0, seed=0)
    for option, value, match in [("strength", "0", "strength"), ("preset", "huge", "preset"),
                                 ("mode", "dream", "mode"), ("device", "tpu:9", "device"), ("steps", "-1", "steps")]:
        with pytest.raises(SynthmedError, match=match):
            LdmGenerator(**{option: value}) if option != "device" else LdmGenerator(device=value)._device()


def test_the_presets_set_strength_and_residual_and_an_option_overrides_them():
    cpu, gpu = LdmGenerator(), LdmGenerator(preset="gpu")
    assert (cpu.strength, cpu.keep_residual, cpu.ae_steps, cpu.steps, cpu.sample_steps) == (0.25, 1.0, 400, 1000, 40)
    assert (gpu.strength, gpu.keep_residual) == (0.5, 0.0)
    mine = LdmGenerator(strength="0.5", keep_residual="0")
    assert (mine.strength, mine.keep_residual) == (0.5, 0.0)
    assert mine.fit_params() == cpu.fit_params() and mine.output_params() != cpu.output_params()  # one fit


def test_string_options_from_the_command_line_are_coerced():
    gen = LdmGenerator(strength="0.3", ae_steps="5", steps="7", sample_steps="10", kl="0")
    assert (gen.strength, gen.ae_steps, gen.steps, gen.sample_steps, gen.kl) == (0.3, 5, 7, 10, 0.0)
