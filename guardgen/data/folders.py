"""Image folders in the layouts of AIGC detection and attribution work.

- ``binary``: ``0_real/`` and ``1_fake/`` (CNNDetection), or ``real/`` and ``fake/``, possibly nested one
  level under category folders (``root/car/0_real``); label 0 = real, 1 = fake.
- ``per_source``: one subfolder per source (a generator, or ``real``); label = sorted folder index and
  ``class_names`` = the folder names. A ``real`` folder is just another source here.
- ``flat``: images directly in ``root``; label 0.
- ``auto``: ``flat`` when ``root`` has no subfolder, ``binary`` when its subfolders (or every
  subfolder's subfolders) are all real/fake names, else ``per_source``.

Files are visited in sorted order; hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are
ignored. Corrupt, empty or non-image files are skipped and listed in a :class:`LoadReport`, never a crash.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from guardgen.data.shipped import ImageSet, resize
from guardgen.errors import GuardgenError

__all__ = ["IMAGE_SUFFIXES", "LAYOUTS", "LoadReport", "MixedSizes", "load_image_folder", "ImageFolderDataset", "read_image",
           "unreadable_reason"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LAYOUTS = ("auto", "binary", "per_source", "flat")
_REAL, _FAKE = ("0_real", "real"), ("1_fake", "fake")
_GRAY_MODES = ("1", "L", "LA", "La")
_ORIENTATION = 0x0112  # the TIFF (and EXIF) orientation tag
_FLOAT_MODE = "32-bit float image: its value range is not defined; save it as an 8- or 16-bit image"


@dataclass(kw_only=True)
class LoadReport:
    """What a folder load did: ``loaded`` images (``files``: their paths, in the order of the images), and
    ``skipped`` files as ``(path, reason)``."""

    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class MixedSizes(GuardgenError):
    """A folder's images differ in size and no resolution was given; ``path`` has ``size`` (H, W), the first
    image ``first`` (H, W). A caller may catch it to name its own option (``--resolution``)."""

    def __init__(self, path, size: tuple, first: tuple, hint: str = "pass a resolution to resize all images"):
        self.path, self.size, self.first = str(path), tuple(size), tuple(first)
        super().__init__(f"{path}: size {self.size} differs from {self.first} (the first image's); {hint}")


def read_image(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """One image file as (C, H, W) float32 in [0, 1]; ``channels`` 1 (gray), 3 (RGB) or None (the file's own).

    16-bit files keep their full range; an EXIF orientation is applied (the image as a viewer shows it). A
    32-bit float file is refused (ValueError): its value range is not defined. Otherwise raises whatever Pillow
    raises on a bad file.
    """
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        # a large image is read and resized like any other; beyond twice Pillow's limit it still raises
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img, turn = _open(path)
        with img:
            img.load()
            if img.mode == "F":
                raise ValueError(_FLOAT_MODE)
            img = img.transpose(turn) if turn is not None else ImageOps.exif_transpose(img)
            wide = img.mode.startswith("I")  # 16/32-bit integer gray
            channels = channels or (1 if wide or img.mode in _GRAY_MODES else 3)
            if wide:
                arr = np.clip(np.array(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
                arr = arr if channels == 1 else np.repeat(arr[..., None], 3, axis=-1)
            else:
                arr = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr)
    return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def _open(path: str | Path):
    """``(Image.open(path), None)``, except for a TIFF whose orientation tag turns it by a quarter (5-8): Pillow 13
    scrambles such a TIFF when it is uncompressed and not RGB (gray, 16-bit, palette, RGBA, CMYK), so it is opened
    with the tag set to 1, and returned with the turn (an ``Image.Transpose``) to apply after decoding."""
    import io
    import struct

    from PIL import Image

    img = Image.open(path)
    orientation = img.tag_v2.get(_ORIENTATION) if img.format == "TIFF" else None
    if orientation not in (5, 6, 7, 8):
        return img, None
    img.close()
    data = bytearray(Path(path).read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    if struct.unpack_from(order + "H", data, 2)[0] != 42:  # BigTIFF (43): Pillow's own turn
        return Image.open(path), None
    first = struct.unpack_from(order + "I", data, 4)[0]
    for i in range(struct.unpack_from(order + "H", data, first)[0]):
        entry = first + 2 + 12 * i
        tag, kind, count = struct.unpack_from(order + "HHI", data, entry)
        if tag == _ORIENTATION and kind == 3 and count == 1:  # one SHORT, held in the entry itself
            struct.pack_into(order + "H", data, entry + 8, 1)
            turn = {5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}[orientation]
            return Image.open(io.BytesIO(bytes(data))), Image.Transpose[turn]
    return Image.open(path), None  # a tag this reader cannot reach: Pillow's own turn


def load_image_folder(root: str | Path, *, resolution: int | None = None, channels: int | None = None,
                      layout: str = "auto") -> tuple[ImageSet, LoadReport]:
    """Read every image under ``root`` into memory.

    Returns ``(ImageSet, LoadReport)``: images (N, C, H, W) float32 in [0, 1], labels (N,) int64.
    ``resolution`` resizes each image to a square (antialiased); None requires all images to share one
    size. ``channels`` None keeps the mode (gray or RGB) of the first readable image.
    """
    _check_args(resolution, channels, layout)
    root = Path(root)
    asked = layout
    items, class_names, layout, report = _scan(root, layout)
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for path, label in items:
        try:
            x = read_image(path, channels)
        except Exception as err:  # noqa: BLE001 - any failure to decode means a bad file: skip it
            report.skipped.append((str(path), unreadable_reason(path, err)))
            continue
        channels = channels or x.shape[0]
        if resolution is not None:
            x = resize(x.unsqueeze(0), resolution)[0]
        elif images and x.shape[1:] != images[0].shape[1:]:
            raise MixedSizes(path, x.shape[1:], images[0].shape[1:])
        images.append(x)
        labels.append(label)
        report.files.append(str(path))
    report.loaded = len(images)
    if not images:
        raise GuardgenError(_nothing_read(root, layout, report))
    _check_sources(root, asked, class_names, labels)
    name = root.resolve().name
    return ImageSet(torch.stack(images), torch.tensor(labels, dtype=torch.long), class_names, name), report


class ImageFolderDataset(torch.utils.data.Dataset):
    """Lazy :func:`load_image_folder` for data too large for memory; item ``i`` is ``(x, label)``.

    ``x`` is (C, H, W) float32 in [0, 1]. Files are listed at construction and checked with Pillow's
    ``verify()``; the ones that fail are left out and listed in ``report.skipped``.
    """

    def __init__(self, root: str | Path, *, layout: str = "auto", resolution: int | None = None,
                 channels: int | None = None):
        from PIL import Image

        _check_args(resolution, channels, layout)
        asked = layout
        items, self.class_names, self.layout, self.report = _scan(Path(root), layout)
        self.resolution = resolution
        self.items: list[tuple[Path, int]] = []
        size = None
        for path, label in items:
            try:
                with warnings.catch_warnings(), Image.open(path) as img:
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    mode, this_size, oriented = img.mode, img.size, _oriented(img)
                    img.verify()
                if mode == "F":
                    raise ValueError(_FLOAT_MODE)
                if oriented:  # read_image may turn it upright: its size is read, not predicted (such files are rare)
                    this_size = tuple(read_image(path).shape[:0:-1])
            except Exception as err:  # noqa: BLE001 - any failure to open means a bad file: skip it
                self.report.skipped.append((str(path), unreadable_reason(path, err)))
                continue
            if channels is None:
                channels = 1 if mode.startswith("I") or mode in _GRAY_MODES else 3
            if resolution is None and size is not None and this_size != size:
                raise MixedSizes(path, this_size[::-1], size[::-1])
            size = this_size
            self.items.append((path, label))
            self.report.files.append(str(path))
        self.channels = channels
        self.report.loaded = len(self.items)
        if not self.items:
            raise GuardgenError(_nothing_read(Path(root), self.layout, self.report))
        _check_sources(Path(root), asked, self.class_names, [label for _, label in self.items])

    @property
    def labels(self) -> torch.Tensor:
        """(N,) int64, e.g. for a class-balanced sampler."""
        return torch.tensor([label for _, label in self.items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        try:
            x = read_image(path, self.channels)
        except Exception as err:  # noqa: BLE001 - passed verify() but cannot be decoded
            raise GuardgenError(f"{path}: {unreadable_reason(path, err)}; "
                                "remove it, or use load_image_folder, which skips such files") from None
        if self.resolution is not None:
            x = resize(x.unsqueeze(0), self.resolution)[0]
        return x, label


def _check_sources(root: Path, asked: str, class_names: list[str], labels: list[int]) -> None:
    """Where the caller asked for the per_source layout (its labels are used), a source folder that gave no image
    would be a class with no samples: refuse it by name."""
    if asked != "per_source":
        return
    found = set(labels)
    empty = [name for i, name in enumerate(class_names) if i not in found]
    if empty:
        raise GuardgenError(f"{root / empty[0]}: a source folder with no readable images; add images or remove it")


def _oriented(img) -> bool:
    """Whether ``img`` carries an orientation that :func:`read_image` may apply (an EXIF block, XMP, a TIFF tag),
    read from what Pillow parsed on opening (no decoding, so ``verify()`` can follow)."""
    tags = getattr(img, "tag_v2", None)  # TIFF keeps it as a tag
    return (tags is not None and tags.get(0x0112, 1) != 1) or any(k in img.info for k in ("exif", "xmp", "XML:com.adobe.xmp"))


def _check_args(resolution, channels, layout) -> None:
    if layout not in LAYOUTS:
        raise GuardgenError(f"unknown folder layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if channels not in (None, 1, 3):
        raise GuardgenError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise GuardgenError(f"resolution must be a positive integer, got {resolution!r}")


def _nothing_read(root: Path, layout: str, report: LoadReport) -> str:
    """Why a folder gave no image, in one line: the layout, the files skipped, and subfolders a flat read passes over."""
    message = f"{root}: no readable images ({layout} layout, {len(report.skipped)} files skipped)"
    if layout == "flat":
        subdirs = _subdirs(root)
        if subdirs:
            names = ", ".join(d.name for d in subdirs[:3]) + (", ..." if len(subdirs) > 3 else "")
            message += (f"; the flat layout reads only the files directly in it, and it has {len(subdirs)} "
                        f"subfolder(s) ({names}): pass one of them, or use a layout with subfolders")
    elif layout == "per_source" and not _subdirs(root):
        message += "; it has no subfolder, and this layout takes one subfolder of images per source"
    return message


def unreadable_reason(path: Path, err: Exception) -> str:
    """Why ``path`` could not be read as an image (``err``, what reading it raised), in a few words for one line."""
    from PIL import UnidentifiedImageError

    if path.is_file() and path.stat().st_size == 0:
        return "empty file"
    if isinstance(err, UnidentifiedImageError):
        return "not a recognised image"
    if str(err) == _FLOAT_MODE:
        return _FLOAT_MODE
    first = (str(err).splitlines() or [""])[0][:80]
    kind = err.__class__.__name__
    return f"unreadable image ({kind}: {first})" if first else f"unreadable image ({kind})"


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir()]


def _files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _is_binary(dirs: list[Path]) -> bool:
    return bool(dirs) and all(d.name.lower() in _REAL + _FAKE for d in dirs)


def _detect_layout(root: Path) -> str:
    subdirs = _subdirs(root)
    if not subdirs:
        return "flat"
    if _is_binary(subdirs) or all(_is_binary(_subdirs(d)) for d in subdirs):
        return "binary"
    return "per_source"


def _scan(root: Path, layout: str) -> tuple[list[tuple[Path, int]], list[str], str, LoadReport]:
    """``([(path, label)], class_names, layout, report)``; ``report`` lists the files left out."""
    if not root.is_dir():
        raise GuardgenError(f"{root}: no such image folder")
    asked = layout == "per_source"  # sources whose labels the caller uses (auto-detected ones may be just folders)
    layout = _detect_layout(root) if layout == "auto" else layout
    report = LoadReport()
    found: list[tuple[Path, int]] = []
    if layout == "binary":
        class_names = ["real", "fake"]
        for path in _files(root):
            dirs = [part.lower() for part in path.relative_to(root).parts[:-1]]
            label = next((int(d in _FAKE) for d in dirs if d in _REAL + _FAKE), None)
            if label is None:
                report.skipped.append((str(path), "not under a real/fake folder"))
            else:
                found.append((path, label))
    elif layout == "per_source":
        sources = _subdirs(root)
        class_names = [d.name for d in sources]
        seen: dict = {}
        for d in sources if asked else ():  # a linked folder would put the same images under two labels
            if d.resolve() in seen:
                link, other = (d, seen[d.resolve()]) if d.is_symlink() else (seen[d.resolve()], d)
                raise GuardgenError(f"{link}: the same folder as {other} (a link); each source is one folder")
            seen[d.resolve()] = d
        report.skipped += [(str(p), "not in a source folder") for p in _visible(root) if p.is_file()]
        for label, folder in enumerate(sources):
            found += [(p, label) for p in _files(folder)]
    else:  # flat
        class_names = [root.resolve().name]
        found = [(p, 0) for p in _visible(root) if p.is_file()]
    items = []
    for path, label in found:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            items.append((path, label))
        elif path.suffix.lower() == ".gif":  # palette-quantised (and maybe animated): a format shortcut, not a sample
            report.skipped.append((str(path), "GIF is not read (its palette would mark the image); convert it to PNG"))
        else:
            report.skipped.append((str(path), f"not an image file ({path.suffix or 'no suffix'})"))
    return items, class_names, layout, report
