"""The generation cache: keys, atomic writes, resume after a crash, stats, prune, and its CLI."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from synthmed.cli.generate import cache as cache_cli
from synthmed.config import Config
from synthmed.generators.base import Generator, source_hash
from synthmed.generators.cache import CACHE_ENV, GenerationCache, cache_key, fill, generation_seed
from synthmed.generators.elastic import ElasticGenerator


class Counting(Generator):
    """Elastic, but counts every item it makes; optionally paid, refusing, or interrupted."""

    name = "counting"
    deterministic = True

    def __init__(self, price=None, refuse=(), interrupt_after=None, batch_size=4):
        self.inner = ElasticGenerator()
        self.price, self.refuse, self.interrupt_after = price, set(refuse), interrupt_after
        self.batch_size = batch_size
        self.made: Counter = Counter()

    @property
    def cost_per_image_usd(self):
        return self.price

    def generate(self, images, labels, *, variation, seed):
        return self.inner.generate(images, labels, variation=variation, seed=seed)

    def iter_generate(self, images, labels, *, variations, seeds):
        for i, (v, s) in enumerate(zip(variations, seeds)):
            if self.interrupt_after is not None and sum(self.made.values()) >= self.interrupt_after:
                raise KeyboardInterrupt  # Ctrl-C while the generator works
            if s in self.refuse:
                yield i, None
                continue
            self.made[(s, v)] += 1
            yield i, self.generate(images[i : i + 1], labels[i : i + 1], variation=v, seed=s)[0]


def data(n=6):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8), torch.arange(n) % 4


REQUESTS = [(row, v) for row in range(6) for v in range(2)]  # 12 variations


def test_key_covers_source_generator_params_and_variation():
    base = cache_key("a" * 64, "elastic", {"alpha": 0.1}, 0)
    assert base == cache_key("a" * 64, "elastic", {"alpha": 0.1}, 0)
    assert len({base, cache_key("b" * 64, "elastic", {"alpha": 0.1}, 0), cache_key("a" * 64, "folder", {"alpha": 0.1}, 0),
                cache_key("a" * 64, "elastic", {"alpha": 0.2}, 0), cache_key("a" * 64, "elastic", {"alpha": 0.1}, 1)}) == 5
    assert cache_key("s", "g", {"a": 1, "b": 2}, 0) == cache_key("s", "g", {"b": 2, "a": 1}, 0)  # canonical JSON
    assert generation_seed("a" * 64, 0) != generation_seed("a" * 64, 1)


def test_store_is_lossless_atomic_and_carries_provenance(tmp_path):
    from PIL import Image

    cache = GenerationCache(tmp_path)
    image = torch.randint(0, 256, (1, 9, 7), dtype=torch.uint8)
    path = cache.store("elastic", "ab" * 32, image, {"source": "s", "variation": 3})
    assert torch.equal(cache.load("elastic", "ab" * 32), image)
    assert '"variation": 3' in Image.open(path).text["synthmed"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    cache = GenerationCache(tmp_path)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.store("elastic", "cd" * 32, torch.zeros(1, 4, 4, dtype=torch.uint8), {})
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p.name != ".lock")


def test_fill_generates_only_misses_and_counts(tmp_path):
    images, labels = data()
    cache, gen = GenerationCache(tmp_path), Counting(price=0.02)
    first = fill(cache, gen, images, labels, REQUESTS, quiet=True)
    assert (first.stats.hits, first.stats.misses, first.stats.paid_images) == (0, 12, 12)
    assert first.stats.cost_usd == pytest.approx(0.24)
    second = fill(cache, gen, images, labels, REQUESTS, quiet=True)
    assert (second.stats.hits, second.stats.misses, second.stats.paid_images, second.stats.cost_usd) == (12, 0, 0, 0)
    assert all(torch.equal(a, b) for a, b in zip(first.images, second.images))
    assert max(gen.made.values()) == 1 and sum(gen.made.values()) == 12
    assert second.stats.metrics()["synthetic_cache_hits"] == 12


def test_interrupted_fill_keeps_finished_images_and_resumes_without_repeats(tmp_path):
    images, labels = data()
    cache, gen = GenerationCache(tmp_path), Counting(interrupt_after=5, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        fill(cache, gen, images, labels, REQUESTS, quiet=True)
    assert cache.stats()["counting"]["entries"] == 5  # everything finished was written
    gen.interrupt_after = None
    again = fill(cache, gen, images, labels, REQUESTS, quiet=True)
    assert (again.stats.hits, again.stats.misses) == (5, 7)
    assert sum(gen.made.values()) == 12 and max(gen.made.values()) == 1  # no key generated twice


def test_ctrl_c_while_storing_lets_the_generator_hand_over_work_in_flight(tmp_path, monkeypatch):
    class InFlight(Counting):
        """Yields item 0, then — when interrupted — hands over item 1, which it already 'paid' for."""

        def iter_generate(self, images, labels, *, variations, seeds):
            make = lambda i: self.generate(images[i : i + 1], labels[i : i + 1], variation=variations[i], seed=seeds[i])[0]  # noqa: E731
            try:
                yield 0, make(0)
            except KeyboardInterrupt:
                yield 1, make(1)
                raise

    images, labels = data(2)
    cache = GenerationCache(tmp_path)
    real_store = cache.store
    calls = []

    def store(*args, **kwargs):
        calls.append(args[1])
        real_store(*args, **kwargs)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C right after the first write

    monkeypatch.setattr(cache, "store", store)
    with pytest.raises(KeyboardInterrupt):
        fill(cache, InFlight(), images, labels, [(0, 0), (1, 0)], quiet=True)
    assert cache.stats()["counting"]["entries"] == 2


def test_refusals_are_counted_and_never_cached(tmp_path):
    images, labels = data(2)
    refused_seed = generation_seed(source_hash(images[0]), 0)
    cache, gen = GenerationCache(tmp_path), Counting(price=0.01, refuse={refused_seed})
    result = fill(cache, gen, images, labels, [(0, 0), (1, 0)], quiet=True)
    assert result.images[0] is None and result.images[1] is not None
    assert (result.stats.refused, result.stats.paid_images) == (1, 1)
    gen.refuse = set()
    again = fill(cache, gen, images, labels, [(0, 0), (1, 0)], quiet=True)
    assert (again.stats.hits, again.stats.misses, again.stats.generated) == (1, 1, 1)


def test_parallel_fills_never_generate_a_key_twice(tmp_path):
    images, labels = data()
    gen = Counting()
    slow = gen.generate
    gen.generate = lambda *a, **k: (time.sleep(0.01), slow(*a, **k))[1]
    threads = [threading.Thread(target=fill, args=(GenerationCache(tmp_path), gen, images, labels, REQUESTS),
                                kwargs={"quiet": True}) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(gen.made.values()) == 12 and max(gen.made.values()) == 1


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert GenerationCache.from_config(Config()).root == tmp_path / "xdg" / "synthmed" / "generations"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert GenerationCache.from_config(Config()).root == tmp_path / "env"
    assert GenerationCache.from_config(Config(cache_dir=str(tmp_path / "cfg"))).root == tmp_path / "cfg"


def test_unreadable_entry_names_the_file(tmp_path):
    cache = GenerationCache(tmp_path)
    path = cache.path("elastic", "ef" * 32)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a png")
    with pytest.raises(Exception, match="delete that file"):
        cache.load("elastic", "ef" * 32)


# --- stats / prune, API and CLI ---------------------------------------------------------------------
@pytest.fixture
def filled(tmp_path):
    images, labels = data()
    cache = GenerationCache(tmp_path / "c")
    fill(cache, Counting(), images, labels, REQUESTS, quiet=True)
    fill(cache, ElasticGenerator(), images, labels, REQUESTS[:4], quiet=True)
    return cache


def test_stats_and_prune(filled):
    stats = filled.stats()
    assert {k: v["entries"] for k, v in stats.items()} == {"counting": 12, "elastic": 4}
    assert all(v["bytes"] > 0 for v in stats.values())
    old = next((filled.root / "elastic").glob("*/*.png"))
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    assert filled.prune(older_than_days=5, dry_run=True)["entries"] == 1
    assert filled.prune(older_than_days=5)["entries"] == 1
    assert filled.prune(generator="counting")["entries"] == 12
    assert {k: v["entries"] for k, v in filled.stats().items()} == {"elastic": 3}


def test_cache_cli_stats_and_prune(filled):
    runner = CliRunner()
    out = runner.invoke(cache_cli, ["stats", "--cache-dir", str(filled.root)])
    assert out.exit_code == 0 and "counting" in out.output and "16" in out.output
    refused = runner.invoke(cache_cli, ["prune", "--cache-dir", str(filled.root)])
    assert refused.exit_code != 0 and "--all" in refused.output
    declined = runner.invoke(cache_cli, ["prune", "--cache-dir", str(filled.root), "--generator", "elastic"], input="n\n")
    assert declined.exit_code != 0 and filled.stats()["elastic"]["entries"] == 4
    done = runner.invoke(cache_cli, ["prune", "--cache-dir", str(filled.root), "--generator", "elastic", "--yes"])
    assert done.exit_code == 0 and "deleted 4 entries" in done.output
    everything = runner.invoke(cache_cli, ["prune", "--cache-dir", str(filled.root), "--all", "-y"])
    assert everything.exit_code == 0 and filled.stats() == {}
    assert "empty" in runner.invoke(cache_cli, ["stats", "--cache-dir", str(filled.root)]).output


def test_cache_cli_uses_the_env_dir(filled, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(filled.root))
    out = CliRunner().invoke(cache_cli, ["stats"])
    assert str(filled.root) in out.output and "elastic" in out.output


def test_identical_sources_share_one_generation(tmp_path):
    images, labels = data(2)
    images = torch.cat([images, images[:1]])  # a duplicate image in the dataset
    gen = Counting()
    result = fill(GenerationCache(tmp_path), gen, images, torch.cat([labels, labels[:1]]), [(0, 0), (1, 0), (2, 0)], quiet=True)
    assert sum(gen.made.values()) == 2 and torch.equal(result.images[0], result.images[2])
