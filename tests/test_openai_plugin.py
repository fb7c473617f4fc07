"""The synthmed-openai plugin, with the real ``openai`` client against a local images-API server."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

import pytest
import torch
from _openai_server import REFUSAL, FakeImagesServer, error, openai_plugin

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.generators.cache import GenerationCache, fill
from synthmed.plugins import get_plugin_manager, registry

synthmed_openai = pytest.importorskip("synthmed_openai", reason="plugins/synthmed-openai is not installed")
from synthmed_openai import _pricing, _requests  # noqa: E402
from synthmed_openai import generator as openai_generator  # noqa: E402

KEY = "sk-test-SECRET-9f3c2a71d"


@pytest.fixture
def server():
    with FakeImagesServer() as s:
        yield s


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(_requests, "BACKOFF_S", 0.01)


def make(server, **options):
    return openai_plugin(server, KEY, **options)


def images(b=2, size=32):
    """Blocky images (8x8 constant blocks) that survive an up- and downscale nearly unchanged."""
    g = torch.Generator().manual_seed(b)
    small = torch.randint(0, 256, (b, 1, size // 8, size // 8), generator=g, dtype=torch.uint8)
    return small.repeat_interleave(8, -1).repeat_interleave(8, -2), torch.arange(b) % 4


def requests_for(b):
    return [(row, 0) for row in range(b)]


# --- discovery, endpoints ---------------------------------------------------------------------------
def test_found_through_its_own_entry_point_and_distribution():
    assert "synthmed_openai" in [ep.value for ep in entry_points(group="synthmed")]
    reg = registry("generators", get_plugin_manager(autoload=True))
    assert reg.provider("openai").startswith("synthmed-openai ")
    assert reg.get("openai").sends_data_off_machine is True


def test_gpt_image_models_use_the_edits_endpoint(server):
    src, labels = images()
    out = make(server).generate(src, labels, variation=0, seed=0)
    assert out.dtype == torch.uint8 and out.shape == src.shape
    assert (out.float() - (255 - src.float())).abs().mean() < 3  # grayscale, back at the source's size
    seen = server.seen[0]
    assert seen.path == "/v1/images/edits" and seen.authorization == f"Bearer {KEY}"
    assert seen.fields["model"] == "gpt-image-2" and seen.fields["quality"] == "low" and "MRI" in seen.fields["prompt"]
    assert "response_format" not in seen.fields


def test_dall_e_2_uses_variations_warns_once_and_leaks_no_deprecation(server, monkeypatch):
    monkeypatch.setattr(openai_generator, "_warned_retired", False)
    src, labels = images()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = make(server, model="dall-e-2", size=None)
        make(server, model="dall-e-2", size=None)
        out = gen.generate(src, labels, variation=0, seed=0)
    kinds = [w.category for w in caught]
    assert kinds.count(openai_generator.RetiredEndpointWarning) == 1 and DeprecationWarning not in kinds
    assert out.shape == src.shape
    seen = server.seen[0]
    assert seen.path == "/v1/images/variations"
    assert seen.fields == {"model": "dall-e-2", "n": "1", "response_format": "b64_json", "size": "256x256"}


def test_variations_of_one_source_share_a_request(server):
    src, labels = images(1)
    gen = make(server, n=3)
    items = dict(gen.iter_generate(src.repeat(3, 1, 1, 1), labels.repeat(3), variations=[0, 1, 2], seeds=[1, 2, 3]))
    assert sorted(items) == [0, 1, 2] and all(v is not None for v in items.values())
    assert len(server.seen) == 1 and server.seen[0].fields["n"] == "3"


# --- retries, refusals ------------------------------------------------------------------------------
def test_429_retry_after_is_honoured_and_counted(server):
    server.push(error(429, "slow down", {"Retry-After": "1"}))
    src, labels = images(1)
    gen = make(server)
    gen.generate(src, labels, variation=0, seed=0)
    assert [s.status for s in server.seen] == [429, 200]
    assert server.seen[1].at - server.seen[0].at >= 0.95
    assert (gen.stats.retries, gen.stats.retry_after_honoured, gen.stats.retry_wait_s) == (1, 1, 1.0)


def test_5xx_are_retried_with_backoff_then_given_up(server):
    server.push(error(500), error(502))
    src, labels = images(1)
    gen = make(server)
    gen.generate(src, labels, variation=0, seed=0)
    assert [s.status for s in server.seen] == [500, 502, 200] and gen.stats.retries == 2
    server.push(error(503), error(503))
    with pytest.raises(SynthmedError, match="still failing after 1 retries"):
        make(server, max_retries=1).generate(src, labels, variation=0, seed=0)


def test_an_unreadable_image_from_the_service_is_a_clear_error(server):
    server.push((200, {}, {"created": 0, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]}))  # "not an image"
    src, labels = images(1)
    with pytest.raises(SynthmedError, match="returned an unreadable image"):
        make(server).generate(src, labels, variation=0, seed=0)


def test_content_policy_refusal_is_counted_skipped_and_not_cached(server, tmp_path):
    server.push(REFUSAL)
    src, labels = images(3)
    cache, gen = GenerationCache(tmp_path), make(server, price_usd="0.04")
    result = fill(cache, gen, src, labels, requests_for(3), quiet=True)
    assert sum(img is None for img in result.images) == 1 and gen.stats.refusals == 1
    assert (result.stats.refused, result.stats.paid_images) == (1, 2)
    assert result.stats.cost_usd == pytest.approx(0.08)
    assert cache.stats()["openai"]["entries"] == 2
    again = fill(cache, gen, src, labels, requests_for(3), quiet=True)
    assert (again.stats.hits, again.stats.generated) == (2, 1) and len(server.seen) == 4


def test_refusals_above_the_cap_are_fatal(server, tmp_path):
    server.push(REFUSAL, REFUSAL)
    src, labels = images(4)
    with pytest.raises(SynthmedError, match="max_refusals=1"):
        fill(GenerationCache(tmp_path), make(server, max_refusals=1), src, labels, requests_for(4), quiet=True)


# --- killed midway, resumed -------------------------------------------------------------------------
def test_a_server_dying_midway_loses_nothing_and_the_rerun_repeats_no_request(server, tmp_path):
    server.fail_after = 3
    src, labels = images(8)
    cache = GenerationCache(tmp_path)
    with pytest.raises(SynthmedError, match="503"):
        fill(cache, make(server, max_retries=0, concurrency=2), src, labels, requests_for(8), quiet=True)
    assert cache.stats()["openai"]["entries"] == len(server.successes) == 3
    server.fail_after = None
    fill(cache, make(server, concurrency=2), src, labels, requests_for(8), quiet=True)
    assert len(server.successes) == 8 and set(server.success_count_by_source().values()) == {1}


class _CtrlCAfter(GenerationCache):
    """A cache whose ``n``-th write is followed by Ctrl-C, raised in the main thread where it lands.

    Deterministic: the interrupt no longer races the requests (``_thread.interrupt_main`` from the
    server thread was delivered whenever the main thread next ran bytecode, so under load the
    whole fill could finish first). Requests 4 and 5 are in flight or done at that moment.
    """

    def __init__(self, root, n: int):
        super().__init__(root)
        self.writes, self.n = 0, n

    def store(self, *args, **kwargs):
        path = super().store(*args, **kwargs)
        self.writes += 1
        if self.writes == self.n:
            raise KeyboardInterrupt
        return path


def test_ctrl_c_midway_keeps_requests_in_flight_and_the_rerun_repeats_none(server, tmp_path):
    server.delay_s = 0.05  # keeps requests in flight; the interrupt's moment does not depend on it
    src, labels = images(8)
    cache = _CtrlCAfter(tmp_path, n=3)
    with pytest.raises(KeyboardInterrupt):
        fill(cache, make(server, concurrency=2), src, labels, requests_for(8), quiet=True)
    stored = cache.stats()["openai"]["entries"]
    assert 3 <= stored < 8 and stored == len(server.successes)  # every paid image was kept
    server.delay_s = 0
    fill(cache, make(server, concurrency=2), src, labels, requests_for(8), quiet=True)
    assert len(server.successes) == 8 and set(server.success_count_by_source().values()) == {1}


# --- options, prices, keys --------------------------------------------------------------------------
def test_prices_and_options():
    assert _pricing.price_per_image("gpt-image-2", "1024x1024", "low") == 0.006
    assert _pricing.price_per_image("gpt-image-2", "1536x1024", "high") == pytest.approx(0.211 * 1.5)
    assert _pricing.price_per_image("dall-e-2", "256x256", None) == 0.016
    cls = registry("generators", get_plugin_manager(autoload=True)).get("openai")
    assert cls().cost_per_image_usd == 0.006  # default: gpt-image-2, 1024x1024, low
    with pytest.raises(SynthmedError, match="price_usd"):
        cls(model="my-local-model")
    assert cls(model="my-local-model", price_usd="0").cost_per_image_usd == 0.0
    with pytest.raises(SynthmedError, match="option n=.*out of range"):
        cls(n="11")
    assert "api_key" not in cls(api_key=KEY).output_params() and KEY not in repr(cls(api_key=KEY))


def test_missing_or_rejected_keys_fail_clearly_without_showing_the_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    src, labels = images(1)
    with pytest.raises(SynthmedError, match="no API key"):
        make(server, api_key=None).generate(src, labels, variation=0, seed=0)
    server.push((401, {}, {"error": {"message": "Incorrect API key", "type": "invalid_request_error", "code": "invalid_api_key"}}))
    with pytest.raises(SynthmedError, match="rejected") as info:
        make(server).generate(src, labels, variation=0, seed=0)
    assert KEY not in str(info.value)


def test_refused_without_allow_external_and_nothing_is_sent(server, tiny_splits, tmp_path, monkeypatch):
    from synthmed.policies.base import PolicyContext
    from synthmed.policies.synthetic import SyntheticPolicy
    from synthmed.training import sample_real

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = Config(policy="synthetic", generator="openai", real_frac=0.25, image_size=32, quiet=True,
                    cache_dir=str(tmp_path), generator_options=f"base_url={server.url},size=64x64")
    with pytest.raises(SynthmedError, match="--allow-external"):
        SyntheticPolicy.from_config(config)
    with pytest.raises(SynthmedError, match="--allow-external"):
        SyntheticPolicy(config).training_set(sample_real(tiny_splits, config)[0], PolicyContext(config, tiny_splits))
    assert server.seen == []
    allowed = config.replace(allow_external=True)
    real, _ = sample_real(tiny_splits, allowed)
    mixed = SyntheticPolicy.from_config(allowed).training_set(real, PolicyContext(allowed, tiny_splits))
    assert len(mixed) == len(tiny_splits.train) and len(server.successes) == len(mixed) - len(real)


def test_the_key_is_refused_as_a_generator_option():
    with pytest.raises(SynthmedError, match="must not carry secrets"):
        Config(generator="openai", generator_options=f"size=64x64,api_key={KEY}")


@pytest.mark.slow
def test_the_key_never_reaches_the_mlflow_store(server, tiny_splits, mlflow_uri, tmp_path, monkeypatch):
    training = pytest.importorskip("synthmed.training")
    options = f"base_url={server.url},size=64x64,price_usd=0.01"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = Config(policy="synthetic", generator="openai", allow_external=True, generator_options=options,
                    real_frac=0.25, image_size=32, epochs=1, batch_size=16, gradcam=False, quiet=True,
                    cache_dir=str(tmp_path / "cache"))
    result = training.train(config, splits=tiny_splits)
    assert server.successes and all(s.authorization == f"Bearer {KEY}" for s in server.seen)  # the key was used
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.name == "provenance.csv" for p in files)
    leaks = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert leaks == []  # sqlite store, artifacts, cache metadata: the key is nowhere
    import mlflow

    run = mlflow.get_run(result.run_id)
    assert run.data.params["allow_external"].lower() == "true"  # the opt-in is on record
    assert run.data.metrics["synthetic_paid_images"] == len(server.successes)
