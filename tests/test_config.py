"""Config: string coercion (mlflow -P values), validation errors that name field, value and range."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthmed.config import Config
from synthmed.errors import SynthmedError


def test_defaults_roundtrip_yaml(tmp_path):
    cfg = Config(real_frac=0.3, policy="synthetic", epochs=2)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert Config.from_yaml(path) == cfg


def test_strings_are_coerced_like_mlflow_params():
    cfg = Config.from_mapping({"real_frac": "0.3", "epochs": "2", "pretrained": "true", "data_dir": "", "lr": "1e-3"})
    assert cfg.real_frac == 0.3 and cfg.epochs == 2 and cfg.pretrained is True
    assert cfg.data_dir is None and cfg.lr == 1e-3


@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.1, float("nan"), "nan", "inf"])
def test_bad_real_frac_names_field_value_and_range(value):
    with pytest.raises(SynthmedError) as exc:
        Config.from_mapping({"real_frac": value})
    msg = str(exc.value)
    assert "real_frac" in msg
    assert "finite" in msg or "allowed: > 0.0 and <= 1.0" in msg


def test_unknown_key_lists_allowed():
    with pytest.raises(SynthmedError, match="unknown config key 'realfrac'.*real_frac"):
        Config.from_mapping({"realfrac": 0.3})


def test_bad_types_and_choices():
    with pytest.raises(SynthmedError, match="epochs='two' is not a valid int"):
        Config.from_mapping({"epochs": "two"})
    with pytest.raises(SynthmedError, match="mix='both' is not allowed — choose one of append, replace"):
        Config(mix="both")
    with pytest.raises(SynthmedError, match="pretrained='maybe'"):
        Config.from_mapping({"pretrained": "maybe"})
    with pytest.raises(SynthmedError, match="patience=3 needs a validation part"):
        Config(patience=3, val_frac=0)
    with pytest.raises(SynthmedError, match="protocol=thesis trains a fixed number of epochs"):
        Config(patience=3, protocol="thesis")


def test_registered_model_name():
    assert Config(model="vit").registered_model_name == "synthmed-alzheimer_mri-vit"
    assert Config(register="none").registered_model_name is None
    assert Config(register="mine").registered_model_name == "mine"


def test_generator_options_parse():
    assert Config(generator_options="model=gpt-image-1, size=1024x1024").generator_params() == {
        "model": "gpt-image-1", "size": "1024x1024"}
    assert Config(generator_options=r"prompt=a brain MRI\, axial,n=2").generator_params() == {
        "prompt": "a brain MRI, axial", "n": "2"}
    with pytest.raises(SynthmedError, match="key=value"):
        Config(generator_options="oops").generator_params()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_real_frac_accepted_iff_in_range(x):
    ok = math.isfinite(x) and 0 < x <= 1
    if ok:
        assert Config(real_frac=x).real_frac == x
    else:
        with pytest.raises(SynthmedError, match="real_frac"):
            Config(real_frac=x)


@given(st.integers(min_value=-5, max_value=5))
def test_epochs_validation(n):
    if n >= 1:
        assert Config.from_mapping({"epochs": str(n)}).epochs == n
    else:
        with pytest.raises(SynthmedError, match=f"epochs={n}"):
            Config.from_mapping({"epochs": str(n)})


def test_parse_bool_and_options_roundtrip():
    from synthmed.config import format_options, parse_bool, parse_options

    assert parse_bool("Yes") is True and parse_bool("off") is False and parse_bool(True) is True
    with pytest.raises(ValueError):
        parse_bool("maybe")
    opts = {"prompt": "axial slice, brain", "n": "2"}
    assert parse_options(format_options(opts), "x") == opts
    assert format_options({}) is None
