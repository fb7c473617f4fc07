"""One fitted generator per run: built, sampled and fitted once, then handed to the policy, Grad-CAM and inspection."""

from __future__ import annotations

import mlflow
import pytest

import synthmed.gradcam.panel
import synthmed.inspection.run
import synthmed.training.run
from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator
from synthmed.hookspecs import hookimpl


class Counting(Generator):
    """A tiny learning generator that records which instance was built, fitted and asked for images."""

    name = "counting-test"
    learns = True
    deterministic = True
    built: list[int] = []
    fitted: list[int] = []
    generated: set[int] = set()

    def __init__(self, shift: str = "0"):
        Counting.built.append(id(self))
        self.shift = int(shift)

    def fit(self, images, labels, *, seed, progress, log):  # noqa: ANN001
        Counting.fitted.append(id(self))
        log({"generator_fit_loss": 0.0}, 0)
        return {"steps": 1}

    def generate(self, images, labels, *, variation, seed):  # noqa: ANN001
        Counting.generated.add(id(self))
        return (255 - images).roll(self.shift + variation, dims=-1)


class CountingPlugin:
    @hookimpl
    def register_generators(self):  # noqa: ANN201
        return [Counting]


@pytest.fixture
def counting_pm(pm):
    pm.register(CountingPlugin(), name="counting-test")
    Counting.built.clear()
    Counting.fitted.clear()
    Counting.generated.clear()
    yield pm
    pm.unregister(name="counting-test")


@pytest.fixture
def spies(monkeypatch):
    """The generator the Grad-CAM panel draws with, and the training sets inspection looks at."""
    seen: dict[str, list] = {"panel": [], "inspected": []}
    build_panels, check_run = synthmed.gradcam.panel.build_panels, synthmed.inspection.run.check_run

    def panel_spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen["panel"].append(id(kwargs["generator"]))
        return build_panels(*args, **kwargs)

    def inspection_spy(train_set, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["inspected"].append(train_set)
        return check_run(train_set, *args, **kwargs)

    monkeypatch.setattr(synthmed.gradcam.panel, "build_panels", panel_spy)
    monkeypatch.setattr(synthmed.training.run, "check_run", inspection_spy)  # where prepare() calls it
    return seen


def run_config(tmp_path, **fields) -> Config:  # noqa: ANN003
    return Config(generator="counting-test", real_frac=0.5, image_size=32, epochs=1, batch_size=16, quiet=True,
                  gradcam=True, inspect=True, log_model=False, register="none", cache_dir=str(tmp_path / "cache"),
                  **fields)


@pytest.mark.slow
def test_a_synthetic_run_builds_and_fits_its_generator_once_for_policy_gradcam_and_inspection(
        counting_pm, spies, tiny_splits, mlflow_uri, tmp_path):
    from synthmed.training import train

    result = train(run_config(tmp_path, policy="synthetic"), splits=tiny_splits, pm=counting_pm)
    assert len(Counting.built) == 1, "the run built its generator more than once"
    (instance,) = Counting.built
    assert Counting.fitted == [instance]
    assert Counting.generated == {instance}  # the policy's variations came from it
    assert spies["panel"] == [instance]  # the Grad-CAM panel drew with the same object
    (inspected,) = spies["inspected"]
    assert bool(inspected.synthetic.any())  # inspection looked at that instance's images
    run = mlflow.get_run(result.run_id)
    assert run.data.params["generator_fit_images"] == str(len(inspected) - int(inspected.synthetic.sum()))
    assert run.data.metrics["generator_fit_from_cache"] == 0.0
    assert any(k.startswith("check_fidelity") for k in run.data.metrics) and "gradcam_p_true_real" in run.data.metrics


@pytest.mark.slow
def test_a_run_whose_policy_makes_no_images_builds_the_panels_generator_once_and_logs_no_fit(
        counting_pm, spies, tiny_splits, mlflow_uri, tmp_path):
    from synthmed.training import train

    result = train(run_config(tmp_path, policy="none"), splits=tiny_splits, pm=counting_pm)
    assert len(Counting.built) == 1 and Counting.fitted == Counting.built
    assert spies["panel"] == Counting.built
    assert "generator_fit_key" not in mlflow.get_run(result.run_id).data.params  # nothing trained on its images


def test_the_synthetic_policy_checks_its_generator_before_data_loading_without_building_one(counting_pm):
    from synthmed.policies.synthetic import SyntheticPolicy

    config = Config(policy="synthetic", generator="counting-test")
    with pytest.raises(SynthmedError, match=r"'counting-test' does not take option\(s\) 'shfit' — accepted: shift"):
        SyntheticPolicy.from_config(config.replace(generator_options="shfit=1"), counting_pm)
    SyntheticPolicy.from_config(config.replace(generator_options="shift=1"), counting_pm)
    assert Counting.built == []  # checked, not built: the run builds its one instance after sampling
