"""The synthmed-diffusers plugin, with tiny randomly initialised SD pipelines built here (no download).

The generator contract (shape, dtype, every item once, reproducibility) runs for ``sd-variation``
in ``test_generators.py`` on the ``tiny_sd_img2img`` fixture; this file covers the rest.
"""

from __future__ import annotations

import time
from importlib.metadata import entry_points

import pytest
import torch

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.plugins import get_plugin_manager, registry

synthmed_diffusers = pytest.importorskip("synthmed_diffusers", reason="plugins/synthmed-diffusers is not installed")
pytest.importorskip("transformers", reason="transformers is not installed")
from _tiny_diffusers import save_tiny_image_variation, save_tiny_img2img  # noqa: E402

CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")


def sd(model, **options):
    options = {"model": str(model), "steps": 2, "strength": 0.5, "guidance": 1.0, "device": "cpu", **options}
    return registry("generators", get_plugin_manager(autoload=True)).get("sd-variation")(**options)


def sources(b=3, h=24, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 1, h, w), generator=g, dtype=torch.uint8), torch.arange(b) % 4


@pytest.fixture(scope="module")
def tiny_variation(tmp_path_factory):
    return save_tiny_image_variation(tmp_path_factory.mktemp("tiny-sd-variation"))


# --- discovery, declarations -------------------------------------------------------------------------
def test_found_through_its_own_entry_point_and_distribution():
    assert "synthmed_diffusers" in [ep.value for ep in entry_points(group="synthmed")]
    reg = registry("generators", get_plugin_manager(autoload=True))
    assert "sd-variation" in reg.names()
    assert reg.provider("sd-variation").startswith("synthmed-diffusers ")
    cls = reg.get("sd-variation")
    assert cls.sends_data_off_machine is False


def test_local_and_free_and_keyed_on_model_and_weights(tiny_sd_img2img, tmp_path):
    gen = sd(tiny_sd_img2img)
    assert gen.cost_per_image_usd is None and not gen.sends_data_off_machine
    params = gen.output_params()
    assert params["model"] == str(tiny_sd_img2img) and params["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert params["size"] == 32 and len(params["weights_sha256"]) == 64
    # same architecture and configs, other weights: another key (a different model never hits the cache)
    other = sd(save_tiny_img2img(tmp_path / "other", seed=1)).output_params()
    assert other["weights_sha256"] != params["weights_sha256"]
    assert sd(tiny_sd_img2img, strength="0.6").output_params() != params
    assert sd(tiny_sd_img2img, prompt="x {class}").output_params() != params
    assert sd(tiny_sd_img2img, device="cpu").output_params() == params  # the device is not part of the key


# --- generation -------------------------------------------------------------------------------------
def test_img2img_keeps_size_and_dtype_and_is_seeded_per_item(tiny_sd_img2img):
    gen = sd(tiny_sd_img2img)
    gen.bind(CLASSES)
    images, labels = sources(2)
    a = gen.generate(images, labels, variation=0, seed=5)
    assert a.dtype == torch.uint8 and tuple(a.shape) == (2, 1, 24, 40)
    assert torch.equal(a, gen.generate(images, labels, variation=0, seed=5))  # reproducible
    assert torch.equal(a[1], gen.generate(images[1:2], labels[1:2], variation=0, seed=5)[0])  # batch-independent
    assert not torch.equal(a, gen.generate(images, labels, variation=0, seed=6))  # another seed differs
    assert not torch.equal(a, gen.generate(images, labels, variation=1, seed=5))  # another variation differs
    assert not torch.equal(a, images)


def test_prompt_names_the_class_and_reaches_the_pipeline(tiny_sd_img2img):
    gen = sd(tiny_sd_img2img, prompt="brain MRI, {class} (label {label})", guidance=3.0)
    gen.bind(CLASSES)
    assert gen.prompt_for(0) == "brain MRI, Mild Demented (label 0)"
    assert gen.prompt_for(3) == "brain MRI, Very Mild Demented (label 3)"
    images, _ = sources(1)
    as_mild = gen.generate(images, torch.tensor([0]), variation=0, seed=1)
    as_none = gen.generate(images, torch.tensor([2]), variation=0, seed=1)
    assert not torch.equal(as_mild, as_none)  # same source and seed, another class prompt


def test_image_variation_pipeline_needs_no_prompt(tiny_variation):
    gen = sd(tiny_variation)
    params = gen.output_params()
    assert params["pipeline"] == "StableDiffusionImageVariationPipeline"
    assert "prompt" not in params and "strength" not in params
    images, labels = sources(2)
    a = gen.generate(images, labels, variation=0, seed=3)
    assert a.dtype == torch.uint8 and tuple(a.shape) == (2, 1, 24, 40)
    assert torch.equal(a, gen.generate(images, labels, variation=0, seed=3))
    assert not torch.equal(a, gen.generate(images, labels, variation=0, seed=4))


def test_from_config_and_string_options(tiny_sd_img2img):
    options = f"model={tiny_sd_img2img},strength=0.5,steps=3,guidance=1.5,size=48,dtype=float32,device=cpu"
    gen = registry("generators", get_plugin_manager(autoload=True)).get("sd-variation").from_config(
        Config(generator="sd-variation", generator_options=options)
    )
    assert (gen.strength, gen.steps, gen.guidance, gen.size, gen.dtype) == (0.5, 3, 1.5, 48, "float32")
    out = gen.generate(*sources(1, 20, 20), variation=0, seed=0)
    assert tuple(out.shape) == (1, 1, 20, 20)


@pytest.mark.parametrize("option, value", [("strength", "0"), ("strength", "abc"), ("steps", "0"),
                                           ("size", "30"), ("dtype", "float8"), ("device", "tpu")])
def test_rejects_bad_options(tiny_sd_img2img, option, value):
    with pytest.raises(SynthmedError, match=f"sd-variation.*{option}="):
        sd(tiny_sd_img2img, **{option: value})


def test_less_than_one_denoising_step_is_refused(tiny_sd_img2img):
    with pytest.raises(SynthmedError, match=r"steps=2 x strength=0.35 is less than one denoising step.*at least 3"):
        sd(tiny_sd_img2img, steps="2", strength="0.35")


# --- weights that are not here -----------------------------------------------------------------------
def test_offline_without_weights_fails_at_once_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    start = time.monotonic()
    with pytest.raises(SynthmedError) as err:
        sd("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "not on this machine" in message and "HF_HUB_OFFLINE" in message
    assert "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "--generator-options model=/path/to/stable-diffusion-v1-5" in message


def test_a_hub_id_is_taken_from_the_hub_cache_offline_and_keyed_on_its_revision(tiny_sd_img2img, tmp_path, monkeypatch):
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny--sd-img2img"
    shutil.copytree(tiny_sd_img2img, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    gen = sd("tiny/sd-img2img")
    params = gen.output_params()
    assert params["model"] == "tiny/sd-img2img" and params["revision"] == commit
    assert params["weights_sha256"] == sd(tiny_sd_img2img).output_params()["weights_sha256"]  # same files
    out = gen.generate(*sources(1), variation=0, seed=0)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (1, 1, 24, 40)


def test_a_missing_folder_or_a_folder_without_a_pipeline_is_a_clear_error(tmp_path):
    with pytest.raises(SynthmedError, match="is not a folder, nor a hub id.*huggingface-cli download"):
        sd(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthmedError, match="no model_index.json.*huggingface-cli download"):
        sd(tmp_path / "empty")
