import json

import numpy as np
import pytest
import torch
from PIL import Image

from guardgen.data import (ImageFolderDataset, load_digits, load_image_folder, load_image_set, load_lfw, load_mnist,
                           load_photos, save_grid, write_image_set)
from guardgen.errors import GuardgenError


def _png(path, value, size=8, mode="L", fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size) if mode == "L" else (size, size, 3), value, dtype=np.uint8)
    Image.fromarray(arr, mode).save(path, format=fmt)


def test_mnist_split_is_fixed_and_balanced():
    train, test = load_mnist("train"), load_mnist("test")
    assert train.images.shape == (4000, 1, 16, 16) and test.images.shape == (1000, 1, 16, 16)
    assert train.labels.bincount().tolist() == [400] * 10 and test.labels.bincount().tolist() == [100] * 10
    assert 0 <= train.images.min() and train.images.max() <= 1
    assert torch.equal(load_mnist("test").images, test.images)
    # the splits share no image
    flat_train = {tuple(x.flatten().mul(255).round().int().tolist()[:64]) for x in train.images[:500]}
    assert not any(tuple(x.flatten().mul(255).round().int().tolist()[:64]) in flat_train for x in test.images[:100])


def test_mnist_exclude_and_resolution():
    out = load_mnist("train", resolution=28, exclude=(7,))
    assert out.images.shape[-1] == 28 and 7 not in out.labels.tolist() and len(out) == 3600
    with pytest.raises(GuardgenError, match="unknown MNIST split"):
        load_mnist("validation")


def test_other_shipped_sets():
    assert load_digits().images.shape == (1797, 1, 16, 16)
    lfw = load_lfw()
    assert lfw.images.shape == (200, 1, 25, 25) and lfw.labels.sum() == 100
    photos = load_photos(resolution=32)
    assert photos.images.shape[1:] == (3, 32, 32) and len(photos) >= 8


def test_binary_layout_with_bad_files_skipped(tmp_path):
    for i in range(3):
        _png(tmp_path / "0_real" / f"r{i}.png", 10)
        _png(tmp_path / "1_fake" / f"f{i}.jpg", 250, fmt="JPEG")
    (tmp_path / "1_fake" / "notes.txt").write_text("not an image")
    (tmp_path / "1_fake" / "empty.png").write_bytes(b"")
    good = (tmp_path / "0_real" / "r0.png").read_bytes()
    (tmp_path / "0_real" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "0_real" / ".DS_Store").write_bytes(b"\x00\x01")
    images, report = load_image_folder(tmp_path)
    assert images.class_names == ["real", "fake"]
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert report.loaded == 6 and len(report.skipped) == 3
    assert {p.split("/")[-1] for p, _ in report.skipped} == {"notes.txt", "empty.png", "truncated.png"}
    assert images.images[:3].max() < 0.1 and images.images[3:].min() > 0.9


def test_nested_binary_and_per_source_layouts(tmp_path):
    for cat in ("car", "cat"):
        _png(tmp_path / "nested" / cat / "0_real" / "a.png", 0)
        _png(tmp_path / "nested" / cat / "1_fake" / "b.png", 255)
    nested, _ = load_image_folder(tmp_path / "nested")
    assert nested.labels.tolist() == [0, 1, 0, 1]
    for src in ("stylegan", "dcgan", "real"):
        for i in range(2):
            _png(tmp_path / "sources" / src / f"{i}.png", 100, mode="RGB")
    sources, _ = load_image_folder(tmp_path / "sources", resolution=4)
    assert sources.class_names == ["dcgan", "real", "stylegan"]
    assert sources.images.shape == (6, 3, 4, 4) and sources.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_mixed_sizes_need_a_resolution(tmp_path):
    _png(tmp_path / "a.png", 0, size=8)
    _png(tmp_path / "b.png", 0, size=12)
    with pytest.raises(GuardgenError, match="pass a resolution"):
        load_image_folder(tmp_path)
    images, _ = load_image_folder(tmp_path, resolution=6, channels=3)
    assert images.images.shape == (2, 3, 6, 6)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(GuardgenError, match="no such image folder"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(GuardgenError, match="no readable images"):
        load_image_folder(tmp_path)


def test_lazy_dataset_skips_unreadable(tmp_path):
    _png(tmp_path / "real" / "a.png", 0)
    _png(tmp_path / "fake" / "b.png", 255)
    (tmp_path / "fake" / "c.png").write_bytes(b"garbage")
    ds = ImageFolderDataset(tmp_path, resolution=4, channels=1)
    assert len(ds) == 2 and len(ds.report.skipped) == 1
    by_label = {y: x for x, y in (ds[i] for i in range(len(ds)))}
    assert set(by_label) == {0, 1} and by_label[1].shape == (1, 4, 4)
    assert by_label[1].min() > 0.9 and by_label[0].max() < 0.1


def test_generated_set_round_trip(tmp_path):
    images = torch.rand(6, 1, 8, 8)
    write_image_set(images, tmp_path / "gen", labels=[0, 1, 2, 0, 1, 2], class_names=["a", "b", "c"], metadata={"generator": "zoo:x", "seed": 3})
    back = load_image_set(tmp_path / "gen")
    assert (back.images - images).abs().max() <= 1 / 255 + 1e-6
    assert back.labels.tolist() == [0, 1, 2, 0, 1, 2] and back.class_names == ["a", "b", "c"]
    assert json.loads((tmp_path / "gen" / "manifest.json").read_text())["metadata"]["seed"] == 3
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["a", "b", "c", "manifest.json"]


def test_save_grid_size(tmp_path):
    path = save_grid(torch.rand(20, 1, 16, 16), tmp_path / "g.png", nrow=10, scale=2)
    with Image.open(path) as img:
        assert img.mode == "L" and img.size[0] > 10 * 32 and img.size[1] > 2 * 32
