"""Sweeps: paired seeds, the MLflow run tree, resuming, failures, executors (local, processes, Ray)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.sweep import SweepSpec, simulation_seed, sweep
from synthmed.training import TrainResult

BASE = Config(image_size=32, epochs=1, batch_size=16, device="cpu", experiment="sweeps", quiet=True)


def _spec(**kw) -> SweepSpec:
    values = dict(base=BASE, models=("cnn",), policies=("none", "synthetic"), real_fracs=(0.3, 0.6), simulations=3)
    return SweepSpec(**{**values, **kw})


# --- a stand-in for train(): real MLflow child runs, metrics a function of (policy, frac, seed) -------
class FakeTrain:
    """Logs a child run like train() does; ``fail`` maps call number → exception to raise."""

    def __init__(self, fail: dict[int, BaseException] | None = None, open_run_first: bool = True):
        self.calls = 0
        self.fail = fail or {}
        self.open_run_first = open_run_first
        self.configs: list[Config] = []

    def __call__(self, config, *, splits=None, pm=None, parent_run_id=None, tags=None, run_name=None):
        import mlflow

        self.calls += 1
        self.configs.append(config)
        client = mlflow.MlflowClient()
        error = self.fail.get(self.calls)
        if error is not None and not self.open_run_first:
            raise error
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        run = client.create_run(experiment_id, run_name=run_name, tags={**tags, "mlflow.parentRunId": parent_run_id})
        run_id = run.info.run_id
        if isinstance(error, KeyboardInterrupt):
            raise error  # killed mid-run: the child stays RUNNING
        if error is not None:
            client.set_tag(run_id, "synthmed.error", repr(error))
            client.set_terminated(run_id, "FAILED")
            raise error
        h = int(hashlib.sha256(f"{config.policy}{config.real_frac}{config.seed}".encode()).hexdigest()[:6], 16)
        metrics = {"test_cross_entropy": 1.0 - 0.3 * config.real_frac + (h % 1000) / 10000,
                   "test_accuracy": 0.5 + (h % 100) / 1000, "test_macro_f1": 0.4}
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")
        return TrainResult(run_id, metrics, None, None)


@pytest.fixture
def fake_train(monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr("synthmed.training.train", fake)
    return fake


def _children(sweep_id: str):
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(BASE.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`synthmed.sweep_id` = '{sweep_id}'", max_results=1000)
    return [r for r in runs if r.data.tags.get("synthmed.sweep") != "1"]


def _run(**kw):
    values = dict(policies="none,synthetic", real_fracs="0.3,0.6", simulations=3, seed=0)
    return sweep(BASE, **{**values, **kw})


# --- the spec -----------------------------------------------------------------------------------------
def test_simulation_seed_depends_on_sweep_seed_and_index_only():
    seeds = [simulation_seed(0, i) for i in range(50)]
    assert seeds == [simulation_seed(0, i) for i in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**31 for s in seeds)
    assert simulation_seed(1, 0) != simulation_seed(0, 0)


def test_paired_design_same_seed_in_every_cell():
    tasks = _spec().tasks()
    assert len(tasks) == 12
    by_sim: dict[int, set[int]] = {}
    for t in tasks:
        by_sim.setdefault(t.simulation, set()).add(t.config.seed)
        assert t.config.registered_model_name is None and not t.config.gradcam and t.config.quiet
        assert not t.config.log_model
        assert (t.config.model, t.config.policy, t.config.real_frac) == (t.cell.model, t.cell.policy, t.cell.real_frac)
        assert t.tags["synthmed.cell"] == t.cell.label and t.tags["synthmed.simulation"] == str(t.simulation)
    assert all(len(seeds) == 1 for seeds in by_sim.values())
    assert [t.simulation for t in tasks[:4]] == [0, 0, 0, 0]  # simulation-major: interrupted sweeps stay balanced
    assert tasks[0].tags["synthmed.cell"] == "cnn|none|0.3" and tasks[1].tags["synthmed.real_frac"] == "0.6"


def test_sweep_id_is_a_hash_of_what_changes_results():
    spec = _spec()
    assert spec.sweep_id == _spec().sweep_id
    assert spec.sweep_id == _spec(simulations=50).sweep_id  # more simulations extend the same sweep
    assert spec.sweep_id == _spec(base=BASE.replace(quiet=False, data_dir="/elsewhere", device="cuda")).sweep_id
    assert spec.sweep_id != _spec(base=BASE.replace(epochs=2)).sweep_id
    assert spec.sweep_id != _spec(seed=1).sweep_id
    assert spec.sweep_id != _spec(policies=("none",)).sweep_id
    assert spec.sweep_id != _spec(base=BASE.replace(generator_options="size=256")).sweep_id
    with pytest.raises(SynthmedError, match="must not carry secrets"):  # so no key can reach the spec's params
        BASE.replace(generator_options="api_key=sk-123,size=256")


@pytest.mark.parametrize("kw, match", [
    (dict(policies=()), "policies is empty"),
    (dict(policies=("none", "none")), "twice"),
    (dict(real_fracs=(0.0,)), "real_frac"),
    (dict(simulations=0), "simulations"),
])
def test_bad_spec_is_a_user_error(kw, match):
    with pytest.raises(SynthmedError, match=match):
        _spec(**kw)


def test_unknown_names_fail_before_any_run(mlflow_uri, fake_train, tiny_splits):
    with pytest.raises(SynthmedError, match="unknown polic.*'nope'"):
        _run(policies="none,nope", splits=tiny_splits)
    with pytest.raises(SynthmedError, match="executor"):
        _run(executor="slurm", splits=tiny_splits)
    assert fake_train.calls == 0


# --- the run tree, resuming, failures (fake train: fast) ----------------------------------------------
def test_run_tree_and_summary(mlflow_uri, fake_train, tiny_splits):
    import mlflow

    result = _run(splits=tiny_splits)
    assert (result.ran, result.skipped, result.failed) == (12, 0, [])
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["synthmed.sweep"] == "1"
    assert parent.data.params["policies"] == "none,synthetic" and parent.data.params["real_fracs"] == "0.3,0.6"
    children = _children(result.sweep_id)
    assert len(children) == 12
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {result.parent_run_id}
    assert "mlflow.parentRunId" not in parent.data.tags  # one level of nesting
    assert Counter(c.data.tags["synthmed.cell"] for c in children) == {
        "cnn|none|0.3": 3, "cnn|none|0.6": 3, "cnn|synthetic|0.3": 3, "cnn|synthetic|0.6": 3}
    metrics = parent.data.metrics
    assert metrics["cnn.synthetic.0.3.n"] == 3
    for key in ("cnn.synthetic.0.3.test_cross_entropy.median", "cnn.none.0.6.test_accuracy.ci_high",
                "cnn.synthetic_vs_none.0.3.test_cross_entropy.p_value"):
        assert key in metrics
    assert set(result.summary["n"]) == {3}
    for config in fake_train.configs:
        assert config.registered_model_name is None and config.log_model is False
        assert config.gradcam is True  # every run keeps its Grad-CAM panel (the generator, elastic, is local)
    assert len({(c.seed, c.real_frac) for c in fake_train.configs}) == 6  # 3 simulations x 2 fractions


def test_a_learning_generator_s_panel_goes_only_where_a_synthetic_run_fits_it_anyway():
    tasks = _spec(policies=("none", "oversample", "synthetic"), real_fracs=(0.3, 0.6, 1.0), simulations=1,
                  gradcam=True, generator_learns=True).tasks()
    panels = {t.cell.label: t.config.gradcam for t in tasks}
    assert panels == {"cnn|none|0.3": True, "cnn|none|0.6": True, "cnn|none|1": False,
                      "cnn|oversample|0.3": True, "cnn|oversample|0.6": True,
                      "cnn|synthetic|0.3": True, "cnn|synthetic|0.6": True}  # x|1 share none|1's runs
    skipped = [t for t in tasks if "synthmed.gradcam_skipped" in t.tags]
    assert [t.cell.label for t in skipped] == ["cnn|none|1"] and "fit" in skipped[0].tags["synthmed.gradcam_skipped"]
    same = _spec(policies=("none", "synthetic"), real_fracs=(0.3, 1.0), simulations=1, gradcam=True).tasks()
    assert all(t.config.gradcam and "synthmed.gradcam_skipped" not in t.tags for t in same)  # elastic: no fit
    assert not any(t.config.gradcam for t in _spec(gradcam=False, generator_learns=True).tasks())


@pytest.mark.parametrize("external,asked,logged", [(False, None, True), (True, None, False), (True, True, True),
                                                   (False, False, False)])
def test_sweep_grad_cam_is_on_unless_the_generator_would_pay_in_every_run(mlflow_uri, fake_train, tiny_splits,
                                                                          external, asked, logged):
    from synthmed.generators.base import Generator
    from synthmed import hookimpl
    from synthmed.plugins import get_plugin_manager

    class Away(Generator):
        name = "away-test"
        sends_data_off_machine = external

        def generate(self, images, labels, *, variation, seed):
            return images

    class Plugin:
        @hookimpl
        def register_generators(self):
            return [Away]

    pm = get_plugin_manager()
    pm.register(Plugin())
    sweep(BASE.replace(generator="away-test", allow_external=True), policies="none", real_fracs="1",
          simulations=1, gradcam=asked, splits=tiny_splits, pm=pm)
    assert [c.gradcam for c in fake_train.configs] == [logged]


def test_interrupted_sweep_resumes_without_duplicates(mlflow_uri, monkeypatch, tiny_splits):
    import mlflow

    monkeypatch.setattr("synthmed.training.train", FakeTrain(fail={6: KeyboardInterrupt()}))
    with pytest.raises(KeyboardInterrupt):
        _run(splits=tiny_splits)
    client = mlflow.MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name(BASE.experiment).experiment_id],
                                   "tags.`synthmed.sweep` = '1'")
    assert parent.info.status == "KILLED"

    resumed = FakeTrain()
    monkeypatch.setattr("synthmed.training.train", resumed)
    result = _run(splits=tiny_splits)
    assert (result.ran, result.skipped, resumed.calls) == (7, 5, 7)
    assert result.parent_run_id == parent.info.run_id
    children = _children(result.sweep_id)
    finished = Counter((c.data.tags["synthmed.cell"], c.data.tags["synthmed.simulation"])
                       for c in children if c.info.status == "FINISHED")
    assert len(finished) == 12 and set(finished.values()) == {1}
    killed = [c for c in children if c.info.status == "KILLED"]  # the one interrupted mid-run
    assert len(killed) == 1 and "interrupted" in killed[0].data.tags["synthmed.error"]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_failed_simulation_is_recorded_and_retried(mlflow_uri, monkeypatch, tiny_splits):
    import mlflow

    monkeypatch.setattr("synthmed.training.train", FakeTrain(fail={2: RuntimeError("out of memory")}))
    result = _run(splits=tiny_splits)
    assert result.ran == 12 and len(result.failed) == 1
    failed = mlflow.MlflowClient().get_run(result.failed[0])
    assert failed.info.status == "FAILED" and "out of memory" in failed.data.tags["synthmed.error"]
    assert sorted(result.summary["n"]) == [2, 3, 3, 3]
    assert mlflow.MlflowClient().get_run(result.parent_run_id).data.metrics["simulations_missing"] == 1

    monkeypatch.setattr("synthmed.training.train", FakeTrain())
    again = _run(splits=tiny_splits)
    assert (again.ran, again.failed) == (1, []) and set(again.summary["n"]) == {3}


def test_failure_before_train_opens_a_run_is_recorded(mlflow_uri, monkeypatch, tiny_splits):
    import mlflow

    monkeypatch.setattr("synthmed.training.train", FakeTrain(fail={1: ValueError("bad"), 2: ValueError("bad")},
                                                             open_run_first=False))
    result = _run(splits=tiny_splits, simulations=1)
    assert len(result.failed) == 2
    client = mlflow.MlflowClient()
    run = client.get_run(result.failed[0])
    assert run.info.status == "FAILED" and run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    local = client.download_artifacts(run.info.run_id, "error.txt")
    assert "ValueError: bad" in open(local).read()


def test_fail_fast_stops_and_marks_the_parent(mlflow_uri, monkeypatch, tiny_splits):
    import mlflow

    from synthmed.sweep.executors import SweepError

    fake = FakeTrain(fail={2: RuntimeError("boom")})
    monkeypatch.setattr("synthmed.training.train", fake)
    with pytest.raises(SweepError, match="boom") as info:
        _run(splits=tiny_splits, fail_fast=True)
    assert fake.calls == 2 and "rerun the same command" in str(info.value)
    client = mlflow.MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name(BASE.experiment).experiment_id],
                                   "tags.`synthmed.sweep` = '1'")
    assert parent.info.status == "FAILED"


def test_more_simulations_extend_the_sweep(mlflow_uri, fake_train, tiny_splits):
    first = _run(splits=tiny_splits, simulations=2)
    second = _run(splits=tiny_splits, simulations=3)
    assert second.parent_run_id == first.parent_run_id and (second.ran, second.skipped) == (4, 8)
    assert set(second.summary["n"]) == {3}


def test_mlflow_run_launcher_becomes_the_parent(mlflow_uri, monkeypatch, fake_train, tiny_splits):
    import mlflow

    client = mlflow.MlflowClient()
    launcher = client.create_run(client.create_experiment("project")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher)
    result = _run(splits=tiny_splits, simulations=1)
    assert result.parent_run_id == launcher
    children = client.search_runs([client.get_run(launcher).info.experiment_id],
                                  f"tags.`synthmed.sweep_id` = '{result.sweep_id}' and tags.`synthmed.simulation` = '0'")
    assert len(children) == 4 and {c.data.tags["mlflow.parentRunId"] for c in children} == {launcher}


# --- real training: executors agree -------------------------------------------------------------------
def _real_child_runs(sweep_id: str, experiment: str) -> dict[tuple[str, str], tuple[str, dict[str, float]]]:
    import mlflow

    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              f"tags.`synthmed.sweep_id` = '{sweep_id}'")
    return {(r.data.tags["synthmed.cell"], r.data.tags["synthmed.simulation"]):
            (r.data.params["seed"], r.data.metrics) for r in runs
            if r.info.status == "FINISHED" and r.data.tags.get("synthmed.sweep") != "1"}


def _assert_same_runs(a, b):
    assert a.keys() == b.keys() and len(a) == 4
    for key in a:
        assert a[key][0] == b[key][0]  # same seed
        assert a[key][1]["test_cross_entropy"] == pytest.approx(b[key][1]["test_cross_entropy"], rel=1e-4)


@pytest.mark.slow
def test_worker_processes_match_in_process(mlflow_uri, tiny_splits):
    config = BASE.replace(experiment="inprocess")
    local = sweep(config, policies="none", real_fracs="0.5,1.0", simulations=2, splits=tiny_splits)
    procs = sweep(config.replace(experiment="processes"), policies="none", real_fracs="0.5,1.0", simulations=2,
                  splits=tiny_splits, workers=2)
    assert local.sweep_id == procs.sweep_id
    _assert_same_runs(_real_child_runs(local.sweep_id, "inprocess"), _real_child_runs(procs.sweep_id, "processes"))


@pytest.mark.slow
def test_ray_executor_matches_local(mlflow_uri, tiny_splits):
    ray = pytest.importorskip("ray")
    config = BASE.replace(experiment="local")
    local = sweep(config, policies="none", real_fracs="0.5,1.0", simulations=2, splits=tiny_splits)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = sweep(config.replace(experiment="ray"), policies="none", real_fracs="0.5,1.0", simulations=2,
                       splits=tiny_splits, executor="ray")
    finally:
        ray.shutdown()
    assert on_ray.sweep_id == local.sweep_id and (on_ray.ran, on_ray.failed) == (4, [])
    _assert_same_runs(_real_child_runs(local.sweep_id, "local"), _real_child_runs(on_ray.sweep_id, "ray"))


def test_cells_identical_by_construction_are_trained_once(mlflow_uri, fake_train, tiny_splits):
    """synthetic and oversample at real fraction 1.0 (synth_frac unset) add no image: none@1.0's runs stand for them."""
    import json

    import mlflow

    result = sweep(BASE, policies="none,synthetic,oversample", real_fracs="0.5,1.0", simulations=2, seed=0,
                   splits=tiny_splits)
    assert result.ran == 2 * 4 and result.skipped == 0  # 6 cells, 2 of them shared
    parent = mlflow.MlflowClient().get_run(result.parent_run_id)
    shared = json.loads(parent.data.tags["synthmed.shared_cells"])
    assert shared == {"cnn|synthetic|1": "cnn|none|1", "cnn|oversample|1": "cnn|none|1"}
    data = __import__("synthmed.sweep.results", fromlist=["load_sweep"]).load_sweep(result.parent_run_id)
    rows = data.results.set_index(["policy", "real_frac", "simulation"])
    assert data.failed == 0 and len(data.results) == 12
    for policy in ("synthetic", "oversample"):
        for sim in (0, 1):
            assert rows.loc[(policy, 1.0, sim), "run_id"] == rows.loc[("none", 1.0, sim), "run_id"]
    assert not {(c.policy, c.real_frac) for c in fake_train.configs} & {("synthetic", 1.0), ("oversample", 1.0)}


@pytest.mark.parametrize("other_process_won", [True, False])
def test_tagging_the_experiment_kind_survives_losing_the_race_and_only_that(mlflow_uri, monkeypatch, other_process_won):
    """Two worker processes both see the tag absent and insert it; SQLite's UNIQUE refuses the second."""
    import mlflow

    from synthmed import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("race")
    real_set = mlflow.MlflowClient.set_experiment_tag

    def losing_insert(self, exp_id, key, value):
        if other_process_won:  # the other process's insert lands between our check and our insert
            real_set(self, exp_id, key, value)
        raise mlflow.exceptions.MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags")

    monkeypatch.setattr(mlflow.MlflowClient, "set_experiment_tag", losing_insert)
    if other_process_won:
        tracking.mark_experiment_kind(experiment_id)
        assert client.get_experiment(experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    else:  # a failure with the tag still absent is a real failure, not a lost race
        with pytest.raises(mlflow.exceptions.MlflowException, match="UNIQUE"):
            tracking.mark_experiment_kind(experiment_id)
