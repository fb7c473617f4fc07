"""Everything a run writes to MLflow: params, tags, metrics, artifacts, the model and its registry entry."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import traceback
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from synthmed._version import __version__
from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.tracking import ghosts, names

if TYPE_CHECKING:
    import torch

    from synthmed.data.base import ImageSet, Splits
    from synthmed.evaluation import Evaluation

MODEL_ARTIFACT = "model"
REGISTRY_ALIAS = "newest"  # every registered version takes it; aliases, not stages
# What kind of experiment this is, for MLflow's UI: without it MLflow 3 opens an experiment in its
# GenAI overview (an empty traces dashboard) instead of the runs table.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def config_from_logged(values: dict[str, Any]) -> Config:
    """A :class:`Config` from logged values (``config.yaml`` or params); other keys are ignored."""
    fields = set(Config.field_names())
    return Config.from_mapping({k: v for k, v in values.items() if k in fields})


def load_run_config(run_id: str) -> Config:
    """The config a run was trained with: its ``config.yaml`` artifact (the canonical record).

    Params are the fallback only: under ``mlflow run`` they keep the launcher's shell-quoted
    spellings (``data_dir=''``), which are not config values.
    """
    import mlflow
    import yaml

    from mlflow.exceptions import MlflowException

    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}  # errors here are real: propagate
    if "config.yaml" not in names:  # runs logged before config.yaml existed, or by other tools
        return config_from_logged(dict(mlflow.MlflowClient().get_run(run_id).data.params))
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    except MlflowException as exc:
        raise SynthmedError(f"run {run_id}: cannot read config.yaml: {exc.message}") from exc
    return config_from_logged(yaml.safe_load(text) or {})


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the synthmed source being run, when it is a git checkout (editable install)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunLogger:
    """Thin wrapper around the active MLflow run, with the artifacts synthmed logs."""

    def __init__(self, run_id: str, config: Config, existing_params: dict[str, str] | None = None):
        self.run_id = run_id
        self.config = config
        # params already on a joined run (`mlflow run` logs its -P values as given, e.g. "1e-3");
        # MLflow refuses to change a param, so those keys keep their launcher-given spelling.
        self._existing = set(existing_params or {})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items() if k not in self._existing})

    def log_artifact(self, local_path: str, artifact_dir: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(local_path, artifact_dir)

    def log_figure(self, fig: Any, path: str) -> None:
        import matplotlib.pyplot as plt
        import mlflow

        try:
            mlflow.log_figure(fig, path)
        finally:
            plt.close(fig)  # also when logging fails: pyplot keeps figures alive until closed

    # --- what train() logs -------------------------------------------------------------------------
    def tag_open_set(self) -> None:
        """Tag the run ``synthmed.open_set=1`` when its learned generator was marked open-set (a param it logged)."""
        import mlflow

        if mlflow.get_run(self.run_id).data.params.get("generator_open_set") == "True":
            mlflow.set_tag(names.TAG_OPEN_SET, "1")

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def log_text(self, text: str, path: str) -> None:
        import mlflow

        mlflow.log_text(text, path)

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        import mlflow

        mlflow.log_dict(data, path)

    # --- what train() logs -------------------------------------------------------------------------
    def log_training_set(self, train_set: ImageSet, val: ImageSet | None, splits: Splits,
                         shown: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
        """Sizes and class counts of what the run trains on; ``shown`` = (images, labels, synthetic
        flags) of a few training images after the policy, drawn as a grid."""
        from synthmed.figures import image_grid_figure

        counts = train_set.class_counts(splits.num_classes)
        params: dict[str, Any] = {
            "n_train": len(train_set),
            "n_train_real": int((~train_set.synthetic).sum()),
            "n_train_synthetic": int(train_set.synthetic.sum()),
            "n_val": len(val) if val is not None else 0,
            "n_test": len(splits.test),
            "n_full_train": len(splits.train),
        }
        params.update({f"train_count_{c}": n for c, n in zip(splits.classes, counts)})
        self.log_params(params)
        if shown is not None:
            images, labels, flags = shown
            fig = image_grid_figure(images, labels, splits.display_classes,
                                    f"training images after policy '{self.config.policy}'", flags)
            self.log_figure(fig, "augmented_training_images.png")

    def log_evaluation(self, result: Evaluation, classes: tuple[str, ...], display: tuple[str, ...] = ()) -> None:
        import mlflow

        from synthmed.figures import confusion_matrix_figure

        self.log_figure(confusion_matrix_figure(result.confusion, display or classes), "confusion_matrix.png")
        rows = ["class,support,recall,precision,f1"]
        for i, c in enumerate(classes):
            m = result.metrics
            rows.append(f"{c},{int(result.confusion[i].sum())},{m[f'recall_{c}']:.6f},"
                        f"{m[f'precision_{c}']:.6f},{m[f'f1_{c}']:.6f}")
        mlflow.log_text("\n".join(rows) + "\n", "per_class_metrics.csv")
        header = "true\\pred," + ",".join(classes)
        body = [f"{c}," + ",".join(str(int(v)) for v in result.confusion[i]) for i, c in enumerate(classes)]
        mlflow.log_text("\n".join([header, *body]) + "\n", "confusion_matrix.csv")


def metrics_logger(run_id: str) -> Callable[..., None]:
    """``log_metrics(metrics, step=None)`` into run ``run_id`` through a client: for runs not active in this thread."""
    import mlflow

    client = mlflow.MlflowClient()

    def log(metrics: dict[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), stamp, step or 0)
                                          for k, v in metrics.items()])
    return log


@contextmanager
def run(config: Config, splits: Splits, *, parent_run_id: str | None = None, tags: dict[str, str] | None = None,
        run_name: str | None = None, resume_run_id: str | None = None,
        suspend: bool = False) -> Iterator[RunLogger]:
    """Start (or join) the MLflow run of one experiment; mark it FAILED, with the error, if anything raises.

    Joins the run of ``mlflow run`` (``MLFLOW_RUN_ID``) or an already active run; nests under
    ``parent_run_id`` when given. ``resume_run_id`` reopens a run left ``RUNNING`` by ``suspend=True``
    (which leaves the block without finishing the run): a batched sweep prepares each child run,
    trains their models together, then resumes each to finish it.
    """
    import mlflow

    saved_env = os.environ.pop("MLFLOW_RUN_ID", None) if parent_run_id is not None else None
    try:  # a child is a new run, even inside `mlflow run`: MLFLOW_RUN_ID is hidden until it ends
        if resume_run_id is not None:  # reopened (status RUNNING again) by this process, which now owns it
            active, own_run = mlflow.start_run(run_id=resume_run_id, nested=mlflow.active_run() is not None), True
            mlflow.set_tags(ghosts.owner_tags())
        else:
            active, own_run = _start(config, parent_run_id, run_name)
        try:
            logger = RunLogger(active.info.run_id, config, dict(mlflow.get_run(active.info.run_id).data.params))
            if resume_run_id is None:
                _log_run_header(active, config, splits, tags, logger)
            yield logger
        except BaseException as exc:
            gone = None if isinstance(exc, (KeyboardInterrupt, SynthmedError)) else server_gone()
            if gone:  # nothing more can be logged: say so instead of retrying into a dead server
                raise SynthmedError(
                    f"{gone} — it stopped answering during run {active.info.run_id}; runs that finished before "
                    "are unchanged, and this one keeps its last checkpoint: start the server again and rerun the "
                    "same command to continue it") from exc
            mlflow.set_tag(names.TAG_ERROR, f"{type(exc).__name__}: {exc}"[:5000])
            if isinstance(exc, KeyboardInterrupt):  # a signal (synthmed.interrupts.Stopped says which) or Ctrl-C
                mlflow.set_tag(names.TAG_FAILURE_REASON, getattr(exc, "reason", "interrupted (KeyboardInterrupt)"))
            mlflow.log_text("".join(traceback.format_exception(exc)), "error.txt")
            if own_run:
                mlflow.end_run(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        else:
            if own_run:
                mlflow.end_run(status="RUNNING" if suspend else "FINISHED")
    finally:
        if saved_env is not None:
            os.environ["MLFLOW_RUN_ID"] = saved_env


def _start(config: Config, parent_run_id: str | None, run_name: str | None) -> tuple[Any, bool]:
    """The run to log into, and whether this call owns (and so ends) it."""
    import mlflow

    if parent_run_id is not None:
        parent = mlflow.MlflowClient().get_run(parent_run_id)
        return mlflow.start_run(run_name=run_name, experiment_id=parent.info.experiment_id,
                                parent_run_id=parent_run_id, nested=mlflow.active_run() is not None,
                                tags=ghosts.owner_tags()), True
    if mlflow.active_run() is not None:
        return mlflow.active_run(), False
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(config.experiment)
    # owner tags at creation: a process killed before the header is logged still leaves a provable ghost
    return mlflow.start_run(run_name=run_name or f"{config.model}-{config.policy}-{config.real_frac:g}",
                            tags=ghosts.owner_tags()), True


def mark_experiment_kind(experiment_id: str) -> None:
    """Tag the experiment as model training (``mlflow.experimentKind``) unless it already says what it is."""
    import mlflow

    client = mlflow.MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        try:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException:  # a sweep's worker processes race to insert it (SQLite
            if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:  # UNIQUE): one wins
                raise


def _log_run_header(active: Any, config: Config, splits: Splits, tags: dict[str, str] | None,
                    logger: RunLogger) -> None:
    """Tags, the config (params and ``config.yaml``) and the data's metadata: logged before training."""
    import mlflow


    all_tags = {
        names.TAG_VERSION: __version__,
        names.TAG_DATASET: config.dataset,
        names.TAG_FINGERPRINT: splits.fingerprint,
        names.TAG_MODEL: config.model,
        names.TAG_POLICY: config.policy,
        names.TAG_REAL_FRAC: f"{config.real_frac:g}",
        names.TAG_SPLIT: config.split,
        **ghosts.owner_tags(),  # lets a later run prove this one dead if the process is killed
    }
    mark_experiment_kind(active.info.experiment_id)
    commit = active.data.tags.get("mlflow.source.git.commit") or git_commit()
    if commit:
        all_tags[names.TAG_GIT_COMMIT] = commit
    mlflow.set_tags({**all_tags, **(tags or {})})
    logger.log_params(config.to_dict())  # Config refuses secrets, so all of it can be logged
    mlflow.log_text(config.to_yaml(), "config.yaml")
    mlflow.log_text(json.dumps(splits.meta, indent=2, default=str), "data/meta.json")
    logger.log_params({f"data.{k}": v for k, v in splits.meta.items()
                       if isinstance(v, (str, int, float, bool)) and len(str(v)) < 500})


# --- before a run or sweep starts ---------------------------------------------------------------------
#: seconds an http(s) tracking server has to answer before a run gives up (before any data loading)
PROBE_TIMEOUT_ENV, PROBE_TIMEOUT_S = "SYNTHMED_TRACKING_TIMEOUT_S", 5.0


def prepare_store(config: Config) -> None:
    """Check the tracking store answers, then mark the experiment's ghost runs KILLED (:mod:`synthmed.tracking.ghosts`).

    Called at the start of every run and sweep, before data loading, so an unreachable server fails
    in seconds instead of after minutes of loading and ~250 s of MLflow's retries.
    """
    import mlflow

    _probe(mlflow.get_tracking_uri())
    bound_retries(mlflow.get_tracking_uri())
    client = mlflow.MlflowClient()
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if launcher:
        experiment_id = client.get_run(launcher).info.experiment_id
    else:
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            return
        experiment_id = experiment.experiment_id
    active = mlflow.active_run()
    keep = {r for r in (launcher, active.info.run_id if active else None) if r}
    ghosts.reap(client, experiment_id, keep=keep)


#: MLflow's HTTP retry settings for a server that goes away mid-run, unless the user set their own:
#: 3 retries 1, 2 and 4 s apart, 20 s per request — a dead server ends the run within about a minute
#: (MLflow's defaults, 7 retries with backoff factor 2 and 120 s timeouts, wait for many minutes).
BOUNDED_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def bound_retries(uri: str) -> None:
    """For an http(s) tracking URI, bound MLflow's retries (:data:`BOUNDED_RETRIES`) where the user has not."""
    if uri.startswith(("http://", "https://")):
        for key, value in BOUNDED_RETRIES.items():
            os.environ.setdefault(key, value)


def server_gone() -> str | None:
    """When the tracking URI is an http(s) server that does not answer now, why (for an error); else None."""
    import mlflow

    try:
        _probe(mlflow.get_tracking_uri(), timeout=2.0)
    except SynthmedError as exc:
        return str(exc).split(" — ")[0]
    return None


def _probe(uri: str, timeout: float | None = None) -> None:
    """Fail fast, with the URI (credentials hidden) and what to do, when an http(s) server is silent."""
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    shown = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    try:
        timeout = timeout or float(os.environ.get(PROBE_TIMEOUT_ENV) or PROBE_TIMEOUT_S)
    except ValueError:
        raise SynthmedError(f"{PROBE_TIMEOUT_ENV}={os.environ[PROBE_TIMEOUT_ENV]!r} is not a number of seconds") from None
    try:
        with urllib.request.urlopen(shown.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (an old server without /health, or auth): MLflow's own errors are clear enough
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SynthmedError(
            f"MLflow tracking server {shown} did not answer within {timeout:g} s ({reason}) — start it, fix "
            f"MLFLOW_TRACKING_URI, or unset it to log to the local sqlite:///mlflow.db "
            f"(raise the wait with {PROBE_TIMEOUT_ENV})"
        ) from None
