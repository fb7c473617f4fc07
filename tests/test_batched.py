"""Batched simulations: k trained together equal the same k trained alone; fallback; resume."""

from __future__ import annotations

import mlflow
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthmed.config import Config
from synthmed.sweep import sweep
from synthmed.sweep.batched import balanced_groups
from synthmed.tracking.names import TAG_STACK_FALLBACK as TAG_FALLBACK
from synthmed.tracking.names import TAG_STACKED as TAG_BATCHED

BASE = Config(image_size=32, epochs=2, batch_size=16, device="cpu", precision="fp32", experiment="batched",
              quiet=True, real_frac=0.5)


def _children(sweep_id: str, experiment: str) -> dict[tuple[str, str], mlflow.entities.Run]:
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              f"tags.`synthmed.sweep_id` = '{sweep_id}'", max_results=1000)
    return {(r.data.tags["synthmed.cell"], r.data.tags["synthmed.simulation"]): r for r in runs
            if r.info.status == "FINISHED" and r.data.tags.get("synthmed.sweep") != "1"}


_ISOLATED = """
import sys
import torch
torch.set_num_threads(1)
from synthmed.config import Config
from synthmed.sweep import sweep
splits = torch.load(sys.argv[1], weights_only=False)
config = Config(image_size=32, epochs=2, batch_size=16, device="cpu", precision="fp32", quiet=True, real_frac=0.5,
                model=sys.argv[2])
alone = sweep(config.replace(experiment="alone"), simulations=3, splits=splits, parallel_simulations=1)
together = sweep(config.replace(experiment="together"), simulations=3, splits=splits, parallel_simulations=3)
print(alone.sweep_id, together.sweep_id, together.ran)
"""


@pytest.mark.parametrize("model", ["cnn", "vit"])
def test_k_together_equal_k_alone(mlflow_uri, tiny_splits, model, tmp_path):
    """Both sweeps in a fresh interpreter (one thread): the comparison is of the algorithms, untouched
    by whatever global torch state earlier tests left in this process."""
    import os
    import subprocess
    import sys

    import torch

    torch.save(tiny_splits, tmp_path / "splits.pt")
    env = {k: v for k, v in os.environ.items()  # an experiment or run id left by earlier tests must not leak in
           if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(tmp_path / "splits.pt"), model], capture_output=True,
                         text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    alone_id, together_id, ran = out.stdout.split()[-3:]
    assert alone_id == together_id and ran == "3"
    a, b = _children(alone_id, "alone"), _children(together_id, "together")
    assert a.keys() == b.keys() and len(a) == 3
    for key in a:
        assert b[key].data.tags[TAG_BATCHED] == "3"
        assert len({r.data.metrics["train_seconds"] for r in b.values()}) == 1  # the group's one shared time
        assert a[key].data.params["seed"] == b[key].data.params["seed"]
        assert a[key].data.params["optimizer_steps"] == b[key].data.params["optimizer_steps"]
        for name in ("test_cross_entropy", "test_accuracy", "train_loss"):
            # float tolerance: vmap's batched kernels sum in another order than the single model's
            assert b[key].data.metrics[name] == pytest.approx(a[key].data.metrics[name], rel=1e-3, abs=1e-4), name


def test_batchnorm_models_fall_back_with_a_note(mlflow_uri, tiny_splits):
    result = sweep(BASE.replace(model="resnet18", epochs=1), simulations=2, splits=tiny_splits,
                   parallel_simulations=2)
    runs = _children(result.sweep_id, "batched")
    assert len(runs) == 2 and result.failed == []
    for run in runs.values():
        assert "BatchNorm" in run.data.tags[TAG_FALLBACK]
        assert TAG_BATCHED not in run.data.tags


def test_a_killed_batched_sweep_resumes_without_repeating(mlflow_uri, tiny_splits, monkeypatch):
    from synthmed.training import loop

    real_fit, calls = loop.fit_stack, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(loop, "fit_stack", dies_on_second_batch)
    config = BASE.replace(epochs=1)
    with pytest.raises(KeyboardInterrupt):
        sweep(config, simulations=4, splits=tiny_splits, parallel_simulations=2)
    monkeypatch.setattr(loop, "fit_stack", real_fit)
    resumed = sweep(config, simulations=4, splits=tiny_splits, parallel_simulations=2)
    assert resumed.skipped == 2 and resumed.ran == 2 and resumed.failed == []
    assert len(_children(resumed.sweep_id, "batched")) == 4


@given(n=st.integers(0, 300), parallel=st.integers(1, 64))
def test_balanced_groups_keep_every_task_once_in_order_in_as_few_near_equal_groups_as_fit(n, parallel):
    groups = balanced_groups(list(range(n)), parallel)
    assert [t for g in groups for t in g] == list(range(n))
    assert len(groups) == -(-n // parallel)
    assert all(0 < len(g) <= parallel for g in groups)
    assert max(map(len, groups), default=0) - min(map(len, groups), default=0) <= 1


def test_a_cell_of_100_at_32_runs_as_four_groups_of_25():
    assert [len(g) for g in balanced_groups(list(range(100)), 32)] == [25, 25, 25, 25]
