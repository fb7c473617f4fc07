"""Every default of one experiment, in one frozen dataclass.

CLI options (``--real-frac``) and MLproject parameters (``real_frac``) map one to one onto the
fields below. :meth:`Config.from_mapping` accepts strings (``mlflow run -P`` values arrive as
strings) and rejects unknown keys and bad values with an error naming the field, the value and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from synthmed.errors import SynthmedError

#: option names that hold credentials: never accepted in ``generator_options`` (they would be logged)
SECRET_KEY = re.compile(r"key|secret|token|password", re.I)
#: ``scheme://user:password@host``: credentials inside a URL option (they would be logged and cached)
URL_CREDENTIALS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*@")
DEFAULT_GENERATOR = "elastic"  # local, free, sends nothing off this machine (see docs/generators.md)


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Config:
    """One experiment: data → augmentation policy → model → training → evaluation."""

    # data
    dataset: str = _f("alzheimer_mri", "dataset plugin name (see `synthmed plugins`)")
    data_dir: str | None = _f(None, "local copy of the dataset (else $SYNTHMED_DATA_DIR, else the hub)")
    revision: str | None = _f(None, "hub revision (commit or tag) to pin the dataset to")
    image_size: int = _f(128, "side of the square images fed to the model", min=8, max=4096)
    skip_bad_images: bool = _f(False, "skip (and count) undecodable images instead of failing")
    split: str = _f("given", "given: the dataset's own train/test split; grouped: pool both and split by subject "
                    "(or near-twin group), so no test image has a twin in training (docs/splits.md)",
                    choices=("given", "grouped"))
    groups: str = _f("auto", "split=grouped: auto = link near-twins into pseudo-subjects; or a CSV of file,subject rows")
    twin_threshold: float | None = _f(None, "split=grouped, groups=auto: RMS pixel distance (0-1, at 64 px) below which "
                                      "two images are twins; default: read from the gap in the distances", gt=0.0, lt=1.0)
    test_frac: float = _f(0.2, "test share for datasets without a test split (imagefolder) and for split=grouped",
                          gt=0.0, lt=1.0)
    split_seed: int = _f(0, "seed of that test split; fixed apart from `seed` so repeated runs share one test set", min=0)
    # sampling
    real_frac: float = _f(1.0, "stratified fraction X of the real training images to keep", gt=0.0, le=1.0)
    val_frac: float = _f(0.1, "share of the sampled training images held out to choose the epoch (protocol=sound; "
                         "carved by subject under split=grouped) or to report a Keras-style validation loss "
                         "(protocol=thesis); 0 = none, the last epoch is kept", ge=0.0, lt=1.0)
    # model
    model: str = _f("cnn", "model factory plugin name")
    pretrained: bool = _f(False, "start from pretrained weights (timm models)")
    weights: str | None = _f(None, "local weights file for pretrained models (no download)")
    # augmentation
    policy: str = _f("none", "augmentation policy plugin name")
    policy_options: str | None = _f(None, "policy params as 'key=value,key=value' (e.g. basic: degrees=5,flip_p=0)")
    generator: str = _f(DEFAULT_GENERATOR, "synthetic-image generator (policy=synthetic)")
    synth_frac: float | None = _f(None, "synthetic share Y of the full training size; default 1 - real_frac", ge=0.0)
    variations_per_image: int = _f(1, "variations k generated per real source image (upper bound)", min=1, max=1000)
    base_policy: str = _f("none", "classic policy applied on top of the mixed set (policy=synthetic)")
    mix: str = _f("append", "how synthetic images join the real ones", choices=("append", "replace"))
    replace_p: float = _f(0.5, "mix=replace: chance a real image is swapped for a variation each epoch", ge=0.0, le=1.0)
    balance: bool = _f(False, "give rare classes more synthetic images (equal per-class totals where possible)")
    allow_external: bool = _f(False, "allow generators that send images off this machine (e.g. openai)")
    generator_options: str | None = _f(None, "extra generator params as 'key=value,key=value' (no secrets: use env vars)")
    cache_dir: str | None = _f(None, "generation cache folder (default: the user cache dir)")
    generations: str = _f("auto", "per-simulation: each seed gets its own synthetic images (the thesis); shared: "
                          "seeded by source only, reused across seeds; auto: per-simulation unless the generator is paid",
                          choices=("auto", "per-simulation", "shared"))
    # training
    epochs: int = _f(20, "training epochs (20: on the grouped split the CNN reaches its validation minimum by about "
                     "epoch 5-14 at 32 px, docs/results.md; under protocol=sound the best epoch is kept)",
                     min=1, max=100_000)
    budget: str = _f("epochs", "epochs: `epochs` passes over the run's own training set; steps: the optimizer steps of "
                     "`epochs` passes over the FULL training split, whatever the run's set size (matched compute)",
                     choices=("epochs", "steps"))
    batch_size: int = _f(32, "mini-batch size", min=1, max=65_536)
    lr: float = _f(1e-3, "Adam learning rate", gt=0.0)
    weight_decay: float = _f(0.0, "Adam weight decay", ge=0.0)
    dropout: float = _f(0.0, "dropout before each fully connected layer of the cnn (timm models: drop_rate)",
                        ge=0.0, lt=1.0)
    patience: int = _f(0, "early stopping: epochs without val-loss improvement (0 = off; needs val_frac > 0)", min=0)
    protocol: str = _f("sound", "sound: the epoch is chosen on the validation carve only, the test split is read "
                       "once, after training; thesis: the last epoch is kept and every reading of the thesis's "
                       "'validation loss' is logged under its own name, the held-out split's loss per epoch "
                       "included (docs/results.md)", choices=("sound", "thesis"))
    seed: int = _f(0, "seed for sampling, augmentation and initialisation (and generation when generations is "
                   "per-simulation)", min=0)
    device: str = _f("auto", "torch device: auto, cpu, cuda, cuda:1, ...")
    precision: str = _f("auto", "autocast precision", choices=("auto", "fp32", "bf16"))
    # tracking
    experiment: str = _f("synthmed", "MLflow experiment name")
    register: str | None = _f("default", "registered model name; 'default' = synthmed-<dataset>-<model>; 'none' = skip")
    gradcam: bool = _f(True, "log a Grad-CAM panel and agreement metrics with every run")
    lookup: bool = _f(True, "log what memorization alone scores beside the run: a 1-nearest-neighbour pixel lookup "
                      "on the run's real images, and the class prior")
    inspect: bool = _f(True, "with synthetic images: log cheap checks of them (realism, label fidelity, memorization)")
    log_model: bool = _f(True, "log the trained model to MLflow (needed to register it; sweeps turn it off)")
    quiet: bool = _f(False, "no progress bars")
    # long work
    checkpoint_every: float = _f(300.0, "seconds between checkpoints of generator fits and training runs (and one "
                                 "whenever the process is stopped by SIGTERM/SIGINT/SIGHUP); rerunning the same command "
                                 "resumes from the last one; 0 = no checkpoints (docs/reliability.md)", ge=0.0)
    checkpoint_dir: str | None = _f(None, "where training runs keep their checkpoints (default: _checkpoints under the "
                                    "generation cache folder); fits keep theirs in the fit cache")

    def __post_init__(self) -> None:
        if isinstance(self.register, str) and self.register.strip().lower() in ("", "none", "false"):
            object.__setattr__(self, "register", None)  # one spelling for "do not register"
        for f in fields(self):
            _check_field(f, getattr(self, f.name))
        options = {**self.generator_params(), **self.policy_params()}
        secrets = [k for k in options if SECRET_KEY.search(k)]
        secrets += [f"{k} (credentials in a URL)" for k, v in options.items() if URL_CREDENTIALS.search(v)]
        if secrets:
            where = (" — `mlflow run` has already logged it as a run param: delete that run and rotate the key"
                     if os.environ.get("MLFLOW_RUN_ID") else "")
            raise SynthmedError(
                f"generator_options and policy_options must not carry secrets ({', '.join(secrets)}): options are logged and "
                f"cached; set the provider's environment variable instead (e.g. OPENAI_API_KEY){where}"
            )
        if self.split == "given" and (self.groups != "auto" or self.twin_threshold is not None):
            raise SynthmedError(
                f"groups={self.groups!r} and twin_threshold={self.twin_threshold!r} choose how split=grouped groups "
                "images: set split=grouped (the dataset's own split, split=given, has no groups)"
            )
        if self.patience and self.protocol == "thesis":
            raise SynthmedError(
                f"patience={self.patience} stops on the validation carve, but protocol=thesis trains a fixed number "
                "of epochs and keeps the last: set patience=0, or protocol=sound"
            )
        if self.patience and not self.val_frac:
            raise SynthmedError(
                f"patience={self.patience} needs a validation part: set val_frac > 0 (e.g. 0.1)"
            )

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: Config | None = None) -> Config:
        """Build a config from (possibly string) values; unknown keys are errors."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise SynthmedError(
                    f"unknown config key {key!r} — allowed: {', '.join(sorted(known))}"
                )
            kwargs[name] = _coerce(known[name], value)
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Config:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SynthmedError(f"config file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise SynthmedError(f"config file {str(path)!r} is a folder — give the YAML file's path") from None
        except PermissionError:
            raise SynthmedError(f"config file {str(path)!r} cannot be read (permission denied for this user)") from None
        except yaml.YAMLError as exc:
            raise SynthmedError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise SynthmedError(f"config file {str(path)!r} must hold a mapping of field: value")
        return cls.from_mapping({**data, **overrides})

    def replace(self, **changes: Any) -> Config:
        return Config.from_mapping(changes, base=self)

    # --- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def registered_model_name(self) -> str | None:
        if self.register is None:
            return None
        if self.register == "default":
            return f"synthmed-{self.dataset}-{self.model}"
        return self.register

    def generator_params(self) -> dict[str, str]:
        """``generator_options`` parsed into a dict (``'a=1,b=x'`` → ``{'a': '1', 'b': 'x'}``)."""
        return parse_options(self.generator_options, "generator_options")

    def policy_params(self) -> dict[str, str]:
        """``policy_options`` parsed into a dict, like :meth:`generator_params`."""
        return parse_options(self.policy_options, "policy_options")


def parse_options(text: str | None, what: str) -> dict[str, str]:
    if not text:
        return {}
    import re

    out: dict[str, str] = {}
    for part in re.split(r"(?<!\\),", text):  # a comma inside a value is written \,
        part = part.replace("\\,", ",")
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SynthmedError(f"{what}: {part!r} is not of the form key=value (write a comma in a value as \\,)")
        out[key.strip()] = value.strip()
    return out


def format_options(options: Mapping[str, str]) -> str | None:
    """The inverse of :func:`parse_options` (commas in values escaped)."""
    return ",".join(f"{k}={str(v).replace(',', chr(92) + ',')}" for k, v in options.items()) or None


TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f"})


def parse_bool(value: Any) -> bool:
    """``True``/``False`` from a bool or a word (``true``, ``1``, ``yes``, ``off``...); else ``ValueError``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not a boolean")


# --- validation helpers ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)  # resolving the annotations costs ~10 ms: once per process


def _base_type(f: dataclasses.Field[Any]) -> tuple[type, bool]:
    tp = _hints()[f.name]
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    return tp, optional


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    tp, optional = _base_type(f)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        if optional:
            return None
        raise SynthmedError(f"{f.name} must not be empty — expected {tp.__name__}")
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if tp is bool:
            return parse_bool(text)
        if tp is int:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return int(text)
        if tp is float:
            return float(text)
        return text
    except ValueError:
        raise SynthmedError(f"{f.name}={value!r} is not a valid {tp.__name__}") from None


def _check_field(f: dataclasses.Field[Any], value: Any) -> None:
    tp, optional = _base_type(f)
    if value is None:
        if optional:
            return
        raise SynthmedError(f"{f.name} must not be empty")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise SynthmedError(f"{f.name}={value!r} must be a {tp.__name__}")
    meta = f.metadata
    if tp is float and not math.isfinite(value):
        raise SynthmedError(f"{f.name}={value!r} must be a finite number")
    bounds = []
    if "gt" in meta and not value > meta["gt"]:
        bounds.append(f"> {meta['gt']}")
    if "ge" in meta and not value >= meta["ge"]:
        bounds.append(f">= {meta['ge']}")
    if "lt" in meta and not value < meta["lt"]:
        bounds.append(f"< {meta['lt']}")
    if "le" in meta and not value <= meta["le"]:
        bounds.append(f"<= {meta['le']}")
    if "min" in meta and value < meta["min"]:
        bounds.append(f">= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        bounds.append(f"<= {meta['max']}")
    if bounds:
        allowed = _describe_bounds(meta)
        raise SynthmedError(f"{f.name}={value!r} is out of range — allowed: {allowed}{_cost_hint(f.name, value)}")
    if "choices" in meta and value not in meta["choices"]:
        raise SynthmedError(f"{f.name}={value!r} is not allowed — choose one of {', '.join(meta['choices'])}")


def _describe_bounds(meta: Mapping[str, Any]) -> str:
    lo = f"> {meta['gt']}" if "gt" in meta else f">= {meta['ge']}" if "ge" in meta else f">= {meta['min']}" if "min" in meta else ""
    hi = (f"< {meta['lt']}" if "lt" in meta else f"<= {meta['le']}" if "le" in meta
          else f"<= {meta['max']}" if "max" in meta else "")
    return " and ".join(p for p in (lo, hi) if p)


def _cost_hint(name: str, value: Any) -> str:
    """For an absurd image size: the memory it implies (refused before any data is loaded)."""
    if name != "image_size" or value <= 0:
        return ""
    one = value * value  # bytes of one (1, S, S) uint8 image; the model sees it as float32 (x4)
    return (f" (one {value}x{value} image is {_bytes(one)} as uint8 and {_bytes(4 * one)} as the model's "
            f"float32 input; 10,000 images would need {_bytes(10_000 * one)}) — use e.g. 128")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
