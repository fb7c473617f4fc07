"""Model factories: a contract every registered model passes (synthmed.testing's ``check_model_factory``),
then the built-ins' specifics."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.plugins import get_plugin_manager, registry
from synthmed.testing import MODEL_RULES, ContractCase

MODEL_NAMES = registry("models", get_plugin_manager()).names()  # installed third-party ones too
B, C = 4, 4


def make(pm, name: str, size: int, **config) -> tuple[object, nn.Module]:
    factory = registry("models", pm).get(name)()
    return factory, factory.create(C, size, Config(model=name, image_size=size, **config))


# --- contract: synthmed.testing's checks, for every registered model ---------------------------
@pytest.mark.parametrize("rule", MODEL_RULES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_contract(pm, name, rule):
    ContractCase(registry("models", pm).get(name), rule)()


def test_builtin_models_are_registered(pm):
    names = registry("models", pm).names()
    assert {"cnn", "resnet18", "vit"} <= set(names)
    assert registry("models", pm).get("resnet18").supports_pretrained
    assert not registry("models", pm).get("cnn").supports_pretrained


# --- the basic CNN -----------------------------------------------------------------------------
def test_cnn_is_the_thesis_architecture(pm):
    _, model = make(pm, "cnn", 128)
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(nn.Conv2d) == 2 and kinds.count(nn.MaxPool2d) == 2
    assert kinds.count(nn.Linear) == 3  # two hidden layers and the output layer
    assert kinds.count(nn.ReLU) == 4  # after each conv and each hidden layer
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert convs[0].in_channels == 1
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 64 * 32 * 32 and linears[-1].out_features == C


def test_cnn_takes_sizes_not_divisible_by_four(pm):
    _, model = make(pm, "cnn", 30)
    assert model(torch.rand(2, 1, 30, 30)).shape == (2, C)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(8, 40), batch=st.integers(1, 5), seed=st.integers(0, 2**31), black=st.floats(0, 1),
       channels_last=st.booleans())
def test_cnn_training_forward_is_the_module_to_the_last_bit(size, batch, seed, black, channels_last):
    """Pool-then-ReLU gives the module's logits and every gradient exactly, also on flat black
    regions, where a window's values tie (the conv gives its bias there)."""
    torch.manual_seed(seed)
    factory, model = make(get_plugin_manager(), "cnn", size)
    x = torch.rand(batch, 1, size, size) * (torch.rand(batch, 1, size, size) >= black)  # (B, 1, S, S), part black
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, C, (batch,))
    grads = []
    for forward in (model, factory.training_forward(model)):
        model.zero_grad(set_to_none=True)
        logits = forward(x)
        nn.functional.cross_entropy(logits, y).backward()
        grads.append([logits.detach()] + [p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_models_train_as_they_evaluate_unless_their_factory_says(pm):
    """The default training forward is the module itself."""
    from synthmed.models.base import ModelFactory

    class Plain(ModelFactory):
        name = "plain"

        def create(self, num_classes, image_size, config):
            return nn.Linear(1, num_classes)

    model = Plain().create(C, 8, Config())
    assert Plain().training_forward(model) is model


def test_cnn_gradcam_layer_is_the_second_conv_relu(pm):
    factory, model = make(pm, "cnn", 32)
    assert factory.gradcam_target_layers(model) == [model.block2.relu]


def test_cnn_rejects_pretrained(pm):
    with pytest.raises(SynthmedError, match="pretrained=false"):
        make(pm, "cnn", 32, pretrained=True)


# --- timm models -------------------------------------------------------------------------------
def test_vit_needs_image_size_multiple_of_patch(pm):
    with pytest.raises(SynthmedError, match=r"image_size=100 .* use 96 or 112"):
        make(pm, "vit", 100)


def test_vit_reshape_transform_drops_prefix_tokens(pm):
    factory, model = make(pm, "vit", 64)
    tokens = torch.rand(B, model.num_prefix_tokens + 16, 192)  # 64 / 16 = 4 → 4 x 4 patches
    out = factory.gradcam_reshape_transform(model)(tokens)
    assert out.shape == (B, 192, 4, 4)
    assert torch.equal(out[:, :, 0, 1], tokens[:, model.num_prefix_tokens + 1, :])


@pytest.mark.parametrize("name", ["resnet18", "vit"])
def test_pretrained_offline_without_weights_fails_fast(pm, name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.monotonic()
    with pytest.raises(SynthmedError, match=r"--weights PATH.*pretrained=false"):
        make(pm, name, 32, pretrained=True)
    assert time.monotonic() - start < 5


def test_missing_weights_file_is_named(pm, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(SynthmedError, match="nope.pth"):
        make(pm, "resnet18", 32, pretrained=True, weights=str(missing))


def test_weights_without_pretrained_is_an_error(pm, tmp_path):
    with pytest.raises(SynthmedError, match="--pretrained"):
        make(pm, "resnet18", 32, weights=str(tmp_path / "w.pth"))


def test_resnet18_loads_a_3_channel_imagenet_file(pm, tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)  # 3 channels, 1000 classes
    _, model = make(pm, "resnet18", 32, pretrained=True, weights=str(path))
    saved = torch.load(path)
    # timm's adapt_input_conv: a 1-channel stem is the sum over the RGB filters
    assert torch.allclose(model.conv1.weight, saved["conv1.weight"].sum(dim=1, keepdim=True))
    for key, value in model.state_dict().items():
        if key not in ("conv1.weight", "fc.weight", "fc.bias"):
            assert torch.equal(value, saved[key]), key
    assert model.fc.weight.shape == (C, 512)  # a fresh head for our classes


def test_resnet18_loads_a_1_channel_file_with_its_head(pm, tmp_path):
    import timm

    path = tmp_path / "resnet18-1ch.pth"
    torch.save(timm.create_model("resnet18", in_chans=1, num_classes=C).state_dict(), path)
    _, model = make(pm, "resnet18", 32, pretrained=True, weights=str(path))
    saved = torch.load(path)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_vit_loads_a_224_pixel_file_at_another_size(pm, tmp_path):
    import timm

    path = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), path)
    _, model = make(pm, "vit", 32, pretrained=True, weights=str(path))
    saved = torch.load(path)
    assert torch.allclose(model.patch_embed.proj.weight, saved["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert model.pos_embed.shape == (1, 1 + 2 * 2, 192)  # resampled to a 2 x 2 patch grid
    assert torch.equal(model.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])


def test_file_of_another_architecture_is_rejected(pm, tmp_path):
    import timm

    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(SynthmedError, match="resnet34.pth"):
        make(pm, "resnet18", 32, pretrained=True, weights=str(path))


def test_pretrained_offline_uses_weights_already_in_the_hub_cache(pm, tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    snapshot = tmp_path / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("abc123")
    state = timm.create_model("resnet18").state_dict()
    save_file(state, str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _, model = make(pm, "resnet18", 32, pretrained=True)
    assert torch.equal(model.layer4[-1].conv2.weight, state["layer4.1.conv2.weight"])
