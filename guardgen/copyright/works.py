"""Protected works: loading them, planting near-duplicate copies in a dataset, measuring reproduction.

A protected work is an image with a class label (the prompt that should not reproduce it). Specs:
``mnist-test:INDEX`` (an image of the shipped MNIST test split, which the zoo never trains on, with its
own label) or ``PATH@LABEL`` (an image file).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardgen.copyright.sharding import nn_distance
from guardgen.data import ImageSet, load_mnist, resize
from guardgen.errors import GuardgenError

__all__ = ["load_protected", "check_labels", "with_copies", "reproduction"]


def _whole(text: str) -> bool:
    """A plain non-negative whole number: ``"7"`` (not ``"-1"``, ``"+7"``, ``"1_0"`` or ``"²"``)."""
    return text.isascii() and text.isdigit()


def load_protected(specs: list[str], resolution: int = 16, num_classes: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Protected works from specs -> images (P, 1, R, R) in [0, 1], labels (P,), names.

    ``num_classes``: where the data's classes are known already, a label outside 0..num_classes-1 is refused.
    """
    from guardgen.data.folders import unreadable_reason, read_image

    if not specs:
        raise GuardgenError("no protected works given; pass --protected mnist-test:INDEX or PATH@LABEL")
    images, labels, test = [], [], None
    for spec in specs:
        if spec.startswith("mnist-test:"):
            test = test if test is not None else load_mnist("test", resolution)
            index = spec.split(":", 1)[1].strip()
            if not _whole(index) or int(index) >= len(test):
                raise GuardgenError(f"{spec}: expected mnist-test:INDEX with INDEX in 0..{len(test) - 1}")
            images.append(test.images[int(index)])
            labels.append(int(test.labels[int(index)]))
            continue
        path, sep, label = spec.rpartition("@")
        if not sep or not _whole(label.strip()):
            raise GuardgenError(f"{spec}: expected PATH@LABEL (an image file and its class id) or mnist-test:INDEX")
        if not Path(path).is_file():
            raise GuardgenError(f"{path}: no such image file")
        try:
            x = read_image(path, channels=1)
        except Exception as err:  # noqa: BLE001 - any decode failure is a bad file
            raise GuardgenError(f"{path}: {unreadable_reason(Path(path), err)}") from None
        images.append(resize(x[None], resolution)[0])
        labels.append(int(label))
    labels = torch.tensor(labels, dtype=torch.long)
    if num_classes is not None:
        check_labels(labels, specs, num_classes)
    return torch.stack(images), labels, list(specs)


def check_labels(labels: torch.Tensor, names: list[str], num_classes: int) -> None:
    """Refuse a protected work whose label is not a class of the data (0..num_classes-1), naming its spec."""
    for name, label in zip(names, labels.tolist()):
        if not 0 <= label < num_classes:
            raise GuardgenError(f"{name}: label {label} out of range; the data has classes 0..{num_classes - 1}")


def with_copies(data: ImageSet, protected: torch.Tensor, labels: torch.Tensor, *, copies: int = 100,
                noise: float = 0.02, seed: int = 0) -> ImageSet:
    """``data`` plus ``copies`` near-duplicates of each protected work (P, C, H, W): Gaussian pixel noise of
    std ``noise``, clamped to [0, 1], so exact-match deduplication would miss them."""
    if copies < 1:
        raise GuardgenError(f"copies={copies}: expected at least 1")
    g = torch.Generator().manual_seed(seed)
    x = protected.repeat_interleave(copies, 0)
    x = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    out = ImageSet(torch.cat([data.images, x]), torch.cat([data.labels, labels.repeat_interleave(copies)]),
                   data.class_names, f"{data.name or 'data'}+protected")
    return out


def reproduction(samples: torch.Tensor, protected: torch.Tensor, delta: float, size: int | None = None) -> dict:
    """How often samples (N, C, H, W) reproduce a protected work: RMS pixel distance to the nearest one < ``delta``
    (``size``: average-pool both to size x size first, see ``pixel_distance``).

    Returns ``rate`` (fraction of samples), ``hits`` (count), ``per_work`` rates (P,), and the nearest ``distances`` (N,).
    """
    if size is None and samples.shape[1:] != protected.shape[1:]:
        raise GuardgenError(f"samples are {tuple(samples.shape[1:])}, the protected works {tuple(protected.shape[1:])}; "
                            "compare images of one size (or pass size)")
    d, idx = nn_distance(samples, protected, size)
    hit = d < delta
    per_work = [float((hit & (idx == j)).float().sum() / max(len(samples), 1)) for j in range(len(protected))]
    return {"rate": float(hit.float().mean()) if len(samples) else 0.0, "hits": int(hit.sum()), "per_work": per_work,
            "distances": d}
