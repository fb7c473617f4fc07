"""Dataset plugins: the real Alzheimer MRI copy, hub failure modes, and a user's image folder."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.config import Config
from synthmed.data._decode import clear_memo
from synthmed.errors import SynthmedError
from synthmed.plugins import registry

CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")


@pytest.fixture(autouse=True)
def _fresh_memo(monkeypatch):
    monkeypatch.delenv("SYNTHMED_DATA_DIR", raising=False)
    clear_memo()
    yield
    clear_memo()


def load(pm, dataset: str, **config):
    return registry("datasets", pm).get(dataset)().load(Config(dataset=dataset, **config))


# --- the real Alzheimer MRI copy ----------------------------------------------------------------------
def test_alzheimer_real_data_through_the_registry(pm, real_data_dir):
    splits = load(pm, "alzheimer_mri", data_dir=str(real_data_dir))
    assert splits.train.images.shape == (5120, 1, 128, 128) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (1280, 1, 128, 128) and splits.test.images.dtype == torch.uint8
    assert splits.classes == CLASSES
    assert splits.train.class_counts(4) == [724, 49, 2566, 1781]
    assert splits.test.class_counts(4) == [172, 15, 634, 459]
    assert torch.equal(splits.train.index, torch.arange(5120))
    assert splits.meta["skipped_images"] == 0 and splits.meta["manifest"] == "verified"
    assert splits.meta["source"] == str(real_data_dir.resolve())

    splits.train.images.zero_()  # callers may change what they get: the memo keeps its own copy
    memoized = load(pm, "alzheimer_mri", data_dir=str(real_data_dir))
    assert memoized.train.images.float().mean() > 10
    clear_memo()
    again = load(pm, "alzheimer_mri", data_dir=str(real_data_dir))  # decoded afresh
    assert again.fingerprint == memoized.fingerprint == splits.fingerprint
    assert torch.equal(again.train.images, memoized.train.images)


def test_alzheimer_env_var_and_resize(pm, real_data_dir, monkeypatch):
    monkeypatch.setenv("SYNTHMED_DATA_DIR", str(real_data_dir))
    small = load(pm, "alzheimer_mri", image_size=64)
    assert small.train.images.shape == (5120, 1, 64, 64) and small.test.images.shape == (1280, 1, 64, 64)
    assert small.meta["source"] == str(real_data_dir.resolve())


def test_alzheimer_manifest_mismatch_names_the_file(pm, real_data_dir, tmp_path):
    copy = tmp_path / "copy"
    (copy / "data").mkdir(parents=True)
    shutil.copy(real_data_dir / "manifest.json", copy / "manifest.json")
    train_file = "data/train-00000-of-00001.parquet"
    (copy / train_file).symlink_to(real_data_dir / train_file)  # unchanged: no need to copy 22 MB
    test_file = copy / "data" / "test-00000-of-00001.parquet"
    shutil.copy(real_data_dir / "data" / "test-00000-of-00001.parquet", test_file)
    test_file.chmod(0o644)
    data = bytearray(test_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    test_file.write_bytes(bytes(data))
    with pytest.raises(SynthmedError, match=r"sha256 mismatch for data/test-00000-of-00001\.parquet"):
        load(pm, "alzheimer_mri", data_dir=str(copy))
    test_file.unlink()
    with pytest.raises(SynthmedError, match=r"test-00000-of-00001\.parquet is listed in .* but missing"):
        load(pm, "alzheimer_mri", data_dir=str(copy))


# --- where the data comes from: errors ----------------------------------------------------------------
def test_hub_offline_without_local_copy_fails_fast(pm, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(SynthmedError, match="SYNTHMED_DATA_DIR") as info:
        load(pm, "alzheimer_mri")
    assert time.monotonic() - start < 5
    assert "--data-dir" in str(info.value) and "Falah/Alzheimer_MRI" in str(info.value)


def test_unreachable_hub_fails_fast(pm, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    start = time.monotonic()
    with pytest.raises(SynthmedError, match=r"cannot reach .*SYNTHMED_DATA_DIR.*HF_HUB_OFFLINE=1"):
        load(pm, "alzheimer_mri", revision="v1")
    assert time.monotonic() - start < 5


def test_missing_data_dir_is_named(pm, tmp_path, monkeypatch, hf_cache):
    with pytest.raises(SynthmedError, match=r"data_dir \(--data-dir\) = '.*nowhere' is not an existing folder"):
        load(pm, "alzheimer_mri", data_dir=str(tmp_path / "nowhere"))
    monkeypatch.setenv("SYNTHMED_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(SynthmedError, match=r"SYNTHMED_DATA_DIR = '.*gone'"):
        load(pm, "alzheimer_mri")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthmedError, match="cannot read a dataset from"):
        load(pm, "alzheimer_mri", data_dir=str(tmp_path / "empty"))  # exists, holds no data files


# --- bad input in hub-layout data ---------------------------------------------------------------------
def png(value: int, size=(16, 16), mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """Keep the Hugging Face datasets cache of throwaway copies out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


def write_hub_layout(folder: Path, train: list, test: list, names: list[str]) -> Path:
    """A tiny local copy with the hub's layout: data/{train,test}-00000-of-00001.parquet."""
    import datasets

    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=names))
    for split, rows in (("train", train), ("test", test)):
        columns = {"image": [{"bytes": b, "path": f"{split}_{i}.png"} for i, (b, _) in enumerate(rows)],
                   "label": [label for _, label in rows]}
        ds = datasets.Dataset.from_dict(columns, features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


ALZHEIMER = ["Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"]


def test_hub_layout_bad_image_errors_or_is_skipped(pm, tmp_path, hf_cache):
    rows = [(png(10), 0), (b"not an image", 1), (png(30), 1), (png(35), 2), (png(36), 3)]
    folder = write_hub_layout(tmp_path / "copy", rows, [(png(40), 0), (png(50), 1)], ALZHEIMER)
    with pytest.raises(SynthmedError, match=r"cannot decode image train_1\.png \(row 1\) in the train split"):
        load(pm, "alzheimer_mri", data_dir=str(folder), image_size=16)
    splits = load(pm, "alzheimer_mri", data_dir=str(folder), image_size=16, skip_bad_images=True)
    assert splits.meta["skipped_images"] == 1 and splits.meta["manifest"] == "absent"
    assert splits.meta["skipped_files"] == ["train: train_1.png (row 1)"]
    assert splits.train.index.tolist() == [0, 2, 3, 4] and splits.train.labels.tolist() == [0, 1, 2, 3]
    assert splits.classes == tuple(ALZHEIMER)


def test_a_source_with_other_class_names_is_refused_naming_both_lists(pm, tmp_path, hf_cache):
    """A later hub revision was reported to list three class names: it must not train silently."""
    three = ["Mild_Demented", "Non_Demented", "Very_Mild_Demented"]
    rows = [(png(10 + i), i) for i in range(3)]
    folder = write_hub_layout(tmp_path / "three", rows, rows, three)
    with pytest.raises(SynthmedError) as err:
        load(pm, "alzheimer_mri", data_dir=str(folder), image_size=16)
    message = str(err.value)
    assert "[Mild_Demented, Non_Demented, Very_Mild_Demented]" in message
    assert "[Mild_Demented, Moderate_Demented, Non_Demented, Very_Mild_Demented]" in message
    renamed = ["mild", "moderate", "none", "very_mild"]
    folder = write_hub_layout(tmp_path / "renamed", [(png(i), i) for i in range(4)], [(png(9), 0)], renamed)
    with pytest.raises(SynthmedError, match="expects"):
        load(pm, "alzheimer_mri", data_dir=str(folder), image_size=16)


def test_hub_layout_unknown_label_and_empty_class(pm, tmp_path, hf_cache):
    folder = write_hub_layout(tmp_path / "x", [(png(1), 0), (png(2), -1)], [(png(3), 0)], ALZHEIMER)
    with pytest.raises(SynthmedError, match=r"train row 1 .* has label -1, outside the classes 0\.\.3"):
        load(pm, "alzheimer_mri", data_dir=str(folder), image_size=16)
    folder = write_hub_layout(tmp_path / "y", [(png(1), 0), (png(2), 0), (png(4), 2), (png(5), 3)], [(png(3), 1)],
                              ALZHEIMER)
    with pytest.raises(SynthmedError, match=r"class 'Moderate_Demented' has no training images"):
        load(pm, "alzheimer_mri", data_dir=str(folder), image_size=16)


# --- imagefolder ------------------------------------------------------------------------------------
def save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_folder(root: Path, counts: dict[str, int], size=(12, 12)) -> Path:
    for c, n in counts.items():
        for i in range(n):
            save(root / c / f"{i}.png", Image.new("L", size, 10 * i))
    return root


def test_imagefolder_without_split_makes_a_recorded_stratified_test_split(pm, tmp_path):
    root = make_folder(tmp_path, {"zeta": 10, "alpha": 5, "solo": 1})
    (root / "alpha" / "notes.txt").write_text("not an image")
    splits = load(pm, "imagefolder", data_dir=str(root), image_size=12, test_frac=0.2, split_seed=3)
    assert splits.classes == ("alpha", "solo", "zeta")
    assert splits.test.class_counts(3) == [1, 0, 2] and splits.train.class_counts(3) == [4, 1, 8]
    assert splits.meta["test_split"] == "stratified test_frac=0.2 seed=3"
    assert len(splits.meta["test_files"]) == 3 and all(f.endswith(".png") for f in splits.meta["test_files"])
    assert splits.meta["ignored_files"] == ["alpha/notes.txt"]
    train_idx, test_idx = set(splits.train.index.tolist()), set(splits.test.index.tolist())
    assert not train_idx & test_idx and len(train_idx | test_idx) == 16
    again = load(pm, "imagefolder", data_dir=str(root), image_size=12, test_frac=0.2, split_seed=3)
    assert again.meta["test_files"] == splits.meta["test_files"] and again.fingerprint == splits.fingerprint
    other = load(pm, "imagefolder", data_dir=str(root), image_size=12, test_frac=0.2, split_seed=4)
    assert other.meta["test_files"] != splits.meta["test_files"]
    same_split = load(pm, "imagefolder", data_dir=str(root), image_size=12, test_frac=0.2, split_seed=3, seed=9)
    assert same_split.meta["test_files"] == splits.meta["test_files"]  # `seed` (simulations) keeps the test set


def test_imagefolder_with_train_and_test_colour_and_resize(pm, tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "test", {"a": 1, "b": 1})
    rgb = Image.new("RGB", (20, 10), (200, 100, 50))
    save(tmp_path / "train" / "a" / "rgb.jpg", rgb.copy())
    palette = Image.new("P", (20, 10), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50])  # index 1 = the same colour as rgb
    save(tmp_path / "train" / "b" / "palette.png", palette)
    deep = np.full((10, 10), 1000, dtype=np.uint16)
    deep[0, 0] = 3000
    save(tmp_path / "test" / "b" / "deep.png", Image.fromarray(deep))  # 16-bit: min-max scaled
    splits = load(pm, "imagefolder", data_dir=str(tmp_path), image_size=16)
    assert splits.train.images.shape == (6, 1, 16, 16) and splits.test.images.shape == (3, 1, 16, 16)
    assert splits.meta["test_split"] == "folder test/" and "test_files" not in splits.meta
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # ITU-R 601-2, as Pillow's convert("L")
    paths = sorted(["a/0.png", "a/1.png", "a/rgb.jpg", "b/0.png", "b/1.png", "b/palette.png"])
    rgb_row, palette_row = paths.index("a/rgb.jpg"), paths.index("b/palette.png")
    assert abs(int(splits.train.images[rgb_row].float().mean()) - luma) <= 3  # JPEG is lossy
    assert int(splits.train.images[palette_row, 0, 8, 8]) == luma
    assert splits.test.images[2].max() == 255 and splits.test.images[2].min() == 0


def test_imagefolder_corrupt_file_errors_or_is_skipped(pm, tmp_path):
    root = make_folder(tmp_path, {"a": 3, "b": 3})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(SynthmedError, match=r"cannot decode image .*b/broken\.png.*skip_bad_images=true"):
        load(pm, "imagefolder", data_dir=str(root), image_size=12)
    splits = load(pm, "imagefolder", data_dir=str(root), image_size=12, skip_bad_images=True)
    assert splits.meta["skipped_images"] == 1 and splits.meta["skipped_files"] == ["b/broken.png"]
    assert len(splits.train) + len(splits.test) == 6


def test_imagefolder_class_with_only_bad_images(pm, tmp_path):
    root = make_folder(tmp_path, {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"junk")
    with pytest.raises(SynthmedError, match=r"class 'b' of .* has no decodable training images"):
        load(pm, "imagefolder", data_dir=str(root), image_size=12, skip_bad_images=True)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a": 2, "b": 0}, r"class folder .*/b has no image files"),
        ({}, r"no class folders in"),
        ({"train/a": 1, "train/b": 1, "test/a": 1, "test/c": 1}, r"only in train/: b; only in test/: c"),
        ({"train/a": 1}, r"has train/ but no test/"),
    ],
)
def test_imagefolder_layout_errors(pm, tmp_path, layout, message):
    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        make_folder(tmp_path, {folder: n})
    with pytest.raises(SynthmedError, match=message):
        load(pm, "imagefolder", data_dir=str(tmp_path), image_size=12)


def test_imagefolder_needs_an_existing_data_dir(pm, tmp_path):
    with pytest.raises(SynthmedError, match=r"imagefolder needs a folder.*--data-dir"):
        load(pm, "imagefolder")
    with pytest.raises(SynthmedError, match=r"'.*missing' is not an existing folder"):
        load(pm, "imagefolder", data_dir=str(tmp_path / "missing"))
