"""Adapt-then-Unlearn for GANs (Tiwary, Guha, Panda and Prathosh, TMLR), and the naive fine-tune baseline.

The pretrained generator's own samples are labelled by a classifier for the undesired feature. In the
paper's words, **negatives** are the samples that show the undesired feature (e.g. the digit 7) and
**positives** the ones that do not. Two stages follow:

1. *Negative adaptation*: a copy of the GAN is trained adversarially on the negatives (they are the
   "real" data of the discriminator) with an EWC penalty ``(lambda/2) sum_i F_i (theta_i - theta*_i)^2``
   towards the pretrained weights ``theta*``; ``F`` is a diagonal Fisher estimate (squared gradients
   of the discriminator's output on generated samples w.r.t. the generator's parameters). The result
   ``theta_N`` generates mostly the undesired feature.
2. *Unlearning*: the **original** GAN is trained adversarially on the positives with a repulsion term
   that pushes its weights away from ``theta_N``. With ``d(theta) = scale * sum_tensors MSE(theta, theta_N)``
   (averaged over several ``theta_N`` when given) the loss is one of the paper's three forms:
   ``inverse`` (IL2) ``L_adv + gamma / d``, ``negative`` (NL2) ``L_adv - gamma * d`` and
   ``exponential`` (EL2) ``L_adv + exp_scale * exp(-gamma * d)``.

``scale`` (``repulsion_scale``) defaults to the power of ten that puts ``d`` at the start of stage 2
in [1, 10) (the repository's ``--scale_repel_loss``). The Fisher is normalised to mean 1 by default so
``ewc_lambda`` does not depend on the network's size (the paper's lambda is 5e8 on a raw StyleGAN2
Fisher). ``GANFineTune`` (``gan_finetune``) is stage 2 without repulsion: plain adversarial
fine-tuning on the positives, the naive baseline.

Which samples show the feature: with a class classifier, those whose argmax is a forgotten class (the
paper's labelling), and with ``feature_min_prob > 0`` also those that give the forgotten classes at least
that probability (our option). With argmax labelling the ambiguous 7-like samples the oracle calls 1 or 9
stay among the positives and the unlearned GAN kept drawing about 4% sevens (bench/gan.py, zoo:mnist-gan
forgetting 7: NL2 0.035, naive 0.055); with ``feature_min_prob=0.005`` and 2,000 stage-2 iterations EL2
leaves 0.003-0.009 (3 seeds; IL2 0.0045-0.008, naive 0.0045-0.010), but that flags 84% of this weak GAN's
samples, and it needs a calibrated classifier (a near-uniform one flags every sample). At 1,000
iterations EL2 left 0.004-0.011; more iterations lower the share and raise FD.

Measured on the zoo (bench/gan.py): the parameter distance is not scale-invariant, and a generator with
BatchNorm after its convolutions can grow ``d`` by inflating weight norms without changing its function
(NL2 took ``d`` from about 3 to over 2,500 on ``zoo:mnist-gan`` while FD stayed put), so the repulsion
acts more weakly than its value suggests on such generators.

Works on any generator/discriminator pair of ``nn.Module``s: the generator maps ``z: (B, latent_dim)``
to images in [-1, 1], the discriminator maps images to logits ``(B,)`` or ``(B, 1)``; the classifier
reads images in [0, 1].
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from guardgen.checkpoint import fingerprint, load_training_state, save_training_state
from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Seed, UnitFloat, check_settings
from guardgen.utils import Callback, fused, make_accelerator, prepare
from unlearn import UNLEARN
from unlearn._resume import LoopState, check_state, method_settings, set_task

__all__ = ["AdaptThenUnlearn", "GANFineTune", "REPULSIONS", "GAMMA_DEFAULTS", "repulsion_loss", "parameter_distance",
           "diagonal_fisher", "ewc_penalty", "split_by_feature", "evaluate_gan_unlearning", "load_unlearned_gan"]

REPULSIONS = ("inverse", "negative", "exponential")
GAMMA_DEFAULTS = {"inverse": 1.0, "negative": 1e-3, "exponential": 1.0}  # with the automatic repulsion scale


# ---------------------------------------------------------------------------------------------------
# the pieces (pure functions, tested by hand)


def repulsion_loss(d: torch.Tensor, form: str, gamma: float, exp_scale: float = 100.0) -> torch.Tensor:
    """The repulsion term on a distance ``d`` (a scalar tensor): IL2 ``gamma/d``, NL2 ``-gamma*d``, EL2 ``exp_scale*exp(-gamma*d)``."""
    if form == "inverse":
        return gamma / d.clamp_min(1e-12)
    if form == "negative":
        return -gamma * d
    if form == "exponential":
        return exp_scale * torch.exp(-gamma * d)
    raise GuardgenError(f"unknown repulsion {form!r}; use one of {', '.join(REPULSIONS)}")


def _float_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]


def parameter_distance(module: nn.Module, anchors: Sequence[dict[str, torch.Tensor]], scale: float = 1.0) -> torch.Tensor:
    """``scale * mean_over_anchors( sum_over_tensors MSE(theta, theta_anchor) )`` as a differentiable scalar."""
    params = _float_params(module)
    total = 0.0
    for anchor in anchors:
        total = total + sum(F.mse_loss(p, anchor[n].to(p.device, p.dtype), reduction="mean") for n, p in params)
    return scale * total / len(anchors)


def diagonal_fisher(generator: nn.Module, discriminator: nn.Module, latent_dim: int, *, samples: int = 32,
                    chunk: int = 4, normalize: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of the generator: mean over chunks of squared gradients of ``D(G(z)).mean()``.

    Follows the official code (squared gradients of the discriminator's output on ``samples`` generated
    images). ``normalize`` rescales it to mean 1 over all entries.
    """
    device = next(generator.parameters()).device
    params = _float_params(generator)
    fisher = {n: torch.zeros_like(p) for n, p in params}
    g = torch.Generator().manual_seed(seed)
    n_chunks = max(samples // chunk, 1)
    was = generator.training, discriminator.training
    generator.eval(), discriminator.eval()
    for _ in range(n_chunks):
        z = torch.randn(chunk, latent_dim, generator=g).to(device)
        out = discriminator(generator(z)).float().mean()
        grads = torch.autograd.grad(out, [p for _, p in params], allow_unused=True)
        for (n, _), gr in zip(params, grads):
            if gr is not None:
                fisher[n] += gr.detach() ** 2 / n_chunks
    generator.train(was[0]), discriminator.train(was[1])
    if normalize:
        mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
        if mean > 0:
            fisher = {n: f / mean for n, f in fisher.items()}
    return fisher


def ewc_penalty(module: nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """``(lam / 2) * sum_i F_i (theta_i - theta*_i)^2`` over the module's parameters."""
    return 0.5 * lam * sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in _float_params(module))


def split_by_feature(images01: torch.Tensor, classifier, forget, threshold: float = 0.0,
                     batch_size: int = 512, min_prob: float = 0.0) -> torch.Tensor:
    """Boolean mask (N,): True where ``classifier`` finds the undesired feature in images (N, C, H, W) in [0, 1].

    ``classifier`` is an ``nn.Module`` or any callable. Its output (B, K) is read as logits over classes
    and the feature is "argmax in ``forget``" (class ids), or, with ``min_prob > 0``, also "softmax mass
    on ``forget`` >= min_prob" (ambiguous images count as showing it); an output (B,) is read as a score
    per image (bool, or a logit/probability compared with ``threshold``: the paper counts logit >= 0).
    """
    forget_set = set(int(f) for f in _as_list(forget)) if forget is not None else set()
    out = []
    module = classifier if isinstance(classifier, nn.Module) else None
    was = module.training if module is not None else None
    if module is not None:
        module.eval()
    device = next(module.parameters()).device if module is not None and any(True for _ in module.parameters()) else "cpu"
    with torch.no_grad():
        for i in range(0, len(images01), batch_size):
            y = classifier(images01[i : i + batch_size].to(device))
            y = torch.as_tensor(y).detach().cpu()
            if y.ndim == 2 and y.shape[1] > 1:
                if not forget_set:
                    raise GuardgenError("the classifier returns class logits; pass the class id(s) to forget")
                if max(forget_set) >= y.shape[1] or min(forget_set) < 0:
                    raise GuardgenError(f"forget class(es) {sorted(forget_set)} outside the classifier's 0..{y.shape[1] - 1}")
                classes = torch.tensor(sorted(forget_set))
                found = torch.isin(y.argmax(1), classes)
                if min_prob > 0:
                    found |= y.float().softmax(1)[:, classes].sum(1) >= min_prob
                out.append(found)
            else:
                y = y.reshape(len(y))
                out.append(y.bool() if y.dtype == torch.bool else y.float() >= threshold)
    if module is not None:
        module.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _as_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


# ---------------------------------------------------------------------------------------------------
# shared plumbing


def _latent_dim(generator: nn.Module, latent_dim: int) -> int:
    dim = latent_dim or getattr(generator, "latent_dim", 0)
    if not dim:
        raise GuardgenError("the generator has no latent_dim attribute; set latent_dim in the method's settings")
    return int(dim)


def _unpack(gan, device="cpu") -> tuple[nn.Module, nn.Module]:
    if isinstance(gan, (str, Path)):
        from guardgen.models import load_model

        gan = load_model(str(gan), kind="gan", device=device)
    if not isinstance(gan, (tuple, list)) or len(gan) != 2:
        raise GuardgenError("pass the GAN as (generator, discriminator) or as a GAN folder / zoo spec")
    generator, discriminator = gan
    if not isinstance(generator, nn.Module):
        raise GuardgenError("the generator must be a torch nn.Module")
    if discriminator is None:
        raise GuardgenError("this method trains adversarially and needs the GAN's discriminator; the folder holds none "
                            "(save it with save_gan(..., discriminator))")
    if not isinstance(discriminator, nn.Module):
        raise GuardgenError("the discriminator must be a torch nn.Module")
    if getattr(generator, "num_classes", 0):
        raise GuardgenError("this method unlearns from unconditional generators; the generator is class-conditional")
    return generator, discriminator


def _check_pair(generator: nn.Module, discriminator: nn.Module, latent_dim: int) -> tuple[int, ...]:
    """Run the pair on two latents; a mismatch becomes one GuardgenError line. Returns the image shape."""
    device = next(generator.parameters()).device
    was = generator.training, discriminator.training
    generator.eval(), discriminator.eval()
    x = None
    try:
        with torch.no_grad():
            x = generator(torch.randn(2, latent_dim, device=device))
            if not isinstance(x, torch.Tensor) or x.ndim != 4:
                raise GuardgenError(f"the generator must return images (B, C, H, W); got {getattr(x, 'shape', type(x))}")
            y = discriminator(x.to(next(discriminator.parameters()).device))
    except (RuntimeError, TypeError) as err:
        first = (str(err).splitlines() or [""])[0][:160]
        shape = f"{tuple(x.shape[1:])} " if isinstance(x, torch.Tensor) else ""
        raise GuardgenError(f"generator/discriminator mismatch: the discriminator cannot read the generator's "
                            f"{shape}images ({first})") from None
    finally:
        generator.train(was[0]), discriminator.train(was[1])
    if y.numel() != 2:
        raise GuardgenError(f"generator/discriminator mismatch: the discriminator returned shape {tuple(y.shape)} "
                            f"for 2 images of shape {tuple(x.shape[1:])}; it must return one logit per image")
    return tuple(x.shape[1:])


@torch.no_grad()
def _sample(generator: nn.Module, n: int, latent_dim: int, seed: int, batch_size: int = 256) -> torch.Tensor:
    """n images in the generator's range [-1, 1], float32 on CPU (eval mode, then restored)."""
    device = next(generator.parameters()).device
    was = generator.training
    generator.eval()
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    out = torch.cat([generator(z[i : i + batch_size].to(device)).float().cpu() for i in range(0, n, batch_size)])
    generator.train(was)
    return out


def _d_logits(discriminator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return discriminator(x).float().reshape(len(x))


def _adversarial_step(gen, disc, opt_g, opt_d, real, z, acc, loss_kind: str, extra_g=None) -> tuple[float, float, torch.Tensor]:
    """One D step (real vs G(z)) and one G step whose loss adds ``extra_g(gen)`` when given."""
    from guardgen.zoo.gan import gan_losses

    with acc.autocast():
        fake = gen(z)
        loss_d = gan_losses(loss_kind, _d_logits(disc, real), _d_logits(disc, fake.detach()), for_generator=False)
    opt_d.zero_grad(set_to_none=True)
    acc.backward(loss_d)
    opt_d.step()
    with acc.autocast():
        loss_adv = gan_losses(loss_kind, None, _d_logits(disc, fake), for_generator=True)
    extra = extra_g(gen) if extra_g is not None else torch.zeros((), device=loss_adv.device)
    loss_g = loss_adv + extra
    if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
        raise FloatingPointError("non-finite GAN loss; lower the learning rate, gamma or ewc_lambda")
    opt_g.zero_grad(set_to_none=True)
    acc.backward(loss_g)
    opt_g.step()
    return loss_d.item(), loss_adv.item(), extra.detach()


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in _float_params(module)}


@dataclass(kw_only=True)
class _GANUnlearnBase:
    target: ClassVar[str] = "gan"  # the kind of model it unlearns (`guardgen unlearn methods`)
    num_samples: PositiveInt = 5000  # samples drawn from the pretrained generator and labelled by the classifier
    min_negatives: NonNegInt = 8  # fewer samples with the feature than this: the classifier "never finds" it
    unlearn_iterations: PositiveInt = 2000  # the paper: 3,000 on MNIST
    batch_size: PositiveInt = 64
    lr_g: PositiveFloat = 5e-4
    lr_d: PositiveFloat = 5e-4
    betas: tuple[float, float] = (0.5, 0.999)
    loss: Literal["ns", "hinge"] = "ns"
    threshold: float = 0.0  # for classifiers returning one score per image (paper: logit >= 0)
    feature_min_prob: UnitFloat = 0.0  # class classifiers: also p(forgotten) >= this shows the feature (0: argmax only)
    latent_dim: NonNegInt = 0  # 0: read generator.latent_dim
    checkpoint_every: PositiveInt = 100  # iterations between training states in out/training_state (with out=)
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    history_: list = field(default_factory=list, init=False, repr=False)

    _STAGES: ClassVar[tuple[str, ...]] = ()  # the loops' state folders under out/training_state

    def _prepare(self, gan, forget, classifier, out=None, resume=False, latent_dim_override=0):
        """The generator and discriminator, and the samples with and without the feature; a state in ``out`` that
        ``resume`` would continue is checked against this task first, before any sample is drawn."""
        if classifier is None:
            raise GuardgenError("pass a classifier for the undesired feature (the zoo oracle for a digit, or any callable)")
        generator, discriminator = _unpack(gan)
        latent_dim = _latent_dim(generator, self.latent_dim or latent_dim_override)
        _check_pair(generator, discriminator, latent_dim)
        if not 0 <= self.feature_min_prob < 1:
            raise GuardgenError(f"feature_min_prob must be in [0, 1), got {self.feature_min_prob}")
        self.latent_dim_, self.forget_ = latent_dim, [int(f) for f in _as_list(forget)] if forget is not None else []
        set_task(self, generator, forget=self.forget_,
                 classifier=fingerprint(classifier) if isinstance(classifier, nn.Module) else type(classifier).__name__)
        for stage in self._STAGES:
            check_state(self, out, resume, f"training_state/{stage}")
        images = _sample(generator, self.num_samples, latent_dim, self.seed)
        mask = split_by_feature((images + 1) / 2, classifier, forget, self.threshold, min_prob=self.feature_min_prob)
        n_neg = int(mask.sum())
        self.share_before_ = n_neg / max(len(mask), 1)
        self.n_negatives_, self.n_positives_ = n_neg, int((~mask).sum())
        if n_neg < self.min_negatives:
            raise GuardgenError(f"the classifier finds the feature to forget ({_describe(forget)}) in {n_neg} of "
                                f"{len(mask)} samples of this generator; nothing to unlearn (check the class id or classifier)")
        if self.n_positives_ < self.min_negatives:
            hint = (f" (feature_min_prob={self.feature_min_prob} also counts every sample with that much probability "
                    "on the class; lower it, or 0 for argmax labelling)") if self.feature_min_prob > 0 else ""
            raise GuardgenError(f"the classifier finds the feature in {n_neg} of {len(mask)} samples: no samples "
                                f"without it are left to train on{hint}")
        return generator, discriminator, images[mask], images[~mask]

    def _train(self, generator, discriminator, data, iterations, *, tag, extra_g=None, callback=None, offset=0,
               total=None, seed_shift=0, out=None, resume=False):
        """One adversarial stage; with ``out``, its state is kept in ``out/training_state/<tag>`` (``resume``: continued)."""
        acc = make_accelerator(self.device, self.mixed_precision)
        torch.manual_seed(self.seed + seed_shift)
        gen = copy.deepcopy(generator).train()
        disc = copy.deepcopy(discriminator).train()
        for module in (gen, disc):
            module.requires_grad_(True)
        opt_g = torch.optim.Adam(gen.parameters(), lr=self.lr_g, betas=tuple(self.betas), fused=fused(acc.device))
        opt_d = torch.optim.Adam(disc.parameters(), lr=self.lr_d, betas=tuple(self.betas), fused=fused(acc.device))
        gen, disc, opt_g, opt_d = prepare(acc, gen, disc, opt_g, opt_d)
        extra = (lambda g: extra_g(acc.unwrap_model(g))) if extra_g is not None else None
        state = LoopState(self, out, resume, name=f"training_state/{tag}", iterations=iterations)
        modules, optimizers = {"generator": acc.unwrap_model(gen), "discriminator": acc.unwrap_model(disc)}, {"g": opt_g, "d": opt_d}
        for step in range(state.start(modules, optimizers), iterations + 1):
            g = torch.Generator().manual_seed((self.seed + seed_shift) * 1_000_003 + step)
            idx = torch.randint(len(data), (self.batch_size,), generator=g)
            real = data[idx].to(acc.device)
            z = torch.randn(self.batch_size, self.latent_dim_, generator=g).to(acc.device)
            loss_d, loss_adv, reg = _adversarial_step(gen, disc, opt_g, opt_d, real, z, acc, self.loss, extra)
            logs = {"stage": tag, "loss_d": loss_d, "loss_g": loss_adv, "reg": float(reg)}
            self.history_.append({"step": offset + step, **logs})
            if callback is not None:
                callback(offset + step, {"total": total or iterations, **logs})
            state.save(step, modules, optimizers)
        state.finish()
        return acc.unwrap_model(gen).eval().requires_grad_(False), acc.unwrap_model(disc).eval().requires_grad_(False)

    # -------------------------------------------------------------------------------------------
    # saving

    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the unlearned GAN: a GAN folder (``save_gan``) that ``load_model`` reads, plus what was forgotten."""
        from guardgen.checkpoint import save_checkpoint
        from guardgen.models.gan import save_gan

        if not hasattr(self, "generator_"):
            raise GuardgenError("fit the method before saving it")
        meta = {"unlearning": {"method": self._key, "forget": self.forget_, "share_before": self.share_before_,
                               "negatives": self.n_negatives_, "positives": self.n_positives_,
                               "hyperparameters": {k: v for k, v in asdict(self).items() if not k.endswith("_")},
                               "train_seconds": getattr(self, "train_seconds_", None)},
                **(extra or {})}
        arch = _architecture_of(self.generator_, self.discriminator_)
        if arch is not None:
            return save_gan(folder, self.generator_, self.discriminator_, architecture=arch,
                            generator_args=self.generator_.config, discriminator_args=self.discriminator_.config, extra=meta)
        # a user's own modules: weights + metadata; reload into the same classes with load_unlearned_gan
        return save_checkpoint(folder, {**meta, "generator_class": _qualname(self.generator_),
                                        "discriminator_class": _qualname(self.discriminator_)},
                               {"generator": self.generator_.state_dict(), "discriminator": self.discriminator_.state_dict()})


def _describe(forget) -> str:
    return ", ".join(str(f) for f in _as_list(forget)) if forget is not None else "the classifier's positive score"


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _architecture_of(generator: nn.Module, discriminator: nn.Module) -> str | None:
    from guardgen.models.gan import GAN_ARCHITECTURES

    if not hasattr(generator, "config") or not hasattr(discriminator, "config"):
        return None
    for name in GAN_ARCHITECTURES.names():
        arch = GAN_ARCHITECTURES.get(name)
        if type(generator) is arch.generator and type(discriminator) is arch.discriminator:
            return name
    return None


def load_unlearned_gan(folder: str | Path, generator: nn.Module, discriminator: nn.Module | None = None):
    """Load weights saved by ``save_pretrained`` for a user's own modules into ``generator`` [, ``discriminator``]."""
    from guardgen.checkpoint import load_checkpoint, mismatch

    config, weights = load_checkpoint(folder)
    try:
        generator.load_state_dict(weights["generator"])
        if discriminator is not None:
            discriminator.load_state_dict(weights["discriminator"])
    except (KeyError, RuntimeError) as err:
        raise GuardgenError(f"{folder}: weights do not fit the modules passed ({mismatch(err)})") from None
    return config


# ---------------------------------------------------------------------------------------------------
# the methods


@UNLEARN.register("adapt_then_unlearn")
@dataclass(kw_only=True)
class AdaptThenUnlearn(_GANUnlearnBase):
    """Defaults sized for the zoo's 16x16 GANs on a CPU (bench/gan.py): 200 adaptation and 500 unlearning
    iterations at batch 64, lr 5e-4, NL2 repulsion (the README's MNIST choice) with gamma 1e-3 on the auto-scaled distance."""
    summary: ClassVar[str] = ("Adapt-then-Unlearn (Tiwary et al., TMLR): adapt a GAN to the unwanted samples, then "
                              "train away from them")  # one line for `guardgen unlearn methods`

    _STAGES: ClassVar[tuple[str, ...]] = ("adapt", "adapted", "unlearn")

    adapt_iterations: PositiveInt = 200
    ewc_lambda: NonNegFloat = 1.0  # on the mean-1 Fisher (fisher_normalize); the paper's 5e8 is on a raw StyleGAN2 Fisher
    fisher_samples: PositiveInt = 32
    fisher_normalize: bool = True
    # "inverse" (IL2) | "negative" (NL2) | "exponential" (EL2). EL2 by default: its term is bounded, while NL2 rewards
    # distance without bound; on zoo:mnist-gan over seeds 0/1/2, NL2 left 0.0140 / 0.0540 / 0.0095 of 7s (FD 1.04 /
    # 3.45 / 1.52x) and EL2 0.0090 / 0.0110 / 0.0040 (FD 0.71 / 0.87 / 1.08x) (bench/results/gan-cpu*.json)
    repulsion: Literal["inverse", "negative", "exponential"] = "exponential"
    gamma: NonNegFloat | None = None  # None: the form's default (GAMMA_DEFAULTS: 1e-3 NL2, 1.0 IL2 and EL2; bench/gan.py)
    exp_scale: PositiveFloat = 100.0  # EL2's constant
    repulsion_scale: NonNegFloat = 0.0  # 0: auto, the power of ten that puts d at the start of stage 2 in [1, 10)
    _key = "adapt_then_unlearn"

    def fit(self, gan, *, forget=None, classifier=None, callback: Callback | None = None,
            adapted: nn.Module | Sequence[nn.Module] | None = None, out=None, resume: bool = False, **_) -> "AdaptThenUnlearn":
        """Unlearn ``forget`` (class id(s) of ``classifier``, or None for a one-score classifier) from ``gan``.

        ``gan``: ``(generator, discriminator)`` or a GAN folder/spec. ``adapted``: stage-1 generator(s)
        to reuse (skips stage 1). Sets ``generator_``, ``discriminator_``, ``adapted_``, ``history_``.
        With ``out``, each stage's state is kept in ``out/training_state`` (the adapted generator once stage 1
        ends); ``resume=True`` continues where the run stopped.
        """
        check_settings(self)
        t0 = time.perf_counter()
        generator, discriminator, negatives, positives = self._prepare(gan, forget, classifier, out, resume)
        total = (0 if adapted is not None else self.adapt_iterations) + self.unlearn_iterations
        self.history_ = []
        stage1 = None if out is None else Path(out) / "training_state" / "adapted"
        if adapted is None and resume and stage1 is not None and (stage1 / "state.json").is_file():  # stage 1 had ended
            adapted_g = copy.deepcopy(generator).eval().requires_grad_(False)
            self.history_ = load_training_state(stage1, modules={"generator": adapted_g}, settings=method_settings(self))[1]["history"]
            adapted = [adapted_g]
            offset, total = self.adapt_iterations, self.adapt_iterations + self.unlearn_iterations
        # stage 1: negative adaptation with EWC
        elif adapted is None:
            anchor = _state(generator)
            fisher = diagonal_fisher(generator, discriminator, self.latent_dim_, samples=self.fisher_samples,
                                     normalize=self.fisher_normalize, seed=self.seed)
            dev_fisher: dict = {}

            def ewc(g):
                if not dev_fisher:
                    dev = next(g.parameters()).device
                    dev_fisher.update({n: (fisher[n].to(dev), anchor[n].to(dev)) for n in fisher})
                return 0.5 * self.ewc_lambda * sum((dev_fisher[n][0] * (p - dev_fisher[n][1]) ** 2).sum()
                                                   for n, p in _float_params(g))

            adapted_g, _ = self._train(generator, discriminator, negatives, self.adapt_iterations, tag="adapt",
                                       extra_g=ewc, callback=callback, total=total, seed_shift=1, out=out, resume=resume)
            if stage1 is not None:
                save_training_state(stage1, step=self.adapt_iterations, modules={"generator": adapted_g},
                                    extra={"history": self.history_, "settings": method_settings(self)})
            adapted = [adapted_g]
            offset = self.adapt_iterations
        else:
            adapted = list(adapted) if isinstance(adapted, (list, tuple)) else [adapted]
            offset = 0
        self.adapted_ = adapted[0] if len(adapted) == 1 else adapted
        anchors = [_state(a) for a in adapted]
        # stage 2: unlearning from the original weights, repelled from theta_N
        with torch.no_grad():
            d0 = float(parameter_distance(generator, anchors))
        if self.repulsion_scale > 0:
            scale = self.repulsion_scale
        else:
            scale = 10.0 ** -math.floor(math.log10(d0)) if d0 > 0 else 1.0
        self.repulsion_scale_, self.initial_distance_ = scale, d0 * scale
        gamma = self.gamma_ = GAMMA_DEFAULTS[self.repulsion] if self.gamma is None else float(self.gamma)
        dev_anchors: list = []

        def repel(g):
            if not dev_anchors:
                dev = next(g.parameters()).device
                dev_anchors.extend({n: t.to(dev) for n, t in a.items()} for a in anchors)
            return repulsion_loss(parameter_distance(g, dev_anchors, scale), self.repulsion, gamma, self.exp_scale)

        self.generator_, self.discriminator_ = self._train(generator, discriminator, positives, self.unlearn_iterations,
                                                           tag="unlearn", extra_g=repel, callback=callback,
                                                           offset=offset, total=total, seed_shift=2, out=out, resume=resume)
        with torch.no_grad():
            self.final_distance_ = float(parameter_distance(self.generator_, anchors, scale))
        if out is not None and (Path(out) / "training_state").exists():
            shutil.rmtree(Path(out) / "training_state")
        self.train_seconds_ = time.perf_counter() - t0
        return self


@UNLEARN.register("gan_finetune")
@dataclass(kw_only=True)
class GANFineTune(_GANUnlearnBase):
    """The naive baseline: adversarial fine-tuning of the original GAN on the samples without the feature."""
    summary: ClassVar[str] = ("Adversarial fine-tuning of the GAN on its samples without the feature "
                              "(Adapt-then-Unlearn's naive baseline)")  # one line for `guardgen unlearn methods`

    _key = "gan_finetune"
    _STAGES: ClassVar[tuple[str, ...]] = ("finetune",)

    def fit(self, gan, *, forget=None, classifier=None, callback: Callback | None = None, out=None, resume: bool = False,
            **_) -> "GANFineTune":
        check_settings(self)
        t0 = time.perf_counter()
        generator, discriminator, _, positives = self._prepare(gan, forget, classifier, out, resume)
        self.history_ = []
        self.generator_, self.discriminator_ = self._train(generator, discriminator, positives, self.unlearn_iterations,
                                                           tag="finetune", callback=callback, seed_shift=2, out=out, resume=resume)
        if out is not None and (Path(out) / "training_state").exists():
            shutil.rmtree(Path(out) / "training_state")
        self.train_seconds_ = time.perf_counter() - t0
        return self


# ---------------------------------------------------------------------------------------------------
# evaluation (CLI and bench)


def evaluate_gan_unlearning(original: nn.Module, unlearned: nn.Module, oracle: nn.Module, forget: Sequence[int], *,
                            n: int = 2000, seed: int = 0, resolution: int = 16, grid: str | Path | None = None) -> dict:
    """Before/after figures on ``n`` samples each (same latents): share of samples the oracle labels as a
    forgotten class, FD (oracle features) and precision/recall to the real retained test digits."""
    from guardgen.data import save_grid
    from guardgen.metrics import fd_from_features, precision_recall_knn
    from guardgen.models.classifier import classifier_features
    from guardgen.utils import predict_logits
    from guardgen.zoo.gan import load_mnist  # cached

    forget = [int(f) for f in forget]
    real = load_mnist("test", resolution, tuple(forget))
    f_real = classifier_features(oracle, real.images)
    out, images = {}, {}
    for tag, gen in (("before", original), ("after", unlearned)):
        x = (_sample(gen, n, _latent_dim(gen, 0), seed + 777) + 1) / 2
        images[tag] = x
        pred = predict_logits(oracle, x).argmax(1)
        f = classifier_features(oracle, x)
        keep = ~torch.isin(pred, torch.tensor(forget))
        pr = precision_recall_knn(f_real, f[: len(real)], k=3)
        out[tag] = {"forget_share": float((~keep).float().mean()),
                    "fd_retained": fd_from_features(f, f_real),
                    "precision": pr["precision"], "recall": pr["recall"],
                    "class_histogram": torch.bincount(pred, minlength=10).tolist()}
    out["fd_ratio"] = out["after"]["fd_retained"] / out["before"]["fd_retained"]
    out["samples"], out["seed"], out["forget"] = n, seed, forget
    if grid is not None:
        k = 10
        rows = torch.cat([torch.cat([images["before"][r * k:(r + 1) * k], images["after"][r * k:(r + 1) * k]]) for r in range(8)])
        out["grid"] = str(save_grid(rows, grid, nrow=2 * k))
    return out
