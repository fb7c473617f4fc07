"""Family 3, secrets and data flow: the API key never lands in the MLflow store, logs, artifacts or
caches — also when put in a URL — and with the external opt-in off the server receives no byte."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from _openai_server import error
from _servers import FaultyImagesServer
from click.testing import CliRunner

from synthmed.cli import main
from synthmed.errors import SynthmedError

pytestmark = [pytest.mark.secrets, pytest.mark.usefixtures("openai_plugin")]


@pytest.fixture
def openai_plugin(monkeypatch):
    _requests = pytest.importorskip("synthmed_openai._requests", reason="plugins/synthmed-openai is not installed")
    monkeypatch.setattr(_requests, "BACKOFF_S", 0.01)


@pytest.fixture
def key() -> str:
    return f"sk-rel-{secrets.token_hex(16)}"


@pytest.fixture
def server():
    with FaultyImagesServer() as s:
        yield s


def sweep_args(folder: Path, options: str, *extra: str) -> list[str]:
    return ["sweep", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16", "--epochs", "1",
            "--batch-size", "8", "--models", "cnn", "--policies", "synthetic", "--real-fracs", "0.5",
            "--simulations", "2", "--generator", "openai", "--generator-options", options, "--quiet", *extra]


def everything(tmp_path: Path) -> list[Path]:
    """The store (sqlite bytes), its artifacts, the generation cache: all of tmp_path, data aside."""
    return [p for p in tmp_path.iterdir() if p.name != "data"]


def test_key_is_nowhere_after_a_synthetic_sweep(store, tmp_path, tiny_folder, server, key, scan, capfd):
    options = f"base_url={server.url},size=64x64,concurrency=1"
    result = CliRunner().invoke(main, sweep_args(tiny_folder, options, "--allow-external", "true"),
                                env={"OPENAI_API_KEY": key})
    assert result.exit_code == 0, result.output
    assert server.successes and {s.authorization for s in server.seen} == {f"Bearer {key}"}  # the key was used
    captured = capfd.readouterr()
    hits = scan(key, *everything(tmp_path), result.output, captured.out, captured.err)
    assert hits == [], hits
    assert list((tmp_path / "cache").rglob("*.png")), "the cache was filled"


def test_key_in_a_base_url_is_refused_and_never_stored(store, tmp_path, tiny_folder, server, key, scan, capfd):
    host = server.url.split("//", 1)[1]
    options = f"base_url=http://user:{key}@{host},size=64x64"
    result = CliRunner().invoke(main, sweep_args(tiny_folder, options, "--allow-external", "true"))
    assert result.exit_code != 0 and "credentials in a URL" in result.output, result.output
    train = CliRunner().invoke(main, ["train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder),
                                      "--policy", "synthetic", "--generator", "openai", "--allow-external", "true",
                                      "--generator-options", options])
    assert train.exit_code != 0 and "credentials in a URL" in train.output
    with pytest.raises(SynthmedError) as caught:
        import synthmed

        synthmed.Config(generator_options=f"base_url=https://{key}@example.org/v1")
    captured = capfd.readouterr()
    hits = scan(key, *everything(tmp_path), result.output, train.output, str(caught.value), captured.out, captured.err)
    assert hits == [], hits
    assert server.connections == 0


def test_key_echoed_by_the_server_is_not_repeated(tmp_path, server, key, scan):
    """OpenAI's 401 says 'Incorrect API key provided: sk-...': that text must not carry the key on."""
    import torch

    from synthmed.generators.cache import GenerationCache, fill
    from synthmed.plugins import get_plugin_manager, registry

    server.push(*[error(401, f"Incorrect API key provided: {key}")] * 3)
    gen = registry("generators", get_plugin_manager(autoload=True)).get("openai")(
        base_url=server.url, api_key=key, size="64x64", concurrency=1, max_retries=0)
    src = torch.full((1, 1, 32, 32), 7, dtype=torch.uint8)
    with pytest.raises(SynthmedError) as caught:
        fill(GenerationCache(tmp_path / "cache"), gen, src, torch.zeros(1, dtype=torch.long), [(0, 0)], quiet=True)
    assert scan(key, str(caught.value), repr(gen), tmp_path) == []


OPT_IN_OFF = {
    "train-synthetic": ["train", "--policy", "synthetic", "--gradcam", "false"],
    "train-gradcam-panel": ["train", "--policy", "none", "--gradcam", "true"],
    "sweep-synthetic": ["sweep", "--policies", "synthetic", "--simulations", "1", "--real-fracs", "0.5"],
}


@pytest.mark.parametrize("command", OPT_IN_OFF.values(), ids=OPT_IN_OFF.keys())
def test_without_the_opt_in_the_server_gets_no_byte(store, tiny_folder, server, key, command):
    args = [*command, "--dataset", "imagefolder", "--data-dir", str(tiny_folder), "--image-size", "16", "--epochs", "1",
            "--quiet", "--generator", "openai", "--generator-options", f"base_url={server.url},size=64x64"]
    if command[0] == "train":
        args += ["--real-frac", "0.5", "--log-model", "false", "--register", "none"]
    result = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": key})
    assert "Traceback" not in result.output
    assert "--allow-external" in result.output or command[0] == "sweep", result.output
    assert server.connections == 0 and not server.seen
