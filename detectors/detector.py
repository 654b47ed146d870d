"""A binary real-vs-generated image detector over any ``timm.create_model`` backbone (CNNSpot / UnivFD style).

Wang et al. (CVPR 2020) train a ResNet-50 on real vs generated images; Ojha et al. (CVPR 2023) train only
a linear head on frozen features. Both are ``Detector(backbone=..., mode="finetune" | "linear_probe")`` here.
The backbone ends in one logit (``num_classes=1``): ``p_fake = sigmoid(logit)``, fake when ``p_fake > threshold``.

Preprocessing is data, recorded in ``config.json`` and applied at load (DESIGN "preprocessing as data"):
channels (gray <-> RGB), resize to ``input_size`` (``resize="bilinear" | "bicubic" | "nearest" | "none"``,
optional center crop) and mean/std normalisation. Images of another size than the training images are
resized, with a note (:meth:`Detector.check_input`); with ``resize="none"`` they are refused.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from detectors import DETECTORS
from detectors.evaluate import perturb
from guardgen.checkpoint import load_json, load_training_state, save_training_state, settings_record
from guardgen.data import to_channels
from guardgen.errors import GuardgenError
from guardgen.registry import (NonNegFloat, NonNegInt, OpenUnitFloat, PositiveFloat, PositiveInt,
                               Seed, UnitFloat, check_settings, saved_seed)
from guardgen.utils import Callback, fused, make_accelerator, prepare

__all__ = ["Detector", "DetectorModule"]


class DetectorModule(nn.Module):
    """Preprocessing + backbone as one differentiable module: (B, C, H, W) in [0, 1] -> (B,) fake logits."""

    def __init__(self, net: nn.Module, *, input_size: int, in_chans: int, mean, std, resize: str, crop: str):
        super().__init__()
        self.net, self.input_size, self.in_chans, self.resize, self.crop = net, input_size, in_chans, resize, crop
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise GuardgenError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
        x = to_channels(x, self.in_chans)
        if x.shape[1] != self.in_chans:
            raise GuardgenError(f"detector takes {self.in_chans}-channel images, got {x.shape[1]} channels")
        size = self.input_size
        if x.shape[-2:] != (size, size):
            if self.resize == "none":
                raise GuardgenError(f"detector expects {size}x{size} images (its preprocessing does not resize), "
                                    f"got {x.shape[-2]}x{x.shape[-1]}; resize the images or retrain with --resize bilinear")
            if self.crop == "center":  # resize the shorter side, then crop the middle square
                h, w = x.shape[-2:]
                s = size / min(h, w)
                x = _interp(x, (max(size, round(h * s)), max(size, round(w * s))), self.resize)
                top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
                x = x[..., top:top + size, left:left + size]
            else:
                x = _interp(x, (size, size), self.resize)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x)).reshape(len(x), -1)[:, 0]


def _interp(x: torch.Tensor, size, mode: str) -> torch.Tensor:
    kwargs = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


@DETECTORS.register("detector")
@dataclass(kw_only=True)
class Detector:
    """Real (0) vs generated (1) images; ``fit(real, fake)``, ``predict_proba(images) -> (N,) p_fake``."""

    backbone: str = "resnet50"
    mode: Literal["finetune", "linear_probe"] = "finetune"  # linear_probe: frozen backbone, linear head
    model_args: dict = field(default_factory=dict)  # extra timm.create_model kwargs (e.g. patch_size, width)
    pretrained_file: str = ""  # local .safetensors backbone weights (nothing is downloaded)
    input_size: NonNegInt = 0  # 0: the training images' size
    in_chans: NonNegInt = 0  # 0: the training images' channels
    resize: Literal["bilinear", "bicubic", "nearest", "none"] = "bilinear"
    crop: Literal["none", "center"] = "none"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    epochs: NonNegInt = 5
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegFloat = 1e-4
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # cosine: decay to 0 over the run, per step
    # training augmentation as CNNDetection (Wang et al., CVPR 2020): each image is blurred with probability
    # ``augment`` (sigma uniform in ``blur_sigma``, px) and, independently, JPEG re-encoded (quality uniform in
    # ``jpeg_quality``); 0 = off. Wang et al. use 0.1 and 0.5 with sigma 0-3 at 256 px; scale sigma to the image size.
    augment: UnitFloat = 0.0
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_quality: tuple[int, int] = (30, 100)
    threshold: OpenUnitFloat = 0.5  # p_fake above it -> fake
    warm_start: bool = False  # fit() continues from the current weights (used by OMAT)
    checkpoint_every: PositiveInt = 500  # steps between training states written to fit's state_dir (and at each epoch's end)
    log_every: PositiveInt = 10  # steps between reads of the loss from the device (one host sync each, as nanoGPT's
    # log_interval): the finiteness check, the history and the callbacks catch up then, step by step
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"

    # ------------------------------------------------------------------ build

    def _validate_params(self) -> None:
        from guardgen.models.classifier import check_architecture

        check_settings(self, name="detector")
        check_architecture(self.backbone)
        if self.augment and self.mode == "linear_probe":
            raise GuardgenError("augment needs mode finetune (the linear probe trains on features computed once)")
        if len(self.blur_sigma) != 2 or len(self.jpeg_quality) != 2:
            raise GuardgenError("blur_sigma and jpeg_quality are (low, high) ranges")
        if not self.mean or not self.std or any(s <= 0 for s in self.std):
            raise GuardgenError(f"mean {list(self.mean)} / std {list(self.std)}: one value, or one per channel, "
                                "each std > 0")
        lo, hi = self.blur_sigma
        qlo, qhi = self.jpeg_quality
        if not (0 <= lo <= hi and 1 <= qlo <= qhi <= 100):
            raise GuardgenError("blur_sigma needs 0 <= low <= high and jpeg_quality 1 <= low <= high <= 100")

    def _build(self, images: torch.Tensor) -> None:
        """Create ``module_`` for images shaped like ``images`` (N, C, H, W)."""
        self.input_size = int(self.input_size or images.shape[-1])
        self.in_chans = int(self.in_chans or images.shape[1])
        if len(self.mean) not in (1, self.in_chans) or len(self.std) not in (1, self.in_chans):
            raise GuardgenError(f"mean {list(self.mean)} / std {list(self.std)}: the images have {self.in_chans} "
                                f"channel(s); give one value or {self.in_chans}")
        mean = tuple(self.mean) * (self.in_chans // len(self.mean)) if len(self.mean) == 1 else tuple(self.mean)
        std = tuple(self.std) * (self.in_chans // len(self.std)) if len(self.std) == 1 else tuple(self.std)
        net = _create_backbone(self.backbone, self.model_args, self.input_size, self.in_chans)
        _check_runs_at(net, self.backbone, self.input_size, self.in_chans)
        if self.pretrained_file:
            _load_backbone_weights(net, self.pretrained_file)
        self.module_ = DetectorModule(net, input_size=self.input_size, in_chans=self.in_chans, mean=mean, std=std,
                                      resize=self.resize, crop=self.crop)

    # ------------------------------------------------------------------ train

    def fit(self, real: torch.Tensor, fake: torch.Tensor, *, callback: Callback | None = None,
            state_dir: str | Path | None = None, resume: bool = False) -> "Detector":
        """Train on real (N_r, C, H, W) and fake (N_f, C, H, W) images in [0, 1]; returns self.

        Classes are balanced by weighting the fake term by N_r / N_f. ``train_images_per_second_`` is the
        training throughput. With ``state_dir``, the training state (weights, optimiser, schedule, random
        state, position in the epoch) is written there every ``checkpoint_every`` steps and at each epoch's
        end, and removed when training ends; ``resume=True`` continues from it, step for step as an
        uninterrupted run (the same data and settings, and the detector as it was when that fit began).
        """
        self._validate_params()
        real, fake = _as_images(real, "real"), _as_images(fake, "fake")
        if real.shape[1] != fake.shape[1]:
            raise GuardgenError(f"real images have {real.shape[1]} channel(s), fake images {fake.shape[1]}; give both in "
                                "one colour format (all gray or all RGB), or the detector learns the format")
        if real.shape[1:] != fake.shape[1:]:
            raise GuardgenError(f"real images {tuple(real.shape[1:])} and fake images {tuple(fake.shape[1:])} differ in shape; "
                                "load both at one resolution")
        if not (self.warm_start and hasattr(self, "module_")):
            torch.manual_seed(self.seed)
            self._build(real)
            self.history_ = []
            self.source_size_ = [int(real.shape[-2]), int(real.shape[-1])]
        self.check_input(real)
        x = torch.cat([real, fake])
        y = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))])
        pos_weight = torch.tensor(len(real) / len(fake))

        acc = make_accelerator(self.device, self.mixed_precision)
        module = self.module_
        linear = self.mode == "linear_probe"
        if linear:
            module.requires_grad_(False)
            head = module.net.get_classifier()
            head.requires_grad_(True)
            params = list(head.parameters())
        else:
            module.requires_grad_(True)
            params = list(module.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, fused=fused(acc.device))
        module, opt = prepare(acc, module, opt)
        steps_per_epoch = max(1, -(-len(x) // self.batch_size))
        total = self.epochs * steps_per_epoch
        sched = None
        if self.lr_schedule == "cosine" and total > 0:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        raw = acc.unwrap_model(module)
        if linear:  # frozen features computed once (eval mode: no dropout, BN running stats)
            raw.eval()
            with torch.no_grad(), acc.autocast():
                feats = torch.cat([raw.net.forward_head(raw.net.forward_features(raw.preprocess(x[i:i + 256].to(acc.device))),
                                                        pre_logits=True).float() for i in range(0, len(x), 256)])
            head = raw.net.get_classifier()

        g = torch.Generator().manual_seed(self.seed + 17 * len(self.history_))
        seen, step, elapsed, start_epoch, start_batch, epoch_rng = 0, 0, 0.0, 0, 0, None
        state_dir = None if state_dir is None else Path(state_dir)
        if state_dir is not None and resume and (state_dir / "state.json").is_file():
            step, extra = _resume_from(state_dir, modules={"detector": raw}, optimizers={"detector": opt}, generator=g,
                                       settings=self._resume_settings())
            if sched is not None:
                sched.load_state_dict(extra["schedule"])
            self.history_, seen, elapsed = extra["history"], extra["seen"], extra["seconds"]
            start_epoch, start_batch = extra["epoch"], extra["batch"]
            epoch_rng = None if extra["epoch_rng"] is None else torch.tensor(extra["epoch_rng"], dtype=torch.uint8)
        elif state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        t0 = time.perf_counter() - elapsed
        pending: list = []  # (epoch, lr, loss on the device) not yet read back

        def flush() -> None:
            """Read the pending losses back in one sync; check them, then log them step by step."""
            nonlocal step
            if not pending:
                return
            losses = torch.stack([loss for _, _, loss in pending]).tolist()
            for (epoch, lr, _), loss in zip(pending, losses):
                if not math.isfinite(loss):
                    raise FloatingPointError(f"detector loss is not finite at epoch {epoch}; lower lr")
                step += 1
                logs = {"epoch": epoch, "loss": loss, "lr": lr}
                self.history_.append({"step": len(self.history_) + 1, **logs})
                if callback is not None:
                    callback(step, {"total": total, **logs})
            pending.clear()

        def checkpoint(epoch: int, batch: int) -> None:
            """The state after ``batch`` batches of ``epoch``; the epoch's order is re-drawn from ``epoch_rng`` on resume."""
            flush()
            if batch == steps_per_epoch:
                epoch, batch = epoch + 1, 0
            save_training_state(state_dir, step=step, modules={"detector": raw}, optimizers={"detector": opt}, generator=g,
                                extra={"epoch": epoch, "batch": batch, "epoch_rng": epoch_rng.tolist() if batch else None,
                                       "schedule": None if sched is None else sched.state_dict(), "history": self.history_,
                                       "seen": seen, "seconds": time.perf_counter() - t0, "settings": self._resume_settings()})

        for epoch in range(start_epoch, self.epochs):
            if epoch == start_epoch and start_batch:  # resumed mid-epoch: the same order; g is already where it stopped
                perm = torch.randperm(len(x), generator=torch.Generator().set_state(epoch_rng))
            else:
                epoch_rng = g.get_state()
                perm = torch.randperm(len(x), generator=g)
            if not linear:
                module.train()
            for batch in range(start_batch if epoch == start_epoch else 0, steps_per_epoch):
                idx = perm[batch * self.batch_size:(batch + 1) * self.batch_size]
                yb = y[idx].to(acc.device)
                xb = None if linear else _augment(x[idx], self.augment, self.blur_sigma, self.jpeg_quality, g)
                with acc.autocast():
                    logits = head(feats[idx]).reshape(-1) if linear else module(xb.to(acc.device))
                loss = F.binary_cross_entropy_with_logits(logits.float(), yb, pos_weight=pos_weight.to(acc.device))
                opt.zero_grad(set_to_none=True)
                acc.backward(loss)
                pending.append((epoch + 1, opt.param_groups[0]["lr"], loss.detach()))  # the lr of this step
                opt.step()
                if sched is not None:
                    sched.step()
                seen += len(idx)
                if len(pending) >= self.log_every:
                    flush()
                last = epoch + 1 == self.epochs and batch + 1 == steps_per_epoch  # the state would be removed at once
                if state_dir is not None and not last and ((step + len(pending)) % self.checkpoint_every == 0 or batch + 1 == steps_per_epoch):
                    checkpoint(epoch, batch + 1)
        flush()
        if state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        seconds = time.perf_counter() - t0
        self.module_ = acc.unwrap_model(module).eval().requires_grad_(False).cpu()
        self.train_seconds_ = seconds
        self.train_images_per_second_ = seen / seconds if seconds > 0 else float("nan")
        self.device_ = str(acc.device)
        return self

    # ------------------------------------------------------------------ predict

    def check_input(self, images: torch.Tensor) -> list[str]:
        """Notes on how ``images`` (N, C, H, W) will be adapted (resized, channels); raises if it cannot be."""
        self._fitted()
        images = _as_images(images, "input")
        notes = []
        h, w = images.shape[-2:]
        if (h, w) != (self.input_size, self.input_size):
            if self.resize == "none":
                raise GuardgenError(f"detector expects {self.input_size}x{self.input_size} images (its preprocessing does not "
                                    f"resize), got {h}x{w}; resize the images or retrain with --resize bilinear")
            notes.append(f"images are {h}x{w}; resized ({self.resize}) to the detector's {self.input_size}x{self.input_size}")
        src = getattr(self, "source_size_", None)
        if src and [h, w] != list(src):
            notes.append(f"detector was trained on {src[0]}x{src[1]} images, these are {h}x{w}: scores may not transfer")
        c = images.shape[1]
        if c != self.in_chans:
            if {c, self.in_chans} != {1, 3}:
                raise GuardgenError(f"detector takes {self.in_chans}-channel images, got {c} channels")
            notes.append(f"{c}-channel images converted to {self.in_chans} channel(s)")
        return notes

    @torch.no_grad()
    def decision_function(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N,) fake logits for (N, C, H, W) images in [0, 1]."""
        self._fitted()
        images = _as_images(images, "input")
        self.check_input(images)
        module = self.module_.eval()
        device = next(module.parameters()).device
        out = [module(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    def predict_proba(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N,) probability that each image is generated."""
        return torch.sigmoid(self.decision_function(images, batch_size))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) 1 = generated, 0 = real, at ``threshold``."""
        return (self.predict_proba(images) > self.threshold).long()

    def as_module(self) -> DetectorModule:
        """The differentiable detector (preprocessing included): (B, C, H, W) in [0, 1] -> (B,) logits."""
        self._fitted()
        return self.module_

    def _fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise GuardgenError("this detector is not trained yet; call fit() or load one with from_pretrained()")

    # ------------------------------------------------------------------ save / load

    def preprocessing(self) -> dict:
        m = self.module_
        return {"input_size": self.input_size, "in_chans": self.in_chans, "resize": self.resize, "crop": self.crop,
                "mean": m.mean.flatten().tolist(), "std": m.std.flatten().tolist(),
                "source_size": getattr(self, "source_size_", None), "range": "[0, 1] float images"}

    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """``config.json`` (hyperparameters, preprocessing, fitted figures) + ``model.safetensors``, atomically."""
        from guardgen import __version__
        from guardgen.checkpoint import save_checkpoint

        self._fitted()
        config = {"_class": type(self).__name__, "_guardgen_version": __version__, "detector": asdict(self),
                  "preprocessing": self.preprocessing(),
                  "fitted": {"train_images_per_second": getattr(self, "train_images_per_second_", None),
                             "train_seconds": getattr(self, "train_seconds_", None)},
                  **(extra or {})}
        state = {k: v for k, v in self.module_.net.state_dict().items()}
        return save_checkpoint(folder, config, {"model": state})

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str = "cpu") -> "Detector":
        from guardgen.checkpoint import load_checkpoint, mismatch

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise GuardgenError(f"{folder}: not a detector folder (no config.json); train one with `guardgen detect train`")
        config = load_json(folder / "config.json")
        if not isinstance(config, dict) or "detector" not in config or "preprocessing" not in config:
            raise GuardgenError(f"{folder}: config.json is not a guardgen detector's")
        _, weights = load_checkpoint(folder)
        if "model" not in weights:
            raise GuardgenError(f"{folder}: no model.safetensors beside config.json")
        try:  # a hand-edited or damaged config: one line, not a traceback from deep inside
            params = dict(config["detector"])
            params["mean"], params["std"] = tuple(params["mean"]), tuple(params["std"])
            params["seed"] = saved_seed(params.get("seed", 0))
            known = set(cls.__dataclass_fields__)
            det = cls(**{k: v for k, v in params.items() if k in known})
            det.pretrained_file = ""
            pre = config["preprocessing"]
            det.input_size, det.in_chans = int(pre["input_size"]), int(pre["in_chans"])
            det.mean, det.std = tuple(float(v) for v in pre["mean"]), tuple(float(v) for v in pre["std"])
            det.threshold = float(det.threshold)
            if det.input_size < 1 or det.in_chans < 1 or not 0 <= det.threshold <= 1:
                raise ValueError(f"input_size {det.input_size}, in_chans {det.in_chans}, threshold {det.threshold}")
            det._build(torch.zeros(1, det.in_chans, det.input_size, det.input_size))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise GuardgenError(f"{folder}/config.json: a damaged detector config ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}); retrain or restore it") from None
        try:
            det.module_.net.load_state_dict(weights["model"])
        except RuntimeError as err:
            raise GuardgenError(f"{folder}/model.safetensors does not fit {det.backbone} ({mismatch(err)})") from None
        det.module_.eval().requires_grad_(False).to(device)
        det.source_size_ = pre.get("source_size")
        det.history_ = []
        fitted = config.get("fitted") or {}
        det.train_images_per_second_ = fitted.get("train_images_per_second")
        det.train_seconds_ = fitted.get("train_seconds")
        det.config_ = config
        return det

    def _resume_settings(self) -> dict:
        """What a resumed fit must share with the interrupted one (not where it runs, nor how often it logs or saves)."""
        return settings_record(self, skip=("device", "mixed_precision", "log_every", "checkpoint_every"))

    def save_state(self, folder: str | Path, extra: dict | None = None) -> Path:
        """The fitted detector exactly, its training history included, for a run that resumes after it (OMAT's
        rounds, ``detect train --resume``); ``save_pretrained`` is the deliverable. ``extra``: the caller's own JSON."""
        self._fitted()
        fitted = {k: getattr(self, k, None) for k in _FITTED}
        return save_training_state(folder, step=len(self.history_), modules={"detector": self.module_},
                                   extra={"history": self.history_, "fitted": fitted, "caller": extra or {}})

    def load_state(self, folder: str | Path, images: torch.Tensor) -> dict:
        """Restore what :meth:`save_state` wrote, for a detector built with the same settings and training
        ``images`` (N, C, H, W) (they fix the input size); returns the caller's ``extra``."""
        if not hasattr(self, "module_"):
            self._build(_as_images(images, "images"))
        _, extra = _resume_from(folder, modules={"detector": self.module_})
        self.module_.eval().requires_grad_(False)  # as fit leaves it
        self.history_ = extra["history"]
        for k, v in extra["fitted"].items():
            setattr(self, k, v)
        return extra["caller"]

    def clone(self) -> "Detector":
        """A deep copy (weights included)."""
        return copy.deepcopy(self)


_FITTED = ("source_size_", "train_seconds_", "train_images_per_second_", "device_")


def _resume_from(folder: Path, **kw) -> tuple[int, dict]:
    """``load_training_state``, with a state written for other settings (another backbone or width) as one line."""
    try:
        return load_training_state(folder, **kw)
    except GuardgenError:  # other settings, named by load_training_state
        raise
    except (AttributeError, TypeError) as err:  # state.json is valid JSON of another shape (a list, a string)
        raise GuardgenError(f"{folder}: a damaged training state ({err.__class__.__name__}: {err}); start again "
                            "without --resume") from None
    except (RuntimeError, KeyError, ValueError) as err:
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise GuardgenError(f"{folder}: the saved training state does not fit this detector's settings ({first}); "
                            "resume with the settings of the interrupted run, or start again without --resume") from None


def _augment(x: torch.Tensor, p: float, sigma: tuple, quality: tuple, g: torch.Generator) -> torch.Tensor:
    """Blur and JPEG, each with probability ``p`` per image (N, C, H, W) in [0, 1]; a no-op at p = 0."""
    if p <= 0:
        return x
    x = x.clone()
    u = torch.rand(len(x), 4, generator=g).tolist()
    for i in range(len(x)):
        if u[i][0] < p:
            s = float(sigma[0] + (sigma[1] - sigma[0]) * u[i][1])
            x[i:i + 1] = perturb(x[i:i + 1], "blur", s) if s > 0 else x[i:i + 1]
        if u[i][2] < p:
            x[i:i + 1] = perturb(x[i:i + 1], "jpeg", int(round(quality[0] + (quality[1] - quality[0]) * u[i][3])))
    return x


def _as_images(images, what: str) -> torch.Tensor:
    images = torch.as_tensor(images).float()
    if images.ndim != 4 or images.shape[0] == 0:
        raise GuardgenError(f"{what}: expected a non-empty (N, C, H, W) image batch, got shape {tuple(images.shape)}")
    return images


def _create_backbone(name: str, model_args: dict, input_size: int, in_chans: int) -> nn.Module:
    """timm's model at ``input_size`` where it takes ``img_size`` (ViTs and other fixed-size models), else as it is.

    A model arg the backbone does not take, or a value it cannot build with (``width=-1``, ``patch_size=0``,
    a string for a number), is a one-line error naming the args; without model args a failure is a bug and raises.
    """
    from guardgen.models.classifier import create_classifier

    args = {"num_classes": 1, "in_chans": in_chans, **(model_args or {})}
    try:
        try:
            return create_classifier(name, img_size=input_size, **args)
        except TypeError as err:
            if "'img_size'" not in str(err):
                raise
        return create_classifier(name, **args)
    except (TypeError, ValueError, RuntimeError, ArithmeticError, AssertionError) as err:
        if not model_args:
            raise
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        if isinstance(err, TypeError) and "unexpected keyword" in first:
            raise GuardgenError(f"backbone {name!r} does not take model args {sorted(model_args)}: {first}") from None
        raise GuardgenError(f"backbone {name!r} cannot be built with model args {model_args}: {first}") from None


def _check_runs_at(net: nn.Module, name: str, size: int, in_chans: int) -> None:
    """One forward pass on zeros (2, in_chans, size, size): a backbone too deep for small images fails here, in one line."""
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(2, in_chans, size, size))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise GuardgenError(f"backbone {name!r} cannot run on {size}x{size} images ({first}); "
                            f"train it at a larger --input-size (e.g. 32 or 224)") from None
    finally:
        net.train()


def _load_backbone_weights(net: nn.Module, path: str) -> None:
    """Load local backbone weights (e.g. an ImageNet ResNet-50 converted to safetensors); the head is left fresh."""
    from guardgen.checkpoint import load_state_dict

    state = load_state_dict(path)
    own = net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise GuardgenError(f"{path}: no tensor fits backbone {type(net).__name__}; wrong weight file?")
    net.load_state_dict(fits, strict=False)
