"""Image-folder loading: layouts, labels, bad files, resizing, channels, errors, the lazy dataset."""

import numpy as np
import pytest
import torch
from PIL import Image

from guardgen.data import ImageFolderDataset, LoadReport, load_image_folder
from guardgen.data.shipped import resize
from guardgen.errors import GuardgenError


def _img(path, value, size=8, mode="L", fmt="PNG"):
    """Write a constant image; ``size`` is an int or (width, height); ``value`` an int or RGB tuple."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = (size, size) if isinstance(size, int) else size
    Image.new(mode, (w, h), value).save(path, format=fmt)
    return path


@pytest.fixture
def messy(tmp_path):
    """0_real/1_fake with 3 gray PNGs, 2 RGB JPEGs, a GIF and 3 bad files, 2 hidden ones."""
    root = tmp_path / "messy"
    for i, v in enumerate((10, 20, 30)):
        _img(root / "0_real" / f"r{i}.png", v)
    for i in range(2):
        _img(root / "1_fake" / f"f{i}.jpg", (250, 250, 250), mode="RGB", fmt="JPEG")
    (root / "1_fake" / "notes.txt").write_text("not an image")
    _img(root / "1_fake" / "anim.gif", 250, fmt="GIF")
    (root / "1_fake" / "empty.png").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(noise).save(root / "0_real" / "truncated.png")
    good = (root / "0_real" / "truncated.png").read_bytes()
    (root / "0_real" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "0_real" / ".DS_Store").write_bytes(b"\x00\x01\x02")
    _img(root / "1_fake" / ".ipynb_checkpoints" / "hidden.png", 0)
    return root


def test_binary_layout_skips_bad_files_and_ignores_hidden(messy):
    data, report = load_image_folder(messy)
    assert isinstance(report, LoadReport)
    assert data.class_names == ["real", "fake"] and data.name == "messy"
    assert data.images.shape == (5, 1, 8, 8) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert report.loaded == 5 and len(report.skipped) == 4
    reasons = {p.split("/")[-1]: r for p, r in report.skipped}
    assert set(reasons) == {"notes.txt", "anim.gif", "empty.png", "truncated.png"}
    assert reasons["empty.png"] == "empty file" and "not an image" in reasons["notes.txt"]
    assert reasons["anim.gif"].startswith("GIF is not read")
    assert reasons["truncated.png"].startswith("unreadable image (OSError")
    # sorted order, lossless PNG values, JPEG close
    assert torch.allclose(data.images[:3].flatten(1).mean(1), torch.tensor([10, 20, 30]) / 255)
    assert (data.images[3:] - 250 / 255).abs().max() < 4 / 255


def test_real_fake_names_keep_real_zero(tmp_path):
    _img(tmp_path / "fake" / "a.png", 200)
    _img(tmp_path / "real" / "a.png", 50)
    _img(tmp_path / "real" / "b.png", 60)
    data, _ = load_image_folder(tmp_path)
    assert data.class_names == ["real", "fake"]
    assert data.labels.tolist() == [1, 0, 0]  # sorted paths: fake/ before real/
    assert data.images[0].mean().item() == pytest.approx(200 / 255)


def test_nested_binary_layout(tmp_path):
    for j, cat in enumerate(("car", "cat")):
        _img(tmp_path / cat / "0_real" / "a.png", 10 + j)
        _img(tmp_path / cat / "1_fake" / "b.png", 200 + j)
    data, report = load_image_folder(tmp_path)
    assert data.class_names == ["real", "fake"] and report.skipped == []
    assert data.labels.tolist() == [0, 1, 0, 1]
    assert (data.images.flatten(1)[:, 0] * 255).round().tolist() == [10, 200, 11, 201]


def test_per_source_layout(tmp_path):
    for src, v in (("stylegan", 30), ("0_real", 10), ("dcgan", 20)):
        for i in range(2):
            _img(tmp_path / src / f"{i}.png", (v, v, v), mode="RGB")
    _img(tmp_path / "dcgan" / "deeper" / "2.png", (20, 20, 20), mode="RGB")
    _img(tmp_path / "stray.png", 0)
    data, report = load_image_folder(tmp_path)
    assert data.class_names == ["0_real", "dcgan", "stylegan"]
    assert data.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert data.images.shape == (7, 3, 8, 8)
    assert (data.images[:, 0, 0, 0] * 255).round().tolist() == [10, 10, 20, 20, 20, 30, 30]
    assert [(p.split("/")[-1], r) for p, r in report.skipped] == [("stray.png", "not in a source folder")]
    (tmp_path / "biggan").mkdir()  # asked for sources: one with nothing readable would be a class without samples
    (tmp_path / "biggan" / ".hidden.png").write_bytes(b"")
    for read in (load_image_folder, ImageFolderDataset):
        with pytest.raises(GuardgenError, match=r"biggan: a source folder with no readable images; add images or remove it"):
            read(tmp_path, layout="per_source")
        assert len(read(tmp_path)[0] if read is load_image_folder else read(tmp_path)) == 7  # auto: just folders, read
    (tmp_path / "biggan").rename(tmp_path / ".biggan")
    (tmp_path / "sg-copy").symlink_to(tmp_path / "stylegan")  # the same images under a second label
    with pytest.raises(GuardgenError, match=r"sg-copy: the same folder as .*stylegan \(a link\)"):
        load_image_folder(tmp_path, layout="per_source")


def test_explicit_layouts(tmp_path):
    _img(tmp_path / "bin" / "0_real" / "a.png", 0)
    _img(tmp_path / "bin" / "1_fake" / "b.png", 255)
    per, _ = load_image_folder(tmp_path / "bin", layout="per_source")
    assert per.class_names == ["0_real", "1_fake"] and per.labels.tolist() == [0, 1]
    for name in ("b.png", "a.png", "c.png"):
        _img(tmp_path / "flat" / name, ord(name[0]))
    flat, _ = load_image_folder(tmp_path / "flat")
    assert flat.labels.tolist() == [0, 0, 0] and flat.class_names == ["flat"]
    assert (flat.images[:, 0, 0, 0] * 255).round().tolist() == [97, 98, 99]  # sorted by name
    assert torch.equal(load_image_folder(tmp_path / "flat")[0].images, flat.images)
    with pytest.raises(GuardgenError, match="no readable images"):
        load_image_folder(tmp_path / "flat", layout="binary")
    with pytest.raises(GuardgenError, match="unknown folder layout"):
        load_image_folder(tmp_path / "flat", layout="imagenet")


def test_all_formats_read(tmp_path):
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tif")):
        _img(tmp_path / f"x.{ext.upper() if ext == 'bmp' else ext}", (100, 150, 200), mode="RGB", fmt=fmt)
    data, report = load_image_folder(tmp_path)
    assert report.loaded == 5 and report.skipped == []
    assert data.images.shape == (5, 3, 8, 8)
    assert (data.images.mean((2, 3)) * 255 - torch.tensor([100.0, 150, 200])).abs().max() < 6


def test_channels(tmp_path):
    _img(tmp_path / "rgb" / "a.png", (255, 0, 0), mode="RGB")
    assert load_image_folder(tmp_path / "rgb")[0].images.shape[1] == 3
    gray, _ = load_image_folder(tmp_path / "rgb", channels=1)
    assert gray.images.shape == (1, 1, 8, 8) and gray.images[0, 0, 0, 0].item() == pytest.approx(76 / 255)
    _img(tmp_path / "gray" / "a.png", 128)
    rgb, _ = load_image_folder(tmp_path / "gray", channels=3)
    assert rgb.images.shape == (1, 3, 8, 8) and torch.equal(rgb.images[0, 0], rgb.images[0, 2])
    with pytest.raises(GuardgenError, match="channels"):
        load_image_folder(tmp_path / "gray", channels=2)


def test_sixteen_bit_keeps_its_range(tmp_path):
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "deep.png")
    data, _ = load_image_folder(tmp_path)
    assert data.images.shape == (1, 1, 4, 4) and data.images.max().item() == pytest.approx(0.5, abs=1e-3)


def test_resize(tmp_path):
    _img(tmp_path / "a.png", 40, size=8)
    _img(tmp_path / "b.png", 90, size=(16, 12))
    with pytest.raises(GuardgenError, match="pass a resolution"):
        load_image_folder(tmp_path)
    data, _ = load_image_folder(tmp_path, resolution=4)
    assert data.images.shape == (2, 1, 4, 4)
    assert torch.allclose(data.images[:, 0, 0, 0], torch.tensor([40, 90]) / 255, atol=1e-6)
    stripes = np.tile(np.array([0, 255], dtype=np.uint8), (16, 8))
    Image.fromarray(stripes).save(tmp_path / "c.png")
    data, _ = load_image_folder(tmp_path, resolution=4)
    raw = torch.from_numpy(stripes.astype(np.float32) / 255)[None, None]
    assert torch.allclose(data.images[2:], resize(raw, 4))  # antialiased: stripes average out
    assert (data.images[2] - 0.5).abs().max() < 0.05
    with pytest.raises(GuardgenError, match="resolution"):
        load_image_folder(tmp_path, resolution=0)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(GuardgenError, match="no such image folder"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GuardgenError, match="no readable images"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    (tmp_path / "junk" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(GuardgenError, match=r"no readable images .*2 files skipped") as err:
        load_image_folder(tmp_path / "junk")
    assert "\n" not in str(err.value)


def test_lazy_dataset(messy):
    ds = ImageFolderDataset(messy, resolution=4)
    assert len(ds) == 5 and ds.report.loaded == 5 and ds.channels == 1
    assert {p.split("/")[-1] for p, _ in ds.report.skipped} == {"notes.txt", "anim.gif", "empty.png", "truncated.png"}
    assert ds.class_names == ["real", "fake"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    x, y = ds[4]
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32 and y == 1 and x.min() > 0.9
    eager, _ = load_image_folder(messy, resolution=4)
    assert torch.allclose(torch.stack([ds[i][0] for i in range(len(ds))]), eager.images)
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert xb.shape == (5, 1, 4, 4) and yb.tolist() == [0, 0, 0, 1, 1]
    assert ImageFolderDataset(messy, channels=3)[0][0].shape == (3, 8, 8)


def test_lazy_dataset_errors(tmp_path):
    with pytest.raises(GuardgenError, match="no such image folder"):
        ImageFolderDataset(tmp_path / "nope")
    _img(tmp_path / "a.png", 0, size=8)
    _img(tmp_path / "b.png", 0, size=6)
    with pytest.raises(GuardgenError, match="pass a resolution"):
        ImageFolderDataset(tmp_path)
    ds = ImageFolderDataset(tmp_path, resolution=4)
    (tmp_path / "b.png").write_bytes(b"gone bad after listing")
    with pytest.raises(GuardgenError, match="b.png"):
        ds[1]


def test_report_lists_the_files_read_and_mixed_sizes_are_named(tmp_path):
    from guardgen.data.folders import MixedSizes

    _img(tmp_path / "a.png", 40, size=8)
    (tmp_path / "b.png").write_bytes(b"")
    _img(tmp_path / "c.png", 90, size=(16, 12))
    with pytest.raises(MixedSizes) as info:  # a GuardgenError its callers can rephrase with their own option
        load_image_folder(tmp_path)
    assert info.value.size == (12, 16) and info.value.first == (8, 8) and info.value.path.endswith("c.png")
    _, report = load_image_folder(tmp_path, resolution=4)
    assert report.files == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]  # the empty b.png is left out
    assert ImageFolderDataset(tmp_path, resolution=4).report.files == report.files


def test_a_flat_read_of_a_folder_of_subfolders_says_where_the_images_are(tmp_path):
    _img(tmp_path / "gan_a" / "0.png", 10)
    _img(tmp_path / "gan_b" / "0.png", 20)
    with pytest.raises(GuardgenError, match=r"2 subfolder\(s\) \(gan_a, gan_b\)"):
        load_image_folder(tmp_path, layout="flat")
    with pytest.raises(GuardgenError, match="has no subfolder"):
        load_image_folder(tmp_path / "gan_a", layout="per_source")


def test_out_inside_an_input_folder_is_refused(tmp_path):
    """A run's --out may not be, or lie inside, an image folder it reads, even when it replaces nothing."""
    from guardgen.checkpoint import check_out

    (tmp_path / "data").mkdir()
    with pytest.raises(GuardgenError, match="inside --fake .*take the run's files for images"):
        check_out(tmp_path / "data" / "run", replaces=False, data={"--real": "mnist", "--fake": [str(tmp_path / "data")]})
    with pytest.raises(GuardgenError, match="the same folder as --data"):
        check_out(tmp_path / "data", data={"--data": tmp_path / "data"})
    with pytest.raises(GuardgenError, match="holds --data"):  # the result would replace the data
        check_out(tmp_path, data={"--data": tmp_path / "data"})
    check_out(tmp_path, replaces=False, data={"--data": tmp_path / "data"})  # writes beside it: fine
    check_out(tmp_path / "run", data={"--data": tmp_path / "data", "--real": "mnist", "--unused": None})


def test_float_images_are_refused_and_exif_orientation_is_applied(tmp_path):
    from guardgen.data.folders import read_image

    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 0.7, dtype=np.float32)).save(folder / "float.tiff")  # mode F: range undefined
    with pytest.raises(ValueError, match="32-bit float image"):
        read_image(folder / "float.tiff")
    wide = np.zeros((8, 16), dtype=np.uint8)  # H 8, W 16; orientation 6: a viewer turns it to H 16, W 8
    wide[:, :4] = 255  # the left edge bright -> after the turn, the top edge
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(folder / "turned.png", exif=exif)
    x = read_image(folder / "turned.png")
    assert x.shape == (1, 16, 8) and x[0, :4].min() == 1 and x[0, 4:].max() == 0
    for data, report in (load_image_folder(folder, layout="flat"), (None, ImageFolderDataset(folder, layout="flat").report)):
        assert report.loaded == 1 and report.skipped[0][1].startswith("32-bit float image")
    assert ImageFolderDataset(folder, layout="flat")[0][0].shape == (1, 16, 8)
    (folder / "float.tiff").unlink()
    Image.fromarray(wide).save(folder / "turned.jpg", exif=exif)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    Image.fromarray(wide).save(folder / "xmp.jpg", xmp=xmp)  # the orientation in XMP only, which Pillow applies too
    Image.fromarray(wide).save(folder / "turned.tif", tiffinfo={0x0112: 6})  # a TIFF's own orientation tag
    Image.fromarray(wide.T.copy()).save(folder / "upright.png")
    ds = ImageFolderDataset(folder, layout="flat")  # all one size once turned: no MixedSizes, and a batch collates
    assert [read_image(p).shape for p, _ in ds.items] == [(1, 16, 8)] * 5
    assert torch.equal(read_image(folder / "turned.tif"), x)  # turned like the PNG, pixel for pixel
    assert next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))[0].shape == (5, 1, 16, 8)


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_tiff_is_turned_by_its_own_orientation_tag_like_a_png_by_its_exif(tmp_path, orientation, compression):
    """Pillow 13 turns a TIFF itself, and scrambles an uncompressed gray one turned by a quarter (5-8)."""
    from guardgen.data.folders import read_image

    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "a.png", exif=exif)
    Image.fromarray(pixels).save(tmp_path / "a.tif", tiffinfo={0x0112: orientation}, compression=compression)
    png, tif = read_image(tmp_path / "a.png"), read_image(tmp_path / "a.tif")
    assert png.shape == ((1, 6, 10) if orientation == 3 else (1, 10, 6))
    assert torch.equal(tif, png)
    deep = np.random.default_rng(1).integers(0, 65536, (6, 10), dtype=np.uint16)  # 16-bit gray, uncompressed
    Image.fromarray(deep).save(tmp_path / "b.tif", tiffinfo={0x0112: orientation})
    Image.fromarray(deep).save(tmp_path / "b.png", exif=exif)
    assert torch.equal(read_image(tmp_path / "b.tif"), read_image(tmp_path / "b.png"))
