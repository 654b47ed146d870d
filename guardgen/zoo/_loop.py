"""What the zoo's training loops share: deterministic batches, cosine learning rate, model cards.

Batches are a pure function of (seed, step): step ``s`` takes slice ``s`` of the epoch's seeded
permutation, and process ``r`` of ``w`` takes every ``w``-th index of it. So a resumed run sees the
same batches as an uninterrupted one, and 1 or N processes see the same global batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["batch_indices", "cosine_lr", "step_generator", "write_model_card"]


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of process ``rank``'s share of global batch ``step`` (drop-last epochs over ``n`` items)."""
    per_epoch = max(n // batch_size, 1)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    batch = perm[pos * batch_size : (pos + 1) * batch_size]
    return batch[rank::world]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for the random draws of one step on one process (noise, augmentation)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


def cosine_lr(step: int, total: int, lr: float, warmup: int = 0, min_ratio: float = 0.05) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def write_model_card(folder: Path, *, name: str, summary: str, data: str, config: dict, metrics: dict, command: str) -> None:
    from guardgen.checkpoint import atomic_path

    lines = [f"# {name}", "", summary, "", "## Data", "", data, "", "## Rebuild", "", f"    {command}", "",
             "## Metrics (measured at build time)", ""]
    lines += [f"- {k}: {v}" for k, v in metrics.items()]
    lines += ["", "## Config", ""] + [f"- {k}: {v}" for k, v in config.items()] + [""]
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
