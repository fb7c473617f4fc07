"""Generators: one contract for every registered generator (third-party ones too), then the built-ins.

The contract is synthmed.testing's (``check_generator``), the checks plugin authors run; the tests
of the checks themselves, on broken generators, are in test_testing.py.
"""

from __future__ import annotations

import pytest
import torch
from _openai_server import FakeImagesServer
from PIL import Image

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.generators.base import source_hash
from synthmed.plugins import get_plugin_manager, registry
from synthmed.testing import CLASSES, GENERATOR_RULES, ContractCase

KEY = "sk-test-SECRET-generators"
ALL_GENERATORS = registry("generators", get_plugin_manager()).names()  # installed third-party ones too
TINY_OPTIONS = {"ddpm": {"steps": 2, "width": 8, "resolution": 16, "batch": 4, "sample_steps": 4},
                "ldm": {"ae_steps": 2, "steps": 2, "sample_steps": 4},
                "pca": {"components": 4}}  # learning generators: options that fit in a blink


def sources(b: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Brain-ish test images: a bright disc with texture on black, shape (B, 1, H, W) uint8."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.6).float()
    tex = torch.rand(b, 1, h, w, generator=g) * 0.5 + 0.5
    return (disc * tex * 255).to(torch.uint8), torch.arange(b) % 4


def make_folder(root) -> str:
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.new("L", (20, 20), color=40 * c + 10 * k).save(root / name / f"{k}.png")
    return str(root)


@pytest.fixture
def contract_options(tmp_path, request):
    """What each registered generator is built with for its contract: defaults, or what the built-ins need."""
    servers = []

    def make(name: str) -> dict:
        if name == "folder":
            return {"path": make_folder(tmp_path / "pool")}
        if name == "sd-variation":  # plugin synthmed-diffusers: a tiny random pipeline, no download
            return dict(model=str(request.getfixturevalue("tiny_sd_img2img")), steps=2, strength=0.5, guidance=1,
                        device="cpu")
        if name == "openai":  # off the machine, but to a local stand-in of the API
            server = FakeImagesServer().__enter__()
            servers.append(server)
            return dict(base_url=server.url, api_key=KEY, size="64x64", concurrency=2, allow_external=True)
        if name in TINY_OPTIONS:
            return TINY_OPTIONS[name]
        try:
            registry("generators", get_plugin_manager()).get(name).from_config(Config(generator=name))
        except SynthmedError as exc:
            pytest.skip(f"{name} needs generator options to be built: {exc}")
        return {}

    yield make
    for server in servers:
        server.__exit__()


# --- the contract, for every registered generator: synthmed.testing's checks ------------------------
@pytest.mark.parametrize("rule", GENERATOR_RULES)
@pytest.mark.parametrize("name", ALL_GENERATORS)
def test_generator_contract(pm, contract_options, name, rule):
    ContractCase(registry("generators", pm).get(name), rule, contract_options(name))()


# --- base class ---------------------------------------------------------------------------------------
def test_from_config_rejects_unknown_and_missing_options():
    with pytest.raises(SynthmedError, match=r"does not take option\(s\) 'alhpa'.*accepted: alpha, sigma"):
        registry("generators", get_plugin_manager()).get("elastic").from_config(Config(generator_options="alhpa=1"))
    with pytest.raises(SynthmedError, match=r"needs option\(s\) path"):
        registry("generators", get_plugin_manager()).get("folder").from_config(Config(generator="folder"))


def test_source_hash_covers_bytes_and_shape():
    a = torch.zeros(1, 4, 4, dtype=torch.uint8)
    assert source_hash(a) == source_hash(a.clone())
    assert source_hash(a) != source_hash(torch.zeros(1, 2, 8, dtype=torch.uint8))
    b = a.clone()
    b[0, 0, 0] = 1
    assert source_hash(a) != source_hash(b)


# --- elastic ----------------------------------------------------------------------------------------
def elastic(**options):
    return registry("generators", get_plugin_manager()).get("elastic")(**options)


def test_elastic_is_the_local_free_default():
    gen = registry("generators", get_plugin_manager()).get(Config().generator).from_config(Config())
    assert gen.name == "elastic" and not gen.sends_data_off_machine and gen.cost_per_image_usd is None


def test_elastic_varies_with_variation_and_seed_but_keeps_the_image():
    images, labels = sources(2, 64, 64)
    gen = elastic()
    v0 = gen.generate(images, labels, variation=0, seed=1)
    assert not torch.equal(v0, gen.generate(images, labels, variation=1, seed=1))
    assert not torch.equal(v0, gen.generate(images, labels, variation=0, seed=2))
    assert not torch.equal(v0, images)
    diff = (v0.float() - images.float()).abs().mean() / images.float().mean()
    assert diff < 0.6  # a variation, not noise


def test_elastic_with_zero_strength_is_the_identity_and_black_stays_black():
    images, labels = sources(2)
    assert torch.equal(elastic(alpha=0, gamma=0, gain=0).generate(images, labels, variation=3, seed=3), images)
    black = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    assert elastic().generate(black, labels, variation=0, seed=0).max() == 0


@pytest.mark.parametrize("option, value", [("alpha", "abc"), ("alpha", "-0.1"), ("sigma", "0"), ("gain", "nan")])
def test_elastic_rejects_bad_options(option, value):
    with pytest.raises(SynthmedError, match=f"elastic.*{option}="):
        elastic(**{option: value})


def test_elastic_coerces_string_options_and_keys_on_them():
    a, b = elastic(alpha="0.05"), elastic(alpha=0.05)
    assert a.output_params() == b.output_params() and a.alpha == 0.05
    assert elastic().output_params() != a.output_params()


# --- folder -----------------------------------------------------------------------------------------
def folder(path):
    return registry("generators", get_plugin_manager()).get("folder")(path=str(path))


def test_folder_layout_a_replays_variations_of_that_exact_source(tmp_path):
    images, labels = sources(2)
    own = tmp_path / source_hash(images[0])
    own.mkdir()
    Image.new("RGB", (50, 70), color=(200, 200, 200)).save(own / "b.png")  # any size and mode
    Image.new("L", (32, 32), color=7).save(own / "a.png")
    make_folder(tmp_path)  # images[1] falls back to its class folder
    gen = folder(tmp_path)
    gen.bind(CLASSES)
    assert gen.generate(images[:1], labels[:1], variation=0, seed=0).unique().tolist() == [7]  # a.png
    assert gen.generate(images[:1], labels[:1], variation=1, seed=0).unique().tolist() == [200]  # b.png
    with pytest.raises(SynthmedError, match="holds 2 variation"):
        gen.generate(images[:1], labels[:1], variation=2, seed=0)


def test_folder_layout_b_picks_distinct_files_per_variation(tmp_path):
    make_folder(tmp_path)
    images, labels = sources(1)
    gen = folder(tmp_path)
    gen.bind(CLASSES)
    values = {int(gen.generate(images, labels, variation=v, seed=0).unique()) for v in range(3)}
    assert values == {0, 10, 20}  # class 0's three files, each once


def test_folder_by_label_index_and_missing_class_message(tmp_path):
    (tmp_path / "0").mkdir()
    Image.new("L", (8, 8), color=5).save(tmp_path / "0" / "x.png")
    images, labels = sources(2)  # labels 0, 1
    gen = folder(tmp_path)
    gen.bind(CLASSES)
    assert int(gen.generate(images[:1], labels[:1], variation=0, seed=0).unique()) == 5
    with pytest.raises(SynthmedError, match="label 1, class 'Moderate_Demented'"):
        gen.generate(images[1:], labels[1:], variation=0, seed=0)


def test_folder_key_changes_when_the_folder_changes(tmp_path):
    make_folder(tmp_path)
    before = folder(tmp_path).output_params()
    Image.new("L", (8, 8)).save(tmp_path / "Mild_Demented" / "new.png")
    assert folder(tmp_path).output_params() != before


def test_folder_rejects_a_missing_path(tmp_path):
    with pytest.raises(SynthmedError, match="is not a folder"):
        folder(tmp_path / "nope")
