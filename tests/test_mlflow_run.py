"""`mlflow run .` on this repository, as a user types it (slow: a subprocess trains for one epoch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]


def mlflow_run(tmp_path, uri, *params: str, entry: str = "main", extra_env: dict | None = None):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(extra_env or {})}
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local", "-e", entry,
           "--experiment-name", "mlflow-run"]
    for p in params:
        cmd += ["-P", p]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_mlflow_run_main_logs_into_its_run(tmp_path, mlflow_uri, real_data_dir):
    out = mlflow_run(tmp_path, mlflow_uri, "policy=none", "real_frac=0.1", "epochs=1", "lr=1e-3",
                     "image_size=64", "quiet=true", extra_env={"SYNTHMED_DATA_DIR": str(real_data_dir)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["mlflow-run"], output_format="list")
    assert len(runs) == 1, "synthmed train must log into the run `mlflow run` started, not a second one"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("mlflow.project.entryPoint") == "main"
    assert run.data.params["lr"] == "1e-3"  # the launcher's spelling is kept; no 'changed param' error
    assert "test_cross_entropy" in run.data.metrics
    assert mlflow.MlflowClient().get_model_version_by_alias("synthmed-alzheimer_mri-cnn", "newest")

    # the gradcam entry point on the model that run registered, logging into its own mlflow-run run
    out = mlflow_run(tmp_path, mlflow_uri, "model_uri=models:/synthmed-alzheimer_mri-cnn/1", "pairs=2",
                     "quiet=true", entry="gradcam", extra_env={"SYNTHMED_DATA_DIR": str(real_data_dir)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["mlflow-run"], output_format="list",
                              filter_string="tags.`mlflow.project.entryPoint` = 'gradcam'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "gradcam_test_agreement_pearson" in runs[0].data.metrics
    artifacts = mlflow.artifacts.list_artifacts(run_id=runs[0].info.run_id, artifact_path="gradcam/test")
    assert {a.path.rsplit("/", 1)[-1] for a in artifacts} >= {"Moderate_Demented.png", "Non_Demented.png"}


@pytest.mark.slow
def test_mlflow_run_sweep_entry_point(tmp_path, mlflow_uri, real_data_dir):
    out = mlflow_run(tmp_path, mlflow_uri, "policies=none,basic", "real_fracs=0.5", "simulations=2", "epochs=1",
                     "image_size=32", "quiet=true", f"data_dir={real_data_dir}", entry="sweep")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["mlflow-run"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and parents[0].data.tags["synthmed.sweep"] == "1"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert "cnn.basic_vs_none.0.5.test_cross_entropy.median_diff" in parents[0].data.metrics
