"""Generated-image sets: PNG files + ``manifest.json``, written by any generator, read back to within 1/255.

Layout: ``folder/<class>/000123.png`` (``<class>`` is the class name, else the label, else ``all``) and
``folder/manifest.json`` with the file list, labels, class names and free ``metadata`` (generator spec,
seed, steps, ...). Every file is written atomically and the manifest last, so a manifest only exists
beside a complete set.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from guardgen.checkpoint import atomic_path, load_json, save_json
from guardgen.data.shipped import ImageSet, resize
from guardgen.errors import GuardgenError

__all__ = ["MANIFEST", "write_image_set", "load_image_set", "save_grid", "to_pil"]

MANIFEST = "manifest.json"


def to_pil(image: torch.Tensor):
    """(C, H, W) in [0, 1], C = 1 or 3 -> PIL image (L or RGB), rounded to 8 bits."""
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")


def write_image_set(images: torch.Tensor, folder: str | Path, *, labels=None, class_names: list[str] | None = None,
                    metadata: dict | None = None) -> Path:
    """Write images (N, C, H, W) in [0, 1] (C = 1 or 3) as PNGs plus ``manifest.json``; returns ``folder``.

    ``labels``: (N,) ints or None (all 0); ``class_names`` name the labels (default: the label numbers,
    or ``["all"]`` without labels). Rewriting a folder replaces the set it held.
    """
    images = _check_images(images)
    n = len(images)
    if n == 0:
        raise GuardgenError("no images to write")
    if labels is None:
        labels_t = torch.zeros(n, dtype=torch.long)
        class_names = list(class_names) if class_names else ["all"]
    else:
        labels_t = torch.as_tensor(labels).detach().cpu().long().flatten()
        if len(labels_t) != n:
            raise GuardgenError(f"{len(labels_t)} labels for {n} images; pass one label per image")
        if labels_t.min() < 0:
            raise GuardgenError("labels must be non-negative class indices")
        class_names = list(class_names) if class_names else [str(c) for c in range(int(labels_t.max()) + 1)]
    if int(labels_t.max()) >= len(class_names):
        raise GuardgenError(f"label {int(labels_t.max())} has no class name ({len(class_names)} given)")
    folder = Path(folder)
    old = _old_files(folder)
    (folder / MANIFEST).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    files = []
    for i, (image, label) in enumerate(zip(images, labels_t.tolist())):
        rel = f"{_dirname(class_names[label])}/{i:06d}.png"
        with atomic_path(folder / rel) as tmp:
            to_pil(image).save(tmp, format="PNG")
        files.append(rel)
    manifest = {"format": "guardgen-image-set", "version": 1, "num_images": n, "channels": int(images.shape[1]),
                "height": int(images.shape[2]), "width": int(images.shape[3]), "class_names": class_names,
                "files": files, "labels": labels_t.tolist(), "metadata": metadata or {}}
    try:
        save_json(manifest, folder / MANIFEST)
    except (TypeError, ValueError) as err:
        raise GuardgenError(f"metadata is not JSON-serialisable ({err}); "
                            "pass plain numbers, strings, lists and dicts") from None
    for rel in old - set(files):
        (folder / rel).unlink(missing_ok=True)
    return folder


def load_image_set(folder: str | Path, resolution: int | None = None) -> ImageSet:
    """Read a set written by :func:`write_image_set`; a folder without manifest is read by ``load_image_folder``.

    Returns images (N, C, H, W) float32 in [0, 1] and labels (N,) int64; ``resolution`` resizes every image to
    that square size (None: the images must share one size).
    """
    from guardgen.data.folders import load_image_folder, read_image

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return load_image_folder(folder, resolution=resolution)[0]
    manifest = load_json(folder / MANIFEST)
    try:
        files, labels = list(manifest["files"]), [int(v) for v in manifest["labels"]]
        class_names, channels = list(manifest["class_names"]), manifest.get("channels")
    except (KeyError, TypeError, ValueError):
        raise GuardgenError(f"{folder / MANIFEST}: malformed manifest; regenerate the set") from None
    if len(files) != len(labels) or not files:
        raise GuardgenError(f"{folder / MANIFEST}: {len(files)} files and {len(labels)} labels; regenerate the set")
    images = []
    for rel in files:
        path = folder / rel
        if not path.is_file():
            raise GuardgenError(f"{path}: listed in {MANIFEST} but missing; regenerate the set")
        try:
            images.append(read_image(path, channels))
        except Exception as err:  # noqa: BLE001 - any decode failure is a damaged set
            raise GuardgenError(f"{path}: unreadable image ({err.__class__.__name__}); regenerate the set") from None
        if resolution is not None:
            images[-1] = resize(images[-1][None], resolution)[0]
        if images[-1].shape != images[0].shape:
            raise GuardgenError(f"{path}: size {tuple(images[-1].shape)} differs from {tuple(images[0].shape)}")
    return ImageSet(torch.stack(images), torch.tensor(labels, dtype=torch.long), class_names, folder.resolve().name)


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 10, scale: int = 4, padding: int = 1) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid, ``nrow`` per row, upscaled ``scale``x (nearest).

    ``padding`` is in source pixels (white). The write is atomic; returns ``path``.
    """
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    if images.ndim == 3:
        images = images.unsqueeze(0)
    images = _check_images(images)
    if len(images) == 0:
        raise GuardgenError("save_grid needs at least one image")
    if nrow < 1 or scale < 1:
        raise GuardgenError(f"nrow and scale must be at least 1, got nrow={nrow}, scale={scale}")
    x = images.detach().float().cpu().clamp(0, 1)
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
    grid = make_grid(x, nrow=nrow, padding=padding * scale, pad_value=1.0)
    if images.shape[1] == 1:
        grid = grid[:1]  # make_grid repeats gray to 3 channels
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(grid).save(tmp, format="PNG")
    return path


def _check_images(images) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise GuardgenError(f"expected images of shape (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}")
    return images


def _dirname(name: str) -> str:
    """A class name made safe as one folder name (no separators, not hidden)."""
    safe = re.sub(r"[^\w.+-]+", "_", str(name)).lstrip(".")
    return safe or "_"


def _old_files(folder: Path) -> set[str]:
    """Files listed by an existing manifest (to remove those a rewrite does not reuse)."""
    try:
        files = load_json(folder / MANIFEST)["files"] if (folder / MANIFEST).is_file() else []
        return {str(f) for f in files if ".." not in Path(str(f)).parts and not Path(str(f)).is_absolute()}
    except (GuardgenError, KeyError, TypeError):
        return set()
