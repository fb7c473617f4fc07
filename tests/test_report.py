"""Sweep reports rebuilt from MLflow alone; the `sweep` and `report` commands on the real data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from synthmed.cli import main as synthmed_cli
from synthmed.config import Config
from synthmed.sweep.report import load_sweep, publish
from synthmed.sweep import sweep
from test_sweep import FakeTrain  # tests/ is on sys.path (pytest rootdir conftest)

FIGURES = {"distribution_cnn.png", "median_vs_real_frac_cnn.png", "real_scan_equivalent_cnn.png"}


def _artifacts(run_id: str, path: str = "report") -> set[str]:
    import mlflow

    client = mlflow.MlflowClient()
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture
def fake_sweep(mlflow_uri, monkeypatch, tiny_splits):
    monkeypatch.setattr("synthmed.training.train", FakeTrain())
    config = Config(image_size=32, epochs=1, device="cpu", experiment="sweeps", quiet=True, budget="steps")
    return sweep(config, policies="none,basic", real_fracs="0.5,1.0", simulations=4, splits=tiny_splits)


def test_publish_logs_tables_figures_and_report(fake_sweep, tmp_path):
    expected = {f"report/{name}" for name in ("summary.csv", "pairs.csv", "equivalence.csv", "report.md", "report.html")}
    expected |= {f"report/figures/{name}" for name in FIGURES}
    assert _artifacts(fake_sweep.parent_run_id) == expected
    published = publish(fake_sweep.parent_run_id, output=tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in (out / "figures").iterdir()} == FIGURES
    md = (out / "report.md").read_text()
    assert "| cnn | basic | 0.5 | 4 |" in md and "basic vs none at 0.5" in md and "](figures/distribution_cnn.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html and "*" not in html
    assert "Provenance: generator none used" in md and "budget steps" in md and "device cpu" in md
    assert "## Real-scan equivalent" in md and "50% real + basic ≈" in md and "100% real + basic ≈" in md
    assert list(published.summary["n"]) == [4, 4, 4, 4]
    assert len(published.pairs) == 4  # basic vs none at 0.5 and 1; 0.5 vs 1 for none and basic
    pairs = published.pairs
    assert {"test_cross_entropy.hl", "test_cross_entropy.hl_low", "test_cross_entropy.p_holm",
            "test_cross_entropy.rank_biserial"} <= set(pairs.columns)
    assert (pairs["test_cross_entropy.p_holm"] >= pairs["test_cross_entropy.p_value"]).all()
    metrics = __import__("mlflow").get_run(fake_sweep.parent_run_id).data.metrics
    assert "cnn.basic.0.5.real_scan_equivalent.beyond" in metrics and "cnn.basic_vs_none.0.5.test_cross_entropy.p_holm" in metrics


def test_load_sweep_keeps_the_newest_duplicate_and_counts_missing(fake_sweep):
    import mlflow

    client = mlflow.MlflowClient()
    data = load_sweep(fake_sweep.parent_run_id)
    assert len(data.results) == 16 and data.failed == 0
    first = data.results.iloc[0]
    # a second finished run of the same (cell, simulation), and a failed one: newest finished wins
    parent = client.get_run(fake_sweep.parent_run_id)
    source = client.get_run(first.run_id)
    dup = client.create_run(parent.info.experiment_id, tags=source.data.tags).info.run_id
    client.log_metric(dup, "test_cross_entropy", 9.0)
    client.set_terminated(dup)
    data = load_sweep(fake_sweep.parent_run_id)
    assert len(data.results) == 16 and 9.0 in set(data.results.test_cross_entropy)
    client.set_tag(fake_sweep.parent_run_id, "synthmed.simulations", "5")  # as if N were raised to 5
    assert load_sweep(fake_sweep.parent_run_id).failed == 4


def test_report_of_a_plain_run_is_a_clean_error(mlflow_uri):
    import mlflow

    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    result = CliRunner().invoke(synthmed_cli, ["report", run_id])
    assert result.exit_code == 1 and "not a sweep's parent run" in result.output


def test_sweep_command_rejects_swept_fields(mlflow_uri):
    result = CliRunner().invoke(synthmed_cli, ["sweep", "--set", "real_frac=0.5"])
    assert result.exit_code == 2 and "--real-fracs" in result.output
    result = CliRunner().invoke(synthmed_cli, ["sweep", "--set", "nope=1", "--policies", "none"])
    assert result.exit_code == 1 and "unknown config key 'nope'" in result.output


@pytest.mark.parametrize("flags, gradcam, log_model", [
    ([], True, False),  # the panel is on (elastic is local), the model off: costly and not summarised
    (["--gradcam", "--log-model", "true"], True, True),
    (["--set", "gradcam=true", "--set", "log_model=1"], True, True),
    (["--gradcam", "auto"], True, False),
    (["--no-gradcam"], False, False),
    (["--gradcam", "false"], False, False),
    (["--set", "gradcam=no"], False, False),
])
def test_sweep_command_logging_defaults_and_flags(mlflow_uri, monkeypatch, tiny_splits, flags, gradcam, log_model):
    fake = FakeTrain()
    monkeypatch.setattr("synthmed.training.train", fake)
    monkeypatch.setattr("synthmed.data.loading.load_splits", lambda config, pm=None: tiny_splits)
    result = CliRunner().invoke(synthmed_cli, ["sweep", "--policies", "none", "--real-fracs", "1", "--simulations", "1",
                                                "--quiet", *flags])
    assert result.exit_code == 0, result.output
    assert "ran 1, found 0 finished, 0 failed" in result.output and "cnn        none" in result.output
    assert (fake.configs[0].gradcam, fake.configs[0].log_model) == (gradcam, log_model)


# --- the real data, end to end -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.data
def test_real_sweep_interrupted_resumed_and_reported(mlflow_uri, real_data_dir, tmp_path, monkeypatch):
    """2 policies x 2 fractions x 3 simulations x 1 epoch: kill after 5, resume, rebuild the report."""
    import mlflow

    from synthmed import training

    args = ["--models", "cnn", "--policies", "none,synthetic", "--real-fracs", "0.3,1.0", "--simulations", "3",
            "--seed", "0", "--generator", "elastic", "--epochs", "1", "--budget", "steps", "--image-size", "16",
            "--batch-size", "64",
            "--data-dir", str(real_data_dir), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
            "--experiment", "chapter7", "--quiet"]
    real_train, calls = training.train, Counter()

    def dies_at_sixth(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # Ctrl-C between two simulations
        return real_train(*a, **kw)

    monkeypatch.setattr(training, "train", dies_at_sixth)
    first = CliRunner().invoke(synthmed_cli, ["sweep", *args])
    assert first.exit_code == 1 and "Aborted" in first.output and calls["n"] == 6
    monkeypatch.setattr(training, "train", real_train)

    second = CliRunner().invoke(synthmed_cli, ["sweep", *args])
    assert second.exit_code == 0, second.output
    assert "ran 4, found 5 finished, 0 failed" in second.output  # synthetic@1.0 is none@1.0: trained once

    client = mlflow.MlflowClient()
    experiment_id = client.get_experiment_by_name("chapter7").experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`synthmed.sweep` = '1'")
    sweep_id = parent.data.tags["synthmed.sweep_id"]
    children = [r for r in client.search_runs([experiment_id], f"tags.`synthmed.sweep_id` = '{sweep_id}'")
                if r.info.run_id != parent.info.run_id]
    finished = Counter((r.data.tags["synthmed.cell"], r.data.tags["synthmed.simulation"])
                       for r in children if r.info.status == "FINISHED")
    assert len(children) == 9 and len(finished) == 9 and set(finished.values()) == {1}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    seeds = {}
    for r in children:  # paired design: one seed per simulation index across all cells
        seeds.setdefault(r.data.tags["synthmed.simulation"], set()).add(r.data.params["seed"])
        assert r.data.params["gradcam"] == "True" and r.data.params["register"] == "None"
        assert r.data.params["log_model"] == "False"
        assert "gradcam_p_true_synthetic" in r.data.metrics  # every simulation keeps its Grad-CAM panel
    assert all(len(s) == 1 for s in seeds.values()) and len(seeds) == 3
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics["cnn.synthetic.0.3.n"] == 3 and metrics["simulations_missing"] == 0
    assert "cnn.synthetic_vs_none.0.3.test_cross_entropy.p_value" in metrics
    assert "cnn.synthetic.0.3.test_cross_entropy.median" in metrics

    # `synthmed report RUN_ID` rebuilds everything from MLflow alone
    out = tmp_path / "rebuilt"
    result = CliRunner().invoke(synthmed_cli, ["report", parent.info.run_id, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 simulations finished, 0 missing" in result.output
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "summary.csv", "pairs.csv", "figures"}
    assert "| cnn | synthetic | 0.3 | 3 |" in Path(out / "report.md").read_text()
    assert _artifacts(parent.info.run_id) >= {"report/report.html", *(f"report/figures/{f}" for f in FIGURES)}


def test_tiny_p_values_are_not_printed_as_zero():
    from synthmed.sweep.render import _p_value

    assert _p_value(3e-7) == "< 0.0001"
    assert _p_value(0.0123) == "0.0123"
    assert _p_value(float("nan")) == "" and _p_value(None) == ""
