"""Generated-image sets (PNG + manifest.json) and PNG grids."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from guardgen.data import load_image_set, save_grid, write_image_set
from guardgen.errors import GuardgenError


def _no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_round_trip_with_classes(tmp_path):
    images = torch.rand(6, 1, 8, 8)
    meta = {"generator": "zoo:mnist-ddpm", "seed": 3, "num_steps": torch.tensor(20)}
    out = write_image_set(images, tmp_path / "gen", labels=torch.tensor([0, 1, 2, 0, 1, 2]),
                          class_names=["a", "b", "c"], metadata=meta)
    assert out == tmp_path / "gen" and _no_temp_files(out)
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c", "manifest.json"]
    assert sorted(p.name for p in (out / "b").iterdir()) == ["000001.png", "000004.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metadata"] == {"generator": "zoo:mnist-ddpm", "seed": 3, "num_steps": 20}
    assert manifest["files"][:2] == ["a/000000.png", "b/000001.png"] and manifest["channels"] == 1
    back = load_image_set(out)
    assert back.images.shape == (6, 1, 8, 8) and back.images.dtype == torch.float32
    assert (back.images - images).abs().max() <= 1 / 255
    assert back.labels.tolist() == [0, 1, 2, 0, 1, 2] and back.class_names == ["a", "b", "c"]


def test_round_trip_rgb_without_labels(tmp_path):
    images = torch.rand(3, 3, 5, 7) * 1.4 - 0.2  # out of range values are clamped
    write_image_set(images, tmp_path / "gen")
    assert sorted(p.name for p in (tmp_path / "gen" / "all").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    back = load_image_set(tmp_path / "gen")
    assert back.images.shape == (3, 3, 5, 7) and back.labels.tolist() == [0, 0, 0] and back.class_names == ["all"]
    assert (back.images - images.clamp(0, 1)).abs().max() <= 1 / 255


def test_labels_without_names_and_unsafe_names(tmp_path):
    write_image_set(torch.zeros(3, 1, 4, 4), tmp_path / "a", labels=[2, 0, 2])
    back = load_image_set(tmp_path / "a")
    assert back.class_names == ["0", "1", "2"] and back.labels.tolist() == [2, 0, 2]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["0", "2", "manifest.json"]
    write_image_set(torch.zeros(2, 1, 4, 4), tmp_path / "b", labels=[0, 1], class_names=["cat/dog", "../up"])
    assert load_image_set(tmp_path / "b").class_names == ["cat/dog", "../up"]
    assert all(p.parent.parent == tmp_path / "b" for p in (tmp_path / "b").rglob("*.png"))
    assert not (tmp_path / "up").exists()


def test_rewrite_replaces_the_set(tmp_path):
    write_image_set(torch.ones(4, 1, 4, 4), tmp_path / "gen", labels=[0, 1, 0, 1], class_names=["x", "y"])
    write_image_set(torch.zeros(2, 1, 4, 4), tmp_path / "gen")
    assert sorted(str(p.relative_to(tmp_path / "gen")) for p in (tmp_path / "gen").rglob("*.png")) == [
        "all/000000.png", "all/000001.png"]
    back = load_image_set(tmp_path / "gen")
    assert len(back) == 2 and back.images.max() == 0


def test_write_errors(tmp_path):
    with pytest.raises(GuardgenError, match=r"\(N, C, H, W\)"):
        write_image_set(torch.rand(2, 8, 8), tmp_path / "g")
    with pytest.raises(GuardgenError, match="one label per image"):
        write_image_set(torch.rand(2, 1, 8, 8), tmp_path / "g", labels=[0])
    with pytest.raises(GuardgenError, match="no class name"):
        write_image_set(torch.rand(2, 1, 8, 8), tmp_path / "g", labels=[0, 2], class_names=["a", "b"])
    with pytest.raises(GuardgenError, match="JSON"):
        write_image_set(torch.rand(1, 1, 8, 8), tmp_path / "g", metadata={"model": object()})
    assert not (tmp_path / "g" / "manifest.json").exists()


def test_load_errors_and_fallback(tmp_path):
    with pytest.raises(GuardgenError, match="no such image folder"):
        load_image_set(tmp_path / "nope")
    write_image_set(torch.rand(3, 1, 4, 4), tmp_path / "gen", labels=[0, 1, 1], class_names=["real", "sd"])
    (tmp_path / "gen" / "sd" / "000002.png").unlink()
    with pytest.raises(GuardgenError, match="000002.png: listed in manifest.json but missing"):
        load_image_set(tmp_path / "gen")
    (tmp_path / "gen" / "manifest.json").unlink()  # no manifest: read as a per-source image folder
    back = load_image_set(tmp_path / "gen")
    assert back.class_names == ["real", "sd"] and back.labels.tolist() == [0, 1]


def test_save_grid(tmp_path):
    images = torch.rand(20, 1, 16, 16)
    path = save_grid(images, tmp_path / "out" / "grid.png", nrow=10, scale=4, padding=1)
    assert path == tmp_path / "out" / "grid.png" and _no_temp_files(tmp_path / "out")
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == (10 * 68 + 4, 2 * 68 + 4)
        arr = torch.from_numpy(np.array(img)).long()
    first = arr[4:68, 4:68]  # image 0, after a 4-pixel border
    expected = (images[0, 0] * 255).round().repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(first, expected.long())
    assert arr[0].eq(255).all()  # white padding
    with Image.open(save_grid(torch.rand(3, 3, 8, 8), tmp_path / "rgb.png", nrow=2, scale=1, padding=0)) as img:
        assert img.mode == "RGB" and img.size == (16, 16)
    with pytest.raises(GuardgenError, match="nrow"):
        save_grid(images, tmp_path / "bad.png", nrow=0)
