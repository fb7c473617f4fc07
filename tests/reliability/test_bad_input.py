"""Family 1, bad input: every case ends in a clear one-line error (what, which value, what to do)
within seconds — before data loading where the fault is knowable then — or in documented handling.

Cases go through the public surface: the ``synthmed`` CLI (click's runner, or a subprocess where a
separate user, mount or environment is needed), ``synthmed.train``/``synthmed.sweep``/``Config``,
MLproject parameters, config files, dataset folders and plugin options.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _rel import REPO, TINY, child_env, cli_argv, png_bytes, write_folder, write_hub_layout
from _servers import SilentServer
from click.testing import CliRunner

import synthmed
from synthmed.cli import main
from synthmed.errors import SynthmedError

pytestmark = pytest.mark.bad_input
FAST_S = 10.0  # generous: each case must end within seconds


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    start = time.monotonic()
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)
    elapsed = time.monotonic() - start
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result.exit_code, result.output, elapsed


def assert_clean_error(code: int, output: str, elapsed: float, *patterns: str) -> None:
    import re

    assert code != 0, output
    assert "Traceback" not in output, output
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    for pattern in patterns:
        assert re.search(pattern, output), f"{pattern!r} not in:\n{output}"


@pytest.fixture
def loads(monkeypatch):
    """Records whether a dataset was loaded (the error must come before that)."""
    from synthmed.data import imagefolder

    calls = []
    original = imagefolder.ImageFolder.load
    monkeypatch.setattr(imagefolder.ImageFolder, "load", lambda self, config: calls.append(1) or original(self, config))
    return calls


# --- CLI options: numbers, names, plugin options ----------------------------------------------------
CLI_CASES = {
    "image-size-absurd": (["--image-size", "100000"], r"image_size=100000 is out of range.*<= 4096.*GiB"),
    "image-size-tiny": (["--image-size", "2"], r"image_size=2 is out of range — allowed: >= 8"),
    "image-size-not-a-number": (["--image-size", "big"], r"'big' is not a valid integer"),
    "batch-size-zero": (["--batch-size", "0"], r"batch_size=0 is out of range — allowed: >= 1"),
    "batch-size-absurd": (["--batch-size", "10000000"], r"batch_size=10000000 is out of range"),
    "epochs-negative": (["--epochs", "-1"], r"epochs=-1 is out of range — allowed: >= 1"),
    "real-frac-nan": (["--real-frac", "nan"], r"real_frac=nan must be a finite number"),
    "real-frac-above-one": (["--real-frac", "1.5"], r"real_frac=1.5 is out of range — allowed: > 0.0 and <= 1.0"),
    "real-frac-zero": (["--real-frac", "0"], r"real_frac=0.0 is out of range"),
    "lr-inf": (["--lr", "inf"], r"lr=inf must be a finite number"),
    "synth-frac-word": (["--synth-frac", "lots"], r"synth_frac='lots' is not a valid float"),
    "unknown-model": (["--model", "resnet9000"], r"unknown model 'resnet9000' — installed: .*cnn"),
    "unknown-policy": (["--policy", "mixup"], r"unknown policy 'mixup' — installed: .*autoaugment"),
    "unknown-generator": (["--policy", "synthetic", "--generator", "dalle"], r"unknown generator 'dalle' — installed: .*elastic"),
    "unknown-dataset": (["--dataset", "mnist"], r"unknown dataset 'mnist' — installed: .*imagefolder"),
    "unknown-device": (["--device", "tpu"], r"device='tpu' is not (supported|a torch device)"),
    "bad-mix-choice": (["--mix", "blend"], r"'blend' is not one of 'append', 'replace'"),
    "patience-without-val": (["--patience", "2", "--val-frac", "0"], r"patience=2 needs a validation part: set val_frac > 0"),
    "external-without-opt-in": (["--policy", "synthetic", "--generator", "openai"], r"opt in explicitly with --allow-external"),
    "secret-in-generator-options": (["--generator-options", "api_key=sk-abc"], r"must not carry secrets \(api_key\).*OPENAI_API_KEY"),
    "credentials-in-base-url": (["--generator-options", "base_url=http://u:sk-abc@127.0.0.1:9/v1"],
                                r"must not carry secrets \(base_url \(credentials in a URL\)\)"),
    "generator-options-not-key-value": (["--generator-options", "fast"], r"'fast' is not of the form key=value"),
    "bad-generator-option-value": (["--policy", "synthetic", "--generator", "elastic", "--generator-options", "alpha=wobbly"],
                                   r"elastic.*alpha.*wobbly"),
    "checkpoint-every-negative": (["--checkpoint-every", "-5"], r"checkpoint_every=-5.0 is out of range — allowed: >= 0"),
    "checkpoint-every-nan": (["--checkpoint-every", "nan"], r"checkpoint_every=nan must be a finite number"),
    "checkpoint-every-inf": (["--checkpoint-every", "inf"], r"checkpoint_every=inf must be a finite number"),
    "checkpoint-every-word": (["--checkpoint-every", "often"], r"'often' is not a valid float"),
}


AFTER_LOADING: set[str] = set()  # every bad input fails before data loading (the run's generator is built first)


@pytest.mark.parametrize("case", CLI_CASES, ids=CLI_CASES.keys())
def test_cli_train_option(store, tiny_folder, loads, case):
    args, pattern = CLI_CASES[case]
    code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *TINY, *args)
    assert_clean_error(code, out, elapsed, pattern)
    assert case in AFTER_LOADING or not loads, "the error must come before data loading"


SWEEP_CASES = {
    "simulations-zero": (["--simulations", "0"], r"0 is not in the range x>=1"),
    "real-fracs-not-numbers": (["--real-fracs", "0.3,lots"], r"'0.3,lots' is not a comma-separated list of float"),
    "real-fracs-out-of-range": (["--real-fracs", "0.3,2"], r"real_frac=2.0 is out of range"),
    "models-unknown": (["--models", "cnn,alexnet"], r"unknown model 'alexnet'"),
    "policies-twice": (["--policies", "none,none"], r"lists a value twice"),
}


@pytest.mark.parametrize("args,pattern", SWEEP_CASES.values(), ids=SWEEP_CASES.keys())
def test_cli_sweep_option(store, tiny_folder, loads, args, pattern):
    code, out, elapsed = cli("sweep", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), "--image-size", "16",
                             "--epochs", "1", "--simulations", "1", *args)
    assert_clean_error(code, out, elapsed, pattern)
    assert not loads


# --- Python API -----------------------------------------------------------------------------------
API_CASES = {
    "train-unknown-key": (lambda d: synthmed.train(dataset="imagefolder", data_dir=d, learning_rate=0.1),
                          r"unknown config key 'learning_rate' — allowed: .*lr"),
    "train-epochs-zero": (lambda d: synthmed.train(dataset="imagefolder", data_dir=d, epochs=0), r"epochs=0 is out of range"),
    "train-bool-as-int": (lambda d: synthmed.Config(epochs=True), r"epochs=True must be a int"),
    "config-string-number": (lambda d: synthmed.Config.from_mapping({"batch_size": "thirty-two"}),
                             r"batch_size='thirty-two' is not a valid int"),
    "sweep-simulations-zero": (lambda d: synthmed.sweep(dataset="imagefolder", data_dir=d, simulations=0),
                               r"simulations=0 must be >= 1"),
    "sweep-real-frac-nan": (lambda d: synthmed.sweep(dataset="imagefolder", data_dir=d, real_fracs=[float("nan")]),
                            r"real_frac=nan must be a finite number"),
    "data-dir-missing": (lambda d: synthmed.train(dataset="imagefolder", data_dir=d + "-nope", **TINY_KW),
                         r"data_dir \(--data-dir\) = '.*-nope' is not an existing folder"),
}
TINY_KW = dict(image_size=16, epochs=1, gradcam=False, log_model=False, register="none", quiet=True)


@pytest.mark.parametrize("call,pattern", API_CASES.values(), ids=API_CASES.keys())
def test_python_api(store, tiny_folder, call, pattern):
    start = time.monotonic()
    with pytest.raises(SynthmedError, match=pattern):
        call(str(tiny_folder))
    assert time.monotonic() - start < FAST_S


# --- config files -----------------------------------------------------------------------------------
CONFIG_FILES = {
    "unknown-key": ("epochs: 1\nlearnin_rate: 0.1\n", r"unknown config key 'learnin_rate'"),
    "not-yaml": ("epochs: [1\n", r"is not valid YAML"),
    "not-a-mapping": ("- epochs\n- 1\n", r"must hold a mapping of field: value"),
    "bad-value": ("image_size: 100000\n", r"image_size=100000 is out of range"),
    "missing-file": (None, r"config file '.*absent.yaml' does not exist"),
}


@pytest.mark.parametrize("text,pattern", CONFIG_FILES.values(), ids=CONFIG_FILES.keys())
def test_config_file(store, tmp_path, text, pattern):
    path = tmp_path / ("absent.yaml" if text is None else "c.yaml")
    if text is not None:
        path.write_text(text)
    code, out, elapsed = cli("train", "--config", str(path))
    assert_clean_error(code, out, elapsed, pattern)


# --- MLproject parameters -----------------------------------------------------------------------------
def mlproject_argv(**params: str) -> list[str]:
    """The `synthmed ...` argv that `mlflow run . -P k=v` runs (MLflow shell-quotes each value)."""
    spec = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["main"]
    values = {k: v.get("default", "") for k, v in spec["parameters"].items()}
    values.update(params)
    command = spec["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()})
    return shlex.split(command)[1:]  # drop "synthmed"


MLPROJECT_CASES = {
    "image_size-float": ({"image_size": "16.5"}, r"'16.5' is not a valid integer"),
    "real_frac-nan": ({"real_frac": "nan"}, r"real_frac=nan must be a finite number"),
    "epochs-zero": ({"epochs": "0"}, r"epochs=0 is out of range"),
    "allow_external-word": ({"allow_external": "maybe"}, r"'maybe' is not one of"),
}


@pytest.mark.parametrize("params,pattern", MLPROJECT_CASES.values(), ids=MLPROJECT_CASES.keys())
def test_mlproject_parameter(store, tiny_folder, loads, params, pattern):
    argv = mlproject_argv(dataset="imagefolder", data_dir=str(tiny_folder), **params)
    code, out, elapsed = cli(*argv)
    assert_clean_error(code, out, elapsed, pattern)
    assert not loads


@pytest.mark.slow
def test_mlflow_run_absurd_image_size(store, tiny_folder):
    """The one real `mlflow run` case: the error reaches the user, fast, with the value and what to do."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    if not mlflow_bin.exists():
        pytest.skip("mlflow CLI not installed beside this python")
    env = child_env(PATH=f"{mlflow_bin.parent}{os.pathsep}{os.environ['PATH']}",
                    MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    start = time.monotonic()
    proc = subprocess.run([str(mlflow_bin), "run", str(REPO), "--env-manager", "local", "-P", "image_size=100000",
                           "-P", "dataset=imagefolder", "-P", f"data_dir={tiny_folder}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "image_size=100000 is out of range" in proc.stderr + proc.stdout
    assert time.monotonic() - start < 60  # mlflow run itself costs seconds


# --- dataset folders ------------------------------------------------------------------------------------
def _load(folder: Path, **kw):
    from synthmed.plugins import registry

    config = synthmed.Config(dataset="imagefolder", data_dir=str(folder), image_size=16, **kw)
    return registry("datasets").get("imagefolder")().load(config)


BROKEN_FILES = {
    "corrupt": b"\x89PNG\r\n\x1a\n" + os.urandom(200),
    "truncated": png_bytes(1)[:60],
    "zero-byte": b"",
}


@pytest.mark.parametrize("content", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_undecodable_image_is_named_or_skipped(store, tmp_path, content):
    folder = write_folder(tmp_path / "d", {"a": 4, "b": 4})
    (folder / "b" / "broken.png").write_bytes(content)
    code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(folder), *TINY)
    assert_clean_error(code, out, elapsed, r"cannot decode image .*b/broken\.png", r"skip_bad_images=true")
    splits = _load(folder, skip_bad_images=True)  # documented handling: skipped and counted
    assert splits.meta["skipped_images"] == 1 and splits.meta["skipped_files"] == ["b/broken.png"]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
def test_color_and_16_bit_images_load_as_grayscale(tmp_path, mode):
    """docs/datasets.md: RGB/RGBA/P become L (luma, alpha dropped); 16-bit is min-max scaled per image."""
    folder = write_folder(tmp_path / "d", {"a": 3, "b": 3}, mode=mode)
    splits = _load(folder, test_frac=0.34)
    images = splits.train.images
    assert images.dtype.is_floating_point is False and tuple(images.shape[1:]) == (1, 16, 16)
    if mode == "I;16":
        from PIL import Image
        import io
        with Image.open(io.BytesIO(png_bytes(0, mode=mode))) as im:
            assert im.mode == "I;16"
    assert int(images.max()) > 200 and int(images.min()) < 50  # the full range, not all-white nor all-black


def test_mixed_sizes_are_resized(tmp_path):
    folder = write_folder(tmp_path / "d", {"a": 3, "b": 3}, size=16)
    write_folder(folder, {"a": 1}, size=40)  # overwrites a/0.png with a 40 px image
    (folder / "b" / "wide.png").write_bytes(png_bytes(7, 24))
    splits = _load(folder, test_frac=0.34)
    assert tuple(splits.train.images.shape[1:]) == (1, 16, 16) and tuple(splits.test.images.shape[1:]) == (1, 16, 16)


def test_empty_class_folder(store, tmp_path):
    folder = write_folder(tmp_path / "d", {"a": 4, "b": 4})
    (folder / "c").mkdir()
    (folder / "c" / "notes.txt").write_text("no images here")
    code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(folder), *TINY)
    assert_clean_error(code, out, elapsed, r"class folder .*/c has no image files", r"add images or remove the folder")


def test_class_only_in_test_split(store, tmp_path):
    write_folder(tmp_path / "d" / "train", {"a": 4, "b": 4})
    write_folder(tmp_path / "d" / "test", {"a": 2, "b": 2, "c": 2})
    code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "d"), *TINY)
    assert_clean_error(code, out, elapsed, r"only in train/: none; only in test/: c")


def test_hub_layout_label_outside_class_list(store, tmp_path):
    names = ["Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"]  # the expected label set
    rows = [(png_bytes(1), 0), (png_bytes(2), -1), (png_bytes(3), 1), (png_bytes(6), 2), (png_bytes(7), 3)]
    folder = write_hub_layout(tmp_path / "hub", rows, [(png_bytes(4), 0), (png_bytes(5), 1)], names)
    code, out, elapsed = cli("train", "--data-dir", str(folder), *TINY)
    assert_clean_error(code, out, elapsed, r"train row 1 .* has label -1, outside the classes 0\.\.3")


def test_hub_layout_with_other_label_names(store, tmp_path):
    rows = [(png_bytes(i), i % 2) for i in range(4)]
    folder = write_hub_layout(tmp_path / "hub", rows, rows, ["cat", "dog"])
    code, out, elapsed = cli("train", "--data-dir", str(folder), *TINY)
    assert_clean_error(code, out, elapsed, r"expects")


def test_unreachable_hub(store, monkeypatch):
    import datasets

    with SilentServer() as silent:
        closed = silent.url.rsplit(":", 1)[1]
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    code, out, elapsed = cli("train", *TINY)
    assert_clean_error(code, out, elapsed, rf"cannot reach the Hugging Face hub at 127\.0\.0\.1:{closed}",
                       r"SYNTHMED_DATA_DIR|data_dir|--data-dir")


# --- the environment: API key, cache folder, disk, tracking server --------------------------------------
def test_missing_api_key(store, tiny_folder, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *TINY,
                             "--policy", "synthetic", "--generator", "openai", "--allow-external", "true", "--real-frac", "0.5",
                             "--generator-options", "base_url=http://127.0.0.1:9/v1,size=64x64")
    assert_clean_error(code, out, elapsed, r"no API key — set OPENAI_API_KEY")


def _can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.slow
def test_unwritable_cache_dir_as_another_user(tmp_path, tiny_folder):
    """Root ignores file modes: run `synthmed generate` as nobody against a root-owned 0755 cache."""
    if not _can_drop_privileges():
        pytest.skip("needs root and setpriv to run as another user")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="synthmed-rel-"))  # pytest's tmp dirs are 0700: nobody cannot enter
    try:
        _run_as_nobody(base, tiny_folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_as_nobody(base: Path, tiny_folder: Path) -> None:
    base.chmod(0o755)
    data = shutil.copytree(tiny_folder, base / "data")
    for p in [data, *data.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    cache = base / "cache"
    cache.mkdir()
    home = base / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    tmp_path, tiny_folder = home, data
    env = child_env(HOME=str(home), MPLCONFIGDIR=str(home / "mpl"))
    start = time.monotonic()
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *cli_argv("generate", "--dataset", "imagefolder", "--data-dir", str(tiny_folder),
                                     "--image-size", "16", "--real-frac", "0.5", "--cache-dir", str(cache), "--yes", "-q")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    assert f"generation cache {cache} cannot be written" in out and "--cache-dir" in out, out
    assert time.monotonic() - start < 60
    assert not list(cache.rglob("*"))


def _fill_some(cache_root: Path, n: int = 6):
    import torch

    from synthmed.generators.cache import GenerationCache, fill
    from synthmed.plugins import registry

    gen = registry("generators").get("elastic")()
    sources = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return fill(GenerationCache(cache_root), gen, sources, torch.zeros(n, dtype=torch.long),
                [(i, 0) for i in range(n)], quiet=True)


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_during_cache_writes(tmp_path, monkeypatch):
    """A 16 KiB tmpfs (or, where mounting is not allowed, writes that fail with ENOSPC)."""
    root = tmp_path / "small"
    mounted = _tmpfs(root, "16k")
    try:
        if not mounted:
            real_replace = os.replace

            def full(src, dst):  # noqa: ANN001
                if str(dst).endswith(".png") and len(list(root.rglob("*.png"))) >= 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_replace(src, dst)

            monkeypatch.setattr(os, "replace", full)
        with pytest.raises(SynthmedError, match=rf"generation cache {root} is full \(No space left on device\).*--cache-dir"):
            _fill_some(root, n=40)
        assert not list(root.rglob("*.part")), "no half-written file may stay"
        from PIL import Image

        for png in root.rglob("*.png"):  # every entry that exists is a whole image
            with Image.open(png) as im:
                im.load()
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=False)


def test_read_only_cache_mount(tmp_path):
    root = tmp_path / "ro"
    if not _tmpfs(root, "64k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        with pytest.raises(SynthmedError, match=rf"generation cache {root} cannot be written \(Read-only file system\)"):
            _fill_some(root)
    finally:
        subprocess.run(["umount", str(root)], check=False)


@pytest.mark.parametrize("server", ["silent", "closed-port"])
def test_tracking_uri_that_does_not_answer(tiny_folder, loads, monkeypatch, server):
    import mlflow

    with SilentServer() as silent:
        url = silent.url
        if server == "silent":
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            monkeypatch.setenv("SYNTHMED_TRACKING_TIMEOUT_S", "2")
            mlflow.set_tracking_uri(url)
            code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *TINY)
    if server == "closed-port":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        code, out, elapsed = cli("train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *TINY)
    mlflow.set_tracking_uri(None)
    assert_clean_error(code, out, elapsed, rf"MLflow tracking server {url} did not answer", r"MLFLOW_TRACKING_URI")
    assert not loads, "must fail before data loading"
