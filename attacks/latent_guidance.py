"""What a latent evasion attack reads: detectors seen through resizing, and attribute guidance.

- :class:`DetectorView` wraps a guardgen ``Detector`` or any module of (B, C, H, W) in [0, 1] -> (B,) fake logits,
  resizing (bilinear) and converting channels to its input; :func:`detector_views` says what it resized.
- :class:`AttributeGuide` is the attribute term: cross-entropy of an attribute classifier towards a target class,
  keeping the start class when no target is given, or the cosine distance to a reference image in the
  classifier's pooled features (``forward_features`` / ``forward_head(pre_logits=True)``, else pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from guardgen.errors import GuardgenError

__all__ = ["DetectorView", "detector_views", "detector_scores", "parse_attribute", "AttributeGuide"]


class DetectorView(nn.Module):
    """A detector seen through resizing: (B, C, H, W) in [0, 1] -> (B,) fake logits at its own input size/channels."""

    def __init__(self, module: nn.Module, *, input_size: int | None, in_chans: int | None, name: str, threshold: float = 0.5):
        super().__init__()
        self.module, self.input_size, self.in_chans, self.name, self.threshold = module, input_size, in_chans, name, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_chans and x.shape[1] != self.in_chans:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        device = next(self.module.parameters()).device
        return self.module(x.to(device)).float().reshape(len(x), -1)[:, 0]


def detector_views(detectors, image_shape, names=None) -> tuple[list[DetectorView], list[str]]:
    """Wrap detectors (a guardgen ``Detector`` or any module of (B, C, H, W) -> (B,) logits) for images of
    ``image_shape`` (C, H, W); returns the views and notes on what was resized."""
    views, notes = [], []
    for i, det in enumerate(detectors):
        name = (names or [])[i] if names and i < len(names) else f"detector {i}"
        if hasattr(det, "as_module"):  # guardgen Detector (duck-typed: attacks never import detectors)
            module, size, chans, thr = det.as_module(), det.input_size, det.in_chans, det.threshold
        elif isinstance(det, nn.Module):
            cfg = getattr(det, "pretrained_cfg", None) or {}
            size = getattr(det, "input_size", None) or (cfg.get("input_size") or [None, None, None])[-1]
            chans, thr, module = getattr(det, "in_chans", None), 0.5, det
        else:
            raise GuardgenError(f"{name}: not a detector (a guardgen Detector or a module returning fake logits)")
        module.eval().requires_grad_(False)
        if size and int(size) != image_shape[-1]:
            notes.append(f"{name} takes {size}x{size} images; the generator's {image_shape[-1]}x{image_shape[-1]} "
                         "images are resized (bilinear) for it")
        if chans and int(chans) != image_shape[0]:
            notes.append(f"{name} takes {chans}-channel images; the generator's {image_shape[0]}-channel images are converted")
        views.append(DetectorView(module, input_size=int(size) if size else None, in_chans=int(chans) if chans else None,
                                  name=name, threshold=thr))
    return views, notes


@torch.no_grad()
def detector_scores(views: list[DetectorView], images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, K) p_fake of N images under K detector views."""
    cols = [torch.cat([torch.sigmoid(v(images[i:i + batch_size])).cpu() for i in range(0, len(images), batch_size)])
            for v in views]
    return torch.stack(cols, 1)


def parse_attribute(text, class_names: list[str]) -> int:
    """A class id from "4", "digit 4", "a digit 4" or a class name; unknown -> one-line error naming the known ones."""
    raw = str(text).strip()
    low = [c.lower() for c in class_names]
    words = raw.lower().removeprefix("a ").removeprefix("an ").strip()
    for cand in (words, words.split()[-1] if words else ""):
        if cand in low:
            return low.index(cand)
        if cand.isdigit() and str(int(cand)) in low:
            return low.index(str(int(cand)))
    shown = ", ".join(class_names[:20]) + (" ..." if len(class_names) > 20 else "")
    raise GuardgenError(f"unknown attribute {raw!r}; the attribute classifier knows: {shown}")


class AttributeGuide:
    """Attribute guidance: class targets through a classifier, a reference image's features, or keep the start class."""

    def __init__(self, classifier, size, target, reference, n, shape):
        self.classifier, self.size = classifier, size
        if classifier is not None:
            classifier.eval().requires_grad_(False)
        self.ref_features = None
        if reference is not None:
            ref = torch.as_tensor(reference).float()
            ref = ref[None] if ref.ndim == 3 else ref
            if ref.ndim != 4 or len(ref) != 1:
                raise GuardgenError(f"reference: expected one (C, H, W) image, got shape {tuple(ref.shape)}")
            if (ref.shape[1], shape[0]) == (3, 1):
                ref = 0.299 * ref[:, :1] + 0.587 * ref[:, 1:2] + 0.114 * ref[:, 2:3]
            elif (ref.shape[1], shape[0]) == (1, 3):
                ref = ref.expand(-1, 3, -1, -1)
            elif ref.shape[1] != shape[0]:
                raise GuardgenError(f"reference has {ref.shape[1]} channels, the generator's images {shape[0]}")
            ref = F.interpolate(ref, size=shape[1:], mode="bilinear", align_corners=False, antialias=True)
            self.ref_features = self._features(ref)
            self.mode = "reference"
            self.targets = self._logits(ref).argmax(1).cpu().repeat(n) if classifier is not None else None
        elif target is not None:
            self.mode = "class"
            t = torch.as_tensor(target).long().flatten()
            self.targets = t.repeat(n) if len(t) == 1 else t
            if len(self.targets) != n:
                raise GuardgenError(f"target has {len(t)} entries for n={n} images")
            k = self._logits(torch.zeros(1, *shape)).shape[1]
            if self.targets.min() < 0 or self.targets.max() >= k:
                raise GuardgenError(f"attribute class ids must lie in 0..{k - 1}")
        else:
            self.mode = "keep" if classifier is not None else "none"
            self.targets = torch.full((n,), -1, dtype=torch.long) if classifier is not None else None

    def _input(self, x):
        if self.size and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x.to(next(self.classifier.parameters()).device)

    def _logits(self, x):
        return self.classifier(self._input(x)).float()

    def _features(self, x):
        if self.classifier is None or not hasattr(self.classifier, "forward_features"):
            return F.normalize(x.flatten(1), dim=1)
        f = self.classifier.forward_features(self._input(x))
        f = self.classifier.forward_head(f, pre_logits=True) if hasattr(self.classifier, "forward_head") else f.flatten(1)
        return F.normalize(f.float().flatten(1), dim=1)

    def batch_targets(self, idx):
        return None if self.targets is None else self.targets[idx]

    def loss(self, x, idx, repeat: int = 1) -> torch.Tensor:
        """(B,) attribute loss of images ``idx`` ((B // repeat,) indices); ``repeat``: x holds ``repeat``
        consecutive candidates per image."""
        if self.mode == "none":
            return torch.zeros(len(x))
        if self.mode == "reference":
            return self._distance(x)
        logits = self._logits(x)
        t = self.targets[idx].repeat_interleave(repeat)
        if self.mode == "keep" and bool((t < 0).any()):  # the start class becomes the target
            self.targets[idx] = logits.argmax(1).cpu()
            t = self.targets[idx]
        return F.cross_entropy(logits, t.to(logits.device), reduction="none").cpu()

    @torch.no_grad()
    def ok(self, x, idx) -> torch.Tensor | None:
        if self.classifier is None or self.targets is None:
            return None
        return self._logits(x).argmax(1).cpu() == self.targets[idx]

    @torch.no_grad()
    def distance(self, x, idx) -> torch.Tensor | None:
        return None if self.mode != "reference" else self._distance(x)

    def _distance(self, x) -> torch.Tensor:
        """(B,) cosine distance of the classifier's features of ``x`` to the reference's, on the CPU."""
        f = self._features(x)
        return 1 - (f * self.ref_features.to(f.device)).sum(1).cpu()
