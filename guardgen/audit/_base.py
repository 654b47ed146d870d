"""What every section returns: figures (JSON), tables, plot data, image grids, limitations, time."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Section", "not_run", "TITLES", "ORDER", "FeatureCache"]

ORDER = ("provenance", "quality", "leakage", "memorization", "membership", "copyright", "forensics")
TITLES = {
    "provenance": "1. Provenance",
    "quality": "2. Quality",
    "leakage": "3. Concept leakage",
    "memorization": "4. Memorization",
    "membership": "5. Membership inference",
    "copyright": "6. Copyright (near access-freeness)",
    "forensics": "7. Forensics",
    "verdicts": "8. Verdicts",
}


@dataclass
class Section:
    """One section of the report. ``plots`` hold data (name -> {"kind": "roc" | "hist" | "bars", ...});
    ``images`` hold (N, C, H, W) grids in [0, 1] with ``nrow``, kept out of the JSON and written as PNG."""

    name: str
    status: str = "ran"  # "ran" | "not run"
    why: str = ""
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)  # name -> list of row dicts
    plots: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)  # name -> (tensor (N, C, H, W), nrow, caption)
    limitations: list = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def title(self) -> str:
        return TITLES[self.name]

    def to_json(self) -> dict:
        out = {"title": self.title, "status": self.status, "why": self.why, "figures": self.figures,
               "tables": self.tables, "plots": self.plots, "limitations": self.limitations,
               "seconds": round(self.seconds, 3)}
        out["images"] = {k: {"file": f"images/{self.name}-{k}.png", "caption": v[2], "count": int(len(v[0]))}
                         for k, v in self.images.items()}
        return out


def not_run(name: str, why: str, limitations: list | None = None) -> Section:
    return Section(name=name, status="not run", why=why, limitations=list(limitations or []))


def as_images(x) -> torch.Tensor:
    return torch.as_tensor(x).float().clamp(0, 1)


class FeatureCache:
    """Oracle features (N, D) of image tensors, computed once per tensor for all sections."""

    def __init__(self, oracle):
        self.oracle = oracle
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from guardgen.models.classifier import classifier_features

        hit = self._cache.get(id(images))
        if hit is None or hit[0] is not images:
            hit = (images, classifier_features(self.oracle, images))  # the tensor is kept, so its id stays unique
            self._cache[id(images)] = hit
        return hit[1]
