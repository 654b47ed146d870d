"""What the zoo's training loops share: the diffusion models' training loop, deterministic batches, cosine learning
rate, model cards.

Batches are a pure function of (seed, step): step ``s`` takes slice ``s`` of the epoch's seeded
permutation, and process ``r`` of ``w`` takes every ``w``-th index of it. So a resumed run sees the
same batches as an uninterrupted one, and 1 or N processes see the same global batches.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from guardgen.registry import NonNegInt, PositiveFloat, PositiveInt, Seed, UnitFloat

__all__ = ["DiffusionTrainConfig", "batch_indices", "cosine_lr", "step_generator", "train_diffusion", "write_model_card"]


@dataclass(kw_only=True)
class DiffusionTrainConfig:
    """The training settings every zoo diffusion model shares (:func:`train_diffusion` reads them); each model's
    config adds its architecture and conditioning fields and may change a default."""

    resolution: PositiveInt = 16
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: PositiveInt = 1
    num_train_timesteps: PositiveInt = 1000
    steps: PositiveInt = 4000
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 2e-3
    warmup: NonNegInt = 100
    ema_decay: UnitFloat = 0.998
    exclude: tuple[int, ...] = ()
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    checkpoint_every: PositiveInt = 250
    eval_samples_per_class: NonNegInt = 50

    def __post_init__(self) -> None:
        from guardgen.errors import GuardgenError

        if not self.block_out_channels:
            raise GuardgenError("block_out_channels needs at least one block, e.g. [32, 64]")


def resume_settings(config) -> dict:
    """What a resumed zoo build must share with the interrupted one: its config, but not where it runs, how often it
    saves, or how it is scored afterwards."""
    from guardgen.checkpoint import settings_record

    return settings_record(config, skip=("device", "mixed_precision", "checkpoint_every", "eval_samples_per_class", "eval_samples"))


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


def train_diffusion(unet, noise_scheduler, images: torch.Tensor, config, out: Path, *,
                    condition: Callable[[torch.Tensor, torch.Generator], dict], resume: bool = False, callback=None):
    """The zoo's eps-prediction training loop for a conditional diffusers UNet, with an EMA of its weights.

    images: (N, 1, H, W) in [0, 1]. ``condition(idx, g)`` gives the UNet's conditioning keywords for the batch
    ``idx`` (N,) on the CPU, drawing any randomness (condition dropout, phrasings) from the step's generator
    ``g`` before the noise is drawn. ``config`` carries steps, batch_size, lr, warmup, ema_decay,
    num_train_timesteps, seed, device, mixed_precision and checkpoint_every. Checkpoints (weights, EMA,
    optimiser) go to ``out/training_state`` so ``resume`` continues exactly.
    Returns the EMA ``unet`` on the CPU in eval mode, the training seconds and the accelerator.
    """
    from diffusers.training_utils import EMAModel

    from guardgen.checkpoint import load_training_state, save_training_state
    from guardgen.data.transforms import to_model_range
    from guardgen.utils import fused, make_accelerator, prepare

    acc = make_accelerator(config.device, config.mixed_precision)
    x0_all = to_model_range(images)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0, fused=fused(acc.device))
    unet, opt = prepare(acc, unet, opt)
    ema_module = copy.deepcopy(acc.unwrap_model(unet))  # holds the EMA weights for checkpoints

    state_dir = out / "training_state"
    step, earlier = 0, 0.0  # earlier: the interrupted run's training seconds
    if resume and (state_dir / "state.json").is_file():
        step, extra = load_training_state(state_dir, modules={"unet": acc.unwrap_model(unet), "ema": ema_module}, optimizers={"opt": opt},
                                          settings=resume_settings(config))
        earlier = float(extra.get("seconds", 0.0))
        ema = EMAModel(ema_module.parameters(), decay=config.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        ema.optimization_step = step
    elif state_dir.exists() and acc.is_main_process:
        shutil.rmtree(state_dir)
    ema.to(acc.device)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(acc.device)

    t0 = time.perf_counter()
    unet.train()
    while step < config.steps:
        idx = batch_indices(len(x0_all), config.batch_size, step, config.seed, acc.process_index, acc.num_processes)
        g = step_generator(config.seed, step, acc.process_index)
        x0 = x0_all[idx].to(acc.device)
        cond = {k: v.to(acc.device) for k, v in condition(idx, g).items()}
        noise = torch.randn(x0.shape, generator=g).to(acc.device)
        t = torch.randint(0, config.num_train_timesteps, (len(idx),), generator=g).to(acc.device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, warmup=config.warmup)
        with acc.autocast():
            eps = unet(x_t, t, **cond).sample
        loss = F.mse_loss(eps.float(), noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}; the last good state is in {state_dir}")
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(acc.unwrap_model(unet).parameters())
        step += 1
        if callback is not None and acc.is_main_process:
            callback(step, {"total": config.steps, "loss": loss.item(), "lr": opt.param_groups[0]["lr"]})
        if step % config.checkpoint_every == 0 and step < config.steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                ema.copy_to(ema_module.parameters())
                save_training_state(state_dir, step=step, modules={"unet": acc.unwrap_model(unet), "ema": ema_module},
                                    optimizers={"opt": opt},
                                    extra={"settings": resume_settings(config), "seconds": earlier + time.perf_counter() - t0})
    train_seconds = earlier + time.perf_counter() - t0

    acc.wait_for_everyone()
    final = acc.unwrap_model(unet)
    ema.copy_to(final.parameters())
    return final.eval().cpu(), train_seconds, acc
