"""Retraining from scratch without the forgotten data: the gold standard of unlearning.

Forgotten concepts are class ids, or, for the zoo's text model, any phrasing it knows of a digit: the
retrained model never sees that digit's images (under any phrasing).

It needs the model's training recipe, so it is available for zoo models (through the zoo's seeded
builds with an exclusion); for any other model, retrain with your own recipe and compare the folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

from guardgen.checkpoint import load_json
from guardgen.errors import GuardgenError
from guardgen.registry import PositiveInt, Seed, check_settings
from guardgen.utils import Callback
from unlearn import UNLEARN

__all__ = ["Retrain"]


@UNLEARN.register("retrain")
@dataclass(kw_only=True)
class Retrain:
    summary: ClassVar[str] = ("Retrain from scratch without the concept's data (zoo models, through their seeded "
                              "builds): the gold standard")  # one line for `guardgen unlearn methods`
    target: ClassVar[str] = "diffusion"  # the kind of model it unlearns (`guardgen unlearn methods`)
    zoo_name: str = ""  # which zoo recipe to rerun (set from the model spec by the CLI)
    steps: PositiveInt | None = None  # None: the zoo model's own training length
    zoo_overrides: dict = field(default_factory=dict)  # any other field of the zoo model's config
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"

    def fit(self, pipe, *, forget: Sequence, retain: Sequence = (), override=None, oracle=None,
            callback: Callback | None = None, out: str | Path | None = None, resume: bool = False) -> "Retrain":
        check_settings(self)
        from guardgen import zoo
        from guardgen.models import load_model

        if not self.zoo_name:
            raise GuardgenError("retrain needs the training recipe: it is available for zoo:* models only")
        classes = []
        concept_class = getattr(pipe, "concept_class", None)  # text zoo models: the digit each phrasing names
        for c in forget:
            text = str(c).strip()
            named = int(text) if text.isdigit() else (concept_class(text) if concept_class is not None else None)
            if named is not None:
                classes.append(int(named))
            else:
                raise GuardgenError(f"retrain excludes the training data of a class; {c!r} is neither a class id nor "
                                    "a phrasing this model knows (pass the class the concept names)")
        classes = sorted(set(classes))
        if out is None:
            raise GuardgenError("retrain writes a new model: pass an output folder")
        folder = Path(out) / "retrained"
        overrides = {**self.zoo_overrides, "exclude": tuple(classes), "seed": self.seed, "device": self.device, "mixed_precision": self.mixed_precision}
        if self.steps is not None:
            overrides["steps"] = self.steps
        earlier = 0.0  # the interrupted run's training seconds, which a resumed retrain counts too
        state = folder / "training_state" / "state.json"
        if resume and state.is_file():
            meta = load_json(state)
            extra = meta.get("extra") if isinstance(meta, dict) else None
            earlier = float(extra.get("seconds", 0.0)) if isinstance(extra, dict) else 0.0
        t0 = time.perf_counter()
        self.metrics_ = zoo.build(self.zoo_name, folder, resume=resume, callback=callback, **overrides)
        self.train_seconds_ = earlier + time.perf_counter() - t0
        beside = getattr(pipe, "unet", None)  # load it beside the original, if there is one
        self.pipeline_ = load_model(str(folder), device=str(beside.device) if beside is not None else "cpu")
        return self

    def to_pipeline(self, pipe):
        return self.pipeline_
