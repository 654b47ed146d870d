"""A shards folder on disk, and training one model per shard through the zoo's own training code.

Folder layout (written atomically, safetensors only):

    shards/
      shards.json          the plan summary, protected-work names, class names, the sharding settings
      shards.safetensors   images (N, C, H, W), labels (N,), assignment (N,), groups (N,),
                           protected (P, C, H, W), protected_labels (P,), protected_shard (P,)

``load_shards`` re-checks the shards (disjoint, each protected work in one shard) on every load.
Models: ``train_shard_models`` trains ``full`` on all the data and ``shard-i`` on shard i with
``guardgen.zoo.ddpm.build_ddpm`` (the normal zoo training loop, given the data), into ``out/<name>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from guardgen.checkpoint import atomic_dir, check_resumable, load_json, load_safetensors, save_json, save_safetensors, settings_record
from guardgen.copyright.sharding import ShardPlan, check_shards
from guardgen.data import ImageSet
from guardgen.errors import GuardgenError
from guardgen.registry import configure

__all__ = ["Shards", "save_shards", "load_shards", "shard_config", "train_shard_models"]


@dataclass
class Shards:
    """A sharded dataset: the ``data``, its ``plan``, the ``protected`` works (P, C, H, W) with labels and names."""

    data: ImageSet
    plan: ShardPlan
    protected: torch.Tensor
    protected_labels: torch.Tensor
    protected_names: list[str]

    def shard(self, i: int) -> ImageSet:
        return self.plan.shard(self.data, i)

    def safe_shard(self, work: int) -> int:
        """A shard that holds neither protected work ``work`` nor its copies (safe_C in NAF)."""
        return (int(self.plan.protected_shard[work]) + 1) % self.plan.n_shards


def save_shards(shards: Shards, folder: str | Path, *, extra: dict | None = None) -> Path:
    folder = Path(folder)
    plan = shards.plan
    with atomic_dir(folder) as tmp:
        save_safetensors({"images": shards.data.images.contiguous(), "labels": shards.data.labels,
                          "assignment": plan.assignment, "groups": plan.groups,
                          "protected": shards.protected.contiguous(), "protected_labels": shards.protected_labels,
                          "protected_shard": plan.protected_shard}, tmp / "shards.safetensors")
        save_json({"format": "guardgen-shards", "version": 1, **plan.summary(), "name": shards.data.name,
                   "class_names": shards.data.class_names, "protected_names": shards.protected_names,
                   "protected_labels": shards.protected_labels.tolist(),
                   "protected_members": plan.protected_members, **(extra or {})}, tmp / "shards.json")
    return folder


def load_shards(folder: str | Path) -> Shards:
    """Read a shards folder and check it; a damaged or non-disjoint one is refused in one line."""
    folder = Path(folder)
    if not (folder / "shards.json").is_file() or not (folder / "shards.safetensors").is_file():
        raise GuardgenError(f"{folder}: not a shards folder (shards.json + shards.safetensors); "
                            "make one with `guardgen copyright shard`")
    meta = load_json(folder / "shards.json")
    t = load_safetensors(folder / "shards.safetensors")
    try:
        plan = ShardPlan(assignment=t["assignment"], groups=t["groups"], protected_shard=t["protected_shard"],
                         protected_members=meta["protected_members"], n_shards=int(meta["n_shards"]),
                         threshold=float(meta["threshold"]), size=int(meta["size"]))
        data = ImageSet(t["images"], t["labels"], list(meta["class_names"]), meta.get("name", ""))
        shards = Shards(data, plan, t["protected"], t["protected_labels"], list(meta["protected_names"]))
    except KeyError as err:
        raise GuardgenError(f"{folder}: shards file lacks {err}; re-create it with `guardgen copyright shard`") from None
    check_shards([shards.shard(i).images for i in range(plan.n_shards)], shards.protected,
                 threshold=plan.threshold, size=plan.size)
    return shards


def shard_config(config: dict, resolution: int | None = None):
    """The zoo ``DDPMConfig`` the shard models train with, from ``config``: an unknown key or a bad value is a
    one-line error, so a caller can check settings before loading anything. ``resolution``: the data's, once known
    (a ``resolution`` setting may not contradict it)."""
    from guardgen.zoo.ddpm import DDPMConfig

    given = config.get("resolution")
    if resolution is not None and given is not None and given != resolution:
        raise GuardgenError(f"setting resolution={given!r}: the shards' images are {resolution}x{resolution}; drop it")
    return configure(DDPMConfig, {"eval_samples_per_class": 0, **config,
                                  **({"resolution": resolution} if resolution is not None else {})})


def train_shard_models(shards: Shards, out: str | Path, *, which: list[str] | None = None, callback=None,
                       resume: bool = False, **config) -> dict:
    """Train ``full`` (all data) and ``shard-i`` models with the zoo's class-conditional DDPM loop.

    ``config`` sets ``DDPMConfig`` fields (steps, block_out_channels, ...); ``which`` picks models
    (default: full and every shard). ``callback(step, logs)`` gets ``logs["model"]``. Returns metrics per model.
    ``resume``: models already finished in ``out`` with the same settings are kept, and an interrupted one
    continues from its ``training_state/`` (the zoo loop's exact resume).
    """
    from guardgen.zoo.ddpm import build_ddpm

    names = ["full"] + [f"shard-{i}" for i in range(shards.plan.n_shards)]
    which = which or names
    unknown = set(which) - set(names)
    if unknown:
        raise GuardgenError(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    labels = shards.data.labels
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise GuardgenError(f"labels {int(labels.min())}..{int(labels.max())}: the zoo's class-conditional DDPM takes "
                            "classes 0..9; relabel the data")
    cfg = shard_config(config, shards.data.images.shape[-1])
    metrics = {}
    for name in which:
        data = shards.data if name == "full" else shards.shard(int(name.split("-")[1]))
        folder = Path(out) / name
        if resume and (folder / "guardgen.json").is_file() and not (folder / "training_state").exists():
            metrics[name] = _finished(folder, cfg)
        else:
            cb = None if callback is None else (lambda step, logs, name=name: callback(step, {**logs, "model": name}))
            metrics[name] = build_ddpm(cfg, folder, callback=cb, data=data, resume=resume)
        metrics[name]["train_images"] = len(data)
    return metrics


def _finished(folder: Path, cfg) -> dict:
    """The metrics of a model a resumed run keeps; one trained with other settings is refused."""
    record = load_json(folder / "guardgen.json")
    check_resumable(record.get("train_config", {}), settings_record(cfg), folder)
    return record["metrics"]
