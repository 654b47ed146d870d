"""Classifier unlearning: retrain, FT, GA, RL, l1-sparse and SalUn on any nn.Module, one loop.

Every method is a per-sample loss form ``per_sample_loss(logits, labels, w)``: ``w`` is 1 on forget
samples and 0 on retained ones (the worst-case forget-set search relaxes it to [0, 1]). The shared loop
trains a copy of the model on the forget and/or retain data with that loss:
- ``retrain_classifier``: from a re-initialised copy, on the retained data only (gold standard);
- ``ft``: fine-tune on the retained data;              (1 - w) CE(y)
- ``ga_classifier``: gradient ascent on the forget data; -w CE(y)
- ``rl``: random (wrong) labels for the forget data, fine-tune on forget + retain; (1 - w) CE(y) + w CE(y_rand)
- ``l1_sparse``: FT plus alpha (1 - progress) ||theta||_1 (Jia et al., "Model sparsity can simplify unlearning");
- ``salun``: RL restricted to the weights with the largest forget-loss gradient magnitude (Fan et al., ICLR 2024).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, PositiveFloat, PositiveInt, Seed, SubUnitFloat, UnitFloat, check_settings
from guardgen.utils import Callback, make_accelerator, prepare, seed_everything
from unlearn import UNLEARN

__all__ = ["ClassifierUnlearner", "RetrainClassifier", "FT", "GAClassifier", "RL", "L1Sparse", "SalUn", "as_pair"]


def as_pair(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` or an ImageSet -> float images (N, ...) and long labels (N,), checked."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        data = (data.images, data.labels)
    try:
        x, y = data
    except (TypeError, ValueError):
        raise GuardgenError(f"{name} must be (images, labels) or an ImageSet") from None
    x, y = torch.as_tensor(x).float(), torch.as_tensor(y).long().reshape(-1)
    if len(x) != len(y):
        raise GuardgenError(f"{name}: {len(x)} images but {len(y)} labels")
    return x, y


def _random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator | None) -> torch.Tensor:
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


@dataclass(kw_only=True)
class ClassifierUnlearner:
    """The shared loop; subclasses define ``per_sample_loss`` (and optionally ``penalty`` / a gradient mask)."""
    target: ClassVar[str] = "classifier"  # the kind of model it unlearns (`guardgen unlearn methods`)

    epochs: PositiveInt = 5
    lr: PositiveFloat = 0.01
    momentum: SubUnitFloat = 0.9
    weight_decay: NonNegFloat = 5e-4
    batch_size: PositiveInt = 128
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    history_: list = field(default_factory=list, init=False, repr=False)

    uses_forget = True  # which data the loop iterates over
    uses_retain = True

    def per_sample_loss(self, logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, model: nn.Module, progress: float) -> torch.Tensor | float:
        """A model-level term added to the batch loss (l1-sparse); ``progress`` in [0, 1]."""
        return 0.0

    def lower_level_mask(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, w: torch.Tensor):
        """{parameter name: bool mask} of the weights the method may change, or None for all (SalUn)."""
        return None

    # -- hooks of the loop ------------------------------------------------------------------------
    def _start_model(self, model: nn.Module) -> nn.Module:
        return copy.deepcopy(model)

    def _optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _lr(self, step: int, total: int, steps_per_epoch: int) -> float:
        return self.lr

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def fit(self, model: nn.Module, *, forget, retain, callback: Callback | None = None) -> "ClassifierUnlearner":
        """Unlearn ``forget`` from a copy of ``model`` (never changed); the result is ``model_``."""
        check_settings(self)
        xf, yf = as_pair(forget, "forget")
        xr, yr = as_pair(retain, "retain")
        if self.uses_forget and len(yf) == 0:
            raise GuardgenError(f"{type(self).__name__}: the forget set is empty")
        if self.uses_retain and len(yr) == 0:
            raise GuardgenError(f"{type(self).__name__}: the retain set is empty")
        if self.epochs < 1 or self.batch_size < 1:
            raise GuardgenError(f"{type(self).__name__}: epochs and batch_size must be at least 1")
        parts = [(xf, yf, 1.0)] * self.uses_forget + [(xr, yr, 0.0)] * self.uses_retain
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        w = torch.cat([torch.full((len(p[1]),), p[2]) for p in parts])

        acc = make_accelerator(self.device, self.mixed_precision)
        g = seed_everything(self.seed)
        t0 = time.perf_counter()
        net = self._start_model(model).to(acc.device).train()
        mask = self.lower_level_mask(net, xf, yf, torch.ones(len(yf)))
        self.mask_ = mask
        anchor = {n: p.detach().clone() for n, p in net.named_parameters() if mask is not None and n in mask}
        opt = self._optimizer([p for p in net.parameters() if p.requires_grad])
        net, opt = prepare(acc, net, opt)
        named = dict(acc.unwrap_model(net).named_parameters())

        steps_per_epoch = math.ceil(len(y) / self.batch_size)
        total = self.epochs * steps_per_epoch
        self.history_ = []
        for step in range(total):
            epoch, pos = divmod(step, steps_per_epoch)
            if pos == 0:
                perm = torch.randperm(len(y), generator=g)
            idx = perm[pos * self.batch_size : (pos + 1) * self.batch_size]
            xb = self._augment(x[idx], g).to(acc.device)
            yb, wb = y[idx].to(acc.device), w[idx].to(acc.device)
            for group in opt.param_groups:
                group["lr"] = self._lr(step, total, steps_per_epoch)
            with acc.autocast():
                logits = net(xb)
            logits = logits.float()
            loss = self.per_sample_loss(logits, yb, wb, g).mean() + self.penalty(acc.unwrap_model(net), step / total)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{type(self).__name__} diverged at step {step + 1}; lower lr")
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if mask is not None:
                for n, p in named.items():
                    if p.grad is not None and n in mask:
                        p.grad.mul_(mask[n])
            opt.step()
            if mask is not None:  # momentum and weight decay must not move the frozen weights either
                with torch.no_grad():
                    for n, p in named.items():
                        if n in mask:
                            p.copy_(torch.where(mask[n], p, anchor[n]))
            with torch.no_grad():
                ce = F.cross_entropy(logits, yb, reduction="none")
                f = wb > 0.5
                logs = {"loss": loss.item(), "loss_forget": ce[f].mean().item() if f.any() else float("nan"),
                        "loss_retain": ce[~f].mean().item() if (~f).any() else float("nan")}
            self.history_.append({"step": step + 1, "epoch": epoch + 1, **logs})
            if callback is not None:
                callback(step + 1, {"total": total, **logs})
        self.model_ = acc.unwrap_model(net).eval()
        self.train_seconds_ = time.perf_counter() - t0
        self.sizes_ = {"forget": len(yf), "retain": len(yr)}
        return self

    def save_pretrained(self, folder: str | Path, *, architecture: str, model_args: dict, extra: dict | None = None) -> Path:
        """Write the unlearned classifier as a classifier folder (``config.json`` + ``model.safetensors``) that
        ``load_model`` reads, with what was done under ``unlearning``; ``architecture``/``model_args`` are the source's."""
        from guardgen.models.classifier import save_classifier

        if not hasattr(self, "model_"):
            raise GuardgenError("fit the method before saving it")
        name = next((k for k in UNLEARN.names() if UNLEARN.get(k) is type(self)), type(self).__name__)
        meta = {"method": name, "samples": self.sizes_, "train_seconds": self.train_seconds_,
                "hyperparameters": {k: v for k, v in asdict(self).items() if not k.endswith("_")}}
        return save_classifier(self.model_, folder, architecture=architecture, model_args=model_args,
                               extra={"unlearning": meta, **(extra or {})})


@UNLEARN.register("retrain_classifier")
@dataclass(kw_only=True)
class RetrainClassifier(ClassifierUnlearner):
    """Retrain from scratch on the retained data, with the zoo oracle's recipe (AdamW, cosine, smoothing, affine)."""
    summary: ClassVar[str] = "Retrain the classifier from scratch on the retained data (the gold standard)"  # one line for `guardgen unlearn methods`

    epochs: PositiveInt = 30
    lr: PositiveFloat = 3e-3
    weight_decay: NonNegFloat = 5e-4
    label_smoothing: SubUnitFloat = 0.05
    augment: bool = True

    uses_forget = False

    def per_sample_loss(self, logits, labels, w, generator=None):
        return (1 - w) * F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)

    def _start_model(self, model):
        net = copy.deepcopy(model)
        torch.manual_seed(self.seed)
        for module in net.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        return net

    def _optimizer(self, params):
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def _lr(self, step, total, steps_per_epoch):
        if step < steps_per_epoch:
            return self.lr * (step + 1) / steps_per_epoch
        progress = (step - steps_per_epoch) / max(total - steps_per_epoch, 1)
        return self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    def _augment(self, x, generator):
        if not self.augment or x.ndim != 4:
            return x
        from guardgen.data.transforms import random_affine

        return random_affine(x, degrees=12, translate=0.08, scale=(0.85, 1.1), generator=generator)


@UNLEARN.register("ft")
@dataclass(kw_only=True)
class FT(ClassifierUnlearner):
    """Fine-tune on the retained data (catastrophic forgetting of the rest)."""
    summary: ClassVar[str] = "Fine-tune the classifier on the retained data"  # one line for `guardgen unlearn methods`

    uses_forget = False

    def per_sample_loss(self, logits, labels, w, generator=None):
        return (1 - w) * F.cross_entropy(logits, labels, reduction="none")


@UNLEARN.register("ga_classifier")
@dataclass(kw_only=True)
class GAClassifier(ClassifierUnlearner):
    """Gradient ascent on the forget data."""
    summary: ClassVar[str] = "Gradient ascent on the forget data's loss"  # one line for `guardgen unlearn methods`

    lr: PositiveFloat = 1e-3
    uses_retain = False

    def per_sample_loss(self, logits, labels, w, generator=None):
        return -w * F.cross_entropy(logits, labels, reduction="none")


@UNLEARN.register("rl")
@dataclass(kw_only=True)
class RL(ClassifierUnlearner):
    """Random labels: relabel the forget data (a wrong class each time) and fine-tune on forget + retain."""
    summary: ClassVar[str] = "Random labels for the forget data, fine-tuned with the retained data"  # one line for `guardgen unlearn methods`

    def per_sample_loss(self, logits, labels, w, generator=None):
        wrong = _random_wrong_labels(labels, logits.shape[-1], generator)
        return (1 - w) * F.cross_entropy(logits, labels, reduction="none") + w * F.cross_entropy(logits, wrong, reduction="none")


@UNLEARN.register("l1_sparse")
@dataclass(kw_only=True)
class L1Sparse(FT):
    """FT with an l1 penalty alpha (1 - progress) ||theta||_1 that decays linearly to 0."""
    summary: ClassVar[str] = "FT with a decaying l1 penalty on the weights (Jia et al., NeurIPS 2023)"  # one line for `guardgen unlearn methods`

    alpha: NonNegFloat = 5e-5

    def penalty(self, model, progress):
        return self.alpha * (1 - progress) * sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


@UNLEARN.register("salun")
@dataclass(kw_only=True)
class SalUn(RL):
    """RL on the salient weights only: the top ``threshold`` share by forget-loss gradient magnitude."""
    summary: ClassVar[str] = ("Saliency unlearning (Fan et al., ICLR 2024): random labels on the weights most salient "
                              "to the forget loss")  # one line for `guardgen unlearn methods`

    threshold: UnitFloat = 0.5  # share of weights that may change

    def lower_level_mask(self, model, images, labels, w):
        if not 0 < self.threshold <= 1:
            raise GuardgenError(f"SalUn threshold is a share of the weights in (0, 1], not {self.threshold}")
        return saliency_mask(model, images, labels, w, self.threshold, self.batch_size)


def saliency_mask(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, share: float,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{name: bool} marking the ``share`` of all weights with the largest |d sum_i w_i CE_i / d theta|."""
    device = next(model.parameters()).device
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for i in range(0, len(labels), batch_size):
        x, y = images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
        loss = (w[i : i + batch_size].to(device) * F.cross_entropy(model(x).float(), y, reduction="none")).sum()
        for n, gr in zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)):
            if gr is not None:
                grads[n] += gr
    model.train(was_training)
    flat = torch.cat([gr.abs().flatten() for gr in grads.values()])
    k = max(1, round(share * flat.numel()))
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:k]] = True
    out, start = {}, 0
    for n, gr in grads.items():
        out[n] = keep[start : start + gr.numel()].view_as(gr)
        start += gr.numel()
    return out
