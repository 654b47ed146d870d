"""Score Forgetting Distillation (SFD). Chen, Zhang and Zhou, "Score Forgetting Distillation: a swift,
data-free method for machine unlearning in diffusion models", ICLR 2025.

Three UNets start from the pretrained model: a frozen teacher (phi), a fake-score net (psi) and a
one-step generator (theta). Each iteration takes one psi step (denoising score matching on the
generator's samples) and one theta step with the SiD loss

    l(alpha) = (p - s)^T [(p - x_g) - alpha (p - s)] / omega,   p = f_phi(x_t), s = f_psi(x_t),

where f is the denoiser x_0(x_t). Retained conditions c_r use the teacher at c_r (distillation);
forgotten conditions c_f use the teacher at an override c_o while psi and theta use c_f, so the
generator's c_f-conditional becomes the teacher's c_o-conditional. No real images are used: only the
label (or prompt) distribution of the retained data.

Two additions of ours, both data-free and off by default (``lambda_regression=0, forget_negative=0``: the paper's
SFD):

- a regression anchor, after DMD (Yin et al., CVPR 2024): before training the teacher draws ``regression_pairs``
  deterministic DDIM samples y from fixed noise z; a few slots of every batch take a pair's noise and condition, and
  the generator's output there is pulled onto the teacher's, lambda_regression * ||G(z) - y||^2 / 2 (for a
  forgotten condition, y is the teacher's sample at the override). In a few hundred iterations the SiD loss alone is
  mode-seeking: recall on retained classes falls to 0.69-0.80 against the original's 0.86;
- negative guidance on the forgotten rows (SFD's Stable Diffusion setup passes unsafe keywords as negative
  prompts): the teacher's score there is eps(c_o) + w (eps(c_o) - eps(c_f)), w = ``forget_negative``. With the
  anchor alone the generator copies the override's samples faithfully, including those the oracle takes for the
  forgotten concept (2% of the zoo text model's "one"s are read as 7s), and the forget rate rose to 0.014-0.024.

Both on (1.0 and 1.0), at 450 iterations (bench/results/sfd_sweep-cpu-regression.json): on the zoo text model FD on
retained classes goes from 1.75x/1.92x to 1.17x/1.49x the original's (seeds 0/1) with forget rate 0.000, but on the
class-conditional model from 1.26x/1.37x to 1.31x/1.39x, and a run took 4-18% longer in the sweeps (the pairs, and a
teacher pass on the forgotten rows), which puts both models at or over a quarter of a retrain. On a second concept
(forget 3 -> override 8, seed 0; sfd_sweep-cpu-forget3.json) they hurt: FD 1.22x -> 1.68x (text) and 1.12x -> 2.37x
(class), where the default meets every target. So they stay opt-in, an experiment rather than a recommendation.
"""

from __future__ import annotations

import copy
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Sequence

import torch

from guardgen.checkpoint import load_training_state, save_training_state
from guardgen.errors import GuardgenError
from guardgen.models.conditioning import conditioning_for, ddim_sample, guided_eps
from guardgen.registry import NonNegFloat, NonNegInt, OpenUnitFloat, PositiveFloat, PositiveInt, Range, Seed, check_settings
from guardgen.utils import Callback, fused, make_accelerator, prepare
from unlearn import UNLEARN
from unlearn._resume import check_state, method_settings, set_task

__all__ = ["SFD"]


@UNLEARN.register("sfd")
@dataclass(kw_only=True)
class SFD:
    """Hyperparameters: the paper's (Adam betas (0, 0.999), t in [38, 712), t_init 440, value clipping at
    1.0), with alpha, lr, lambda_forget, the iterations and the generator EMA scaled for short runs on small
    models (bench/sfd_sweep.py, batch 32: lr 3e-4 with an EMA half-life of 100 iterations was the steadiest
    setting over two seeds; the raw generator's FD swings between 1.7x and 23x the original's within 100
    iterations, sfd_sweep-cpu-ddpm-online.json). alpha is 1.5, not the paper's 1.2 (tuned for 50k iterations):
    over 350-450 iterations it gave the lower FD in every run compared (ddpm seeds 0 and 1, t2i), while 2.0
    collapsed the generator (sfd_sweep-cpu-alpha.json). The generator's learning rate warms up over 100
    iterations: Adam's first steps move every weight by about lr whatever the gradient's size, and without the
    warm-up the generator swung far on some seeds (FD at 450 iterations: t2i seed 1 19.9x -> 6.5x; on seed 0, ddpm
    1.26x -> 1.33x and t2i 1.47x -> 1.51x; sfd_sweep-cpu-warmup.json). The fake-score net learns at twice the
    generator's rate (6e-4), a two time-scale update that costs nothing per iteration (DMD2 takes extra fake-score
    steps instead, ``fake_steps`` here). Against 3e-4, FD at 450 iterations goes from 1.33/1.49/1.38/1.26x to
    1.26/1.37/1.21/1.29x over ddpm seeds 0-3 and from 1.51/6.51x to 1.75/1.92x over t2i seeds 0-1, where seed 1 now
    forgets (forget rate 0.060 -> 0.006). forget_share 0.125 steadied ddpm too (1.27/1.36/1.21/1.35x) but left the
    text concept half-forgotten (forget rate 0.05), so it stays 0.25 (sfd_sweep-cpu-seeds.json)."""
    summary: ClassVar[str] = ("Score Forgetting Distillation (Chen et al., ICLR 2025): a data-free one-step generator "
                              "whose forgotten concept becomes the override")  # one line for `guardgen unlearn methods`
    target: ClassVar[str] = "diffusion"  # the kind of model it unlearns (`guardgen unlearn methods`)

    alpha: NonNegFloat = 1.5
    lambda_retain: NonNegFloat = 1.0
    lambda_forget: NonNegFloat = 1.0
    lr_fake: PositiveFloat = 6e-4  # twice lr_generator's default (two time-scale); set both when changing either
    lr_generator: PositiveFloat = 3e-4
    iterations: NonNegInt = 450  # 0: the untrained one-step generator (the teacher at t_init)
    batch_size: Annotated[int, Range(2)] = 32
    forget_share: OpenUnitFloat = 0.25  # share of each batch drawn with a forgotten condition
    t_init: NonNegInt = 440  # timesteps on a 1000-step schedule; rescaled to the model's own schedule length
    t_min: NonNegInt = 38
    t_max: NonNegInt = 712
    teacher_guidance: NonNegFloat = 1.0  # classifier-free guidance of the teacher score
    forget_negative: NonNegFloat = 0.0  # forgotten rows: the teacher at the override, guided away from the concept by this weight
    override: Literal["fixed", "random", "oracle"] = "fixed"
    grad_clip: PositiveFloat = 1.0
    warmup: NonNegInt = 100  # linear warm-up of the generator's learning rate, in iterations (at most a quarter of the run)
    fake_steps: PositiveInt = 1  # fake-score updates per generator update (SiD: 1; DMD2-style two time-scale: more)
    ema_halflife: NonNegFloat = 100.0  # EMA of the generator's weights: half-life in iterations; 0 turns it off
    ema_rampup: NonNegFloat = 0.25  # ... at most this share of the iterations done so far (EDM-style ramp-up)
    lambda_regression: NonNegFloat = 0.0  # regression anchor on teacher ODE pairs (our extension, DMD-style; 0: the paper's SFD)
    regression_pairs: NonNegInt = 256  # (noise, teacher DDIM sample) pairs, a forget_share of them for the forgotten conditions
    regression_steps: PositiveInt = 20  # DDIM steps of the teacher's deterministic sampler that makes the pairs
    regression_retain_batch: NonNegInt = 6  # retained slots of each batch that take a pair's noise and condition
    regression_forget_batch: NonNegInt = 4  # ... and forgotten slots (their pair's target is the override's sample)
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    checkpoint_every: PositiveInt = 50
    history_: list = field(default_factory=list, init=False, repr=False)

    def _validate_params(self) -> None:
        check_settings(self, name="sfd")
        if not self.t_min < self.t_max:
            raise GuardgenError("need t_min < t_max")
        if self.lambda_regression > 0 and self.regression_pairs < 2:
            raise GuardgenError("lambda_regression > 0 needs regression_pairs >= 2")

    # -------------------------------------------------------------------------------------------------
    def fit(self, pipe, *, forget: Sequence, retain: Sequence, override: Sequence | None = None, oracle=None,
            callback: Callback | None = None, out: str | Path | None = None, resume: bool = False) -> "SFD":
        """Distil ``pipe`` (with ``unet`` and ``scheduler``) into a one-step generator that forgets ``forget``.

        forget/retain/override: class ids or prompts. With ``override="fixed"`` each forgotten
        condition maps to ``override[i % len(override)]``; ``"random"`` draws a retained condition per
        sample; ``"oracle"`` takes the ``oracle`` classifier's argmax on the teacher's denoised x_0,
        with the forgotten classes masked out (class conditioning only).
        """
        self._validate_params()
        cond = conditioning_for(pipe)
        forget, retain = [cond.parse(c) for c in forget], [cond.parse(c) for c in retain]
        override = [cond.parse(c) for c in (override or [])]
        if not forget or not retain:
            raise GuardgenError("SFD needs at least one forgotten and one retained condition")
        if set(forget) & set(override):
            raise GuardgenError("the override equals the forgotten concept; choose another override")
        if self.override == "fixed" and not override:
            raise GuardgenError("override='fixed' needs an override class or prompt")
        if self.override == "oracle" and (oracle is None or cond.kind != "class"):
            raise GuardgenError("override='oracle' needs a classifier and a class-conditional model")
        set_task(self, pipe.unet, forget=forget, retain=retain, override=override)
        check_state(self, out, resume)  # before the regression pairs are sampled

        acc = make_accelerator(self.device, self.mixed_precision)
        torch.manual_seed(self.seed)
        teacher = copy.deepcopy(pipe.unet).requires_grad_(False).eval().to(acc.device)
        fake = copy.deepcopy(pipe.unet).train().requires_grad_(True)
        gen = copy.deepcopy(pipe.unet).train().requires_grad_(True)
        opt_fake = torch.optim.Adam(fake.parameters(), lr=self.lr_fake, betas=(0.0, 0.999), eps=1e-8, fused=fused(acc.device))
        opt_gen = torch.optim.Adam(gen.parameters(), lr=self.lr_generator, betas=(0.0, 0.999), eps=1e-8, fused=fused(acc.device))
        fake, gen, opt_fake, opt_gen = prepare(acc, fake, gen, opt_fake, opt_gen)
        ema = copy.deepcopy(acc.unwrap_model(gen)).eval().requires_grad_(False) if self.ema_halflife > 0 else None
        if oracle is not None:
            oracle = oracle.to(acc.device).eval()
        abar = pipe.scheduler.alphas_cumprod.to(acc.device, torch.float32)
        scale = len(abar) / 1000
        t_init, t_min = min(round(self.t_init * scale), len(abar) - 1), round(self.t_min * scale)
        t_max = max(min(round(self.t_max * scale), len(abar)), t_min + 1)
        self.t_init_ = t_init
        cfg = pipe.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        shape = (cfg.in_channels, size, size)
        warmup = min(self.warmup, self.iterations // 4)
        n_forget = max(1, round(self.batch_size * self.forget_share))
        n_retain = self.batch_size - n_forget
        forget_rows = torch.arange(n_retain, self.batch_size, device=acc.device)  # the batch's last n_forget rows
        is_forget = torch.arange(self.batch_size, device=acc.device) >= n_retain
        weight = torch.where(is_forget, self.lambda_forget, self.lambda_retain)
        null = cond.null(self.batch_size, acc.device)
        t0 = time.perf_counter()  # the regression pairs are part of the method's cost
        pairs = None
        if self.lambda_regression > 0:  # pair slots: the first retained ones and the first forgotten ones of each batch
            pairs = self._regression_pairs(teacher, pipe, cond, shape, retain, forget, override, oracle, acc)
            slots = list(range(min(n_retain, self.regression_retain_batch)))
            slots += list(range(n_retain, n_retain + min(n_forget, self.regression_forget_batch)))
            pool = {flag: [i for i, f in enumerate(pairs["is_forget"]) if f == flag] for flag in (False, True)}
        self.conditioning_ = cond
        self.forget_, self.retain_, self.override_conditions_ = forget, retain, override

        state_dir = Path(out) / "training_state" if out is not None else None
        step = 0
        settings = method_settings(self)
        if resume and state_dir is not None and (state_dir / "state.json").is_file():
            step, extra = load_training_state(state_dir, modules=self._modules(acc, fake, gen, ema),
                                              optimizers={"fake": opt_fake, "generator": opt_gen}, settings=settings)
            self.history_ = extra.get("history", [])
            t0 -= extra.get("seconds", 0.0)  # the interrupted run's training time counts
        else:
            self.history_ = []
            if state_dir is not None and state_dir.exists():
                shutil.rmtree(state_dir)

        def one_step(net, z, c):
            """The generator: (B, C, H, W) noise -> x_g, x_0 estimate at t_init."""
            a = abar[t_init]
            x_in = (1 - a).sqrt() * z
            t = torch.full((len(z),), t_init, device=acc.device, dtype=torch.long)
            return x_in / a.sqrt() - (1 / a - 1).sqrt() * net(x_in, t, **c).sample.float()

        def denoise(eps, x_t, a):
            return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

        # the (EMA) generator is visible during training, so a callback can preview or score it;
        # online_generator_ is the raw one the optimiser moves (the same module when EMA is off)
        self.online_generator_ = acc.unwrap_model(gen)
        self.generator_ = ema if ema is not None else self.online_generator_
        while step < self.iterations:
            rng = random.Random(self.seed * 1_000_003 + step)  # draws depend on (seed, step) only: exact resume
            c_gen = [rng.choice(retain) for _ in range(n_retain)] + [rng.choice(forget) for _ in range(n_forget)]
            if pairs is not None:  # the pair slots take a pair's condition (and, in the generator step, its noise)
                reg_idx = [rng.choice(pool[slot >= n_retain]) for slot in slots]
                for slot, i in zip(slots, reg_idx):
                    c_gen[slot] = pairs["conditions"][i]
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            cg = cond.embed(c_gen, acc.device)

            # ---- fake-score step(s): denoising score matching on stop-gradient generator samples ----
            for _ in range(self.fake_steps):
                with torch.no_grad(), acc.autocast():
                    x_g = one_step(gen, torch.randn((self.batch_size, *shape), generator=g).to(acc.device), cg)
                t = torch.randint(t_min, t_max, (self.batch_size,), generator=g).to(acc.device)
                eps = torch.randn(x_g.shape, generator=g).to(acc.device)
                a = abar[t].view(-1, 1, 1, 1)
                x_t = a.sqrt() * x_g + (1 - a).sqrt() * eps
                with acc.autocast():
                    err = (fake(x_t, t, **cg).sample.float() - eps).pow(2).flatten(1).mean(1)
                loss_fake = (weight * err).mean()
                opt_fake.zero_grad(set_to_none=True)
                acc.backward(loss_fake)
                _clip_values(fake, self.grad_clip)
                opt_fake.step()

            # ---- generator step: SiD loss, forgotten conditions scored by the teacher at the override ----
            fake.requires_grad_(False)
            for group in opt_gen.param_groups:  # a function of the step alone, so a resumed run matches
                group["lr"] = self.lr_generator * min(1.0, (step + 1) / max(warmup, 1))
            z = torch.randn((self.batch_size, *shape), generator=g).to(acc.device)
            if pairs is not None:
                z[slots] = pairs["z"][reg_idx]
            with acc.autocast():
                x_g = one_step(gen, z, cg)
            t = torch.randint(t_min, t_max, (self.batch_size,), generator=g).to(acc.device)
            eps = torch.randn(x_g.shape, generator=g).to(acc.device)
            a = abar[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x_g + (1 - a).sqrt() * eps
            c_teacher = self._teacher_conditions(c_gen, n_retain, override, retain, forget, rng, teacher, oracle, cond, x_t, t, a, acc.device)
            with acc.autocast():
                eps_teacher = guided_eps(teacher, x_t, t, cond.embed(c_teacher, acc.device), null, self.teacher_guidance).float()
                if self.forget_negative > 0:  # forgotten rows: eps_o + w (eps_o - eps_f), the concept as a negative prompt
                    f = forget_rows
                    eps_f = guided_eps(teacher, x_t[f], t[f], {k: v[f] for k, v in cg.items()},
                                       {k: v[f] for k, v in null.items()}, self.teacher_guidance).float()
                    eps_teacher = eps_teacher.index_add(0, f, self.forget_negative * (eps_teacher[f] - eps_f))
                p = denoise(eps_teacher, x_t, a)
                s = denoise(fake(x_t, t, **cg).sample.float(), x_t, a)
            omega = (p - x_g).abs().flatten(1).mean(1).clamp_min(1e-5).detach().view(-1, 1, 1, 1)
            ell = ((p - s) * ((p - x_g) - self.alpha * (p - s)) / omega).flatten(1).sum(1)
            loss_gen = (weight * ell).mean()
            if pairs is not None:  # DMD's regression loss: the teacher's noise -> image map (at the override when forgotten)
                ell_reg = 0.5 * (x_g[slots] - pairs["y"][reg_idx]).pow(2).flatten(1).sum(1)
                loss_gen = loss_gen + self.lambda_regression * ell_reg.sum() / self.batch_size
            opt_gen.zero_grad(set_to_none=True)
            acc.backward(loss_gen)
            _clip_values(gen, self.grad_clip)
            opt_gen.step()
            fake.requires_grad_(True)
            if ema is not None:
                _ema_update(ema, acc.unwrap_model(gen), _ema_decay(self.ema_halflife, self.ema_rampup, step + 1))

            if not (torch.isfinite(loss_fake) and torch.isfinite(loss_gen)):
                raise FloatingPointError(f"SFD diverged at iteration {step} (non-finite loss); "
                                         f"the last good state is in {state_dir or 'memory'}: lower the learning rates")
            step += 1
            logs = {"total": self.iterations, "loss_fake": loss_fake.item(), "loss_gen": loss_gen.item(),
                    "forget_gen": ell[is_forget].mean().item(), "seconds": time.perf_counter() - t0}
            self.history_.append({"step": step, **{k: v for k, v in logs.items() if k != "total"}})
            if callback is not None:
                callback(step, logs)
            if state_dir is not None and step % self.checkpoint_every == 0 and step < self.iterations:
                save_training_state(state_dir, step=step, modules=self._modules(acc, fake, gen, ema),
                                    optimizers={"fake": opt_fake, "generator": opt_gen},
                                    extra={"history": self.history_, "settings": settings, "seconds": time.perf_counter() - t0})
        self.online_generator_ = acc.unwrap_model(gen).eval().requires_grad_(False)
        self.generator_ = ema if ema is not None else self.online_generator_  # the EMA is built in eval mode
        self.fake_score_ = acc.unwrap_model(fake).eval().requires_grad_(False)
        self.train_seconds_ = time.perf_counter() - t0
        if state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        return self

    def _regression_pairs(self, teacher, pipe, cond, shape, retain, forget, override, oracle, acc) -> dict:
        """``regression_pairs`` (noise z, teacher sample y) pairs, a ``forget_share`` of them for forgotten conditions,
        whose y is the teacher's sample from the same z at the override (fixed, a random retained condition, or the
        oracle's pick on the teacher's forget-conditional sample). A function of the seed alone, so made again on resume.
        Returns {"conditions": N generator conditions, "is_forget": N bools, "z", "y": (N, C, H, W)}."""
        rng = random.Random(self.seed * 31 + 17)
        n_f = max(1, round(self.regression_pairs * self.forget_share))
        c_gen = [rng.choice(retain) for _ in range(self.regression_pairs - n_f)] + [rng.choice(forget) for _ in range(n_f)]
        c_teacher = list(c_gen[: len(c_gen) - n_f])
        if self.override == "fixed":
            c_teacher += [override[forget.index(c) % len(override)] for c in c_gen[len(c_teacher):]]
        elif self.override == "random":
            c_teacher += [rng.choice(retain) for _ in range(n_f)]
        else:  # the oracle's pick on the teacher's sample of the forgotten condition, forgotten classes masked
            with torch.no_grad(), acc.autocast():
                _, y_f = _teacher_pairs(teacher, pipe.scheduler.config, cond, c_gen[len(c_teacher):], shape,
                                        self.regression_steps, self.teacher_guidance, self.seed, acc.device, offset=len(c_teacher))
                logits = oracle(((y_f.clamp(-1, 1) + 1) / 2).to(acc.device)).float()
            logits[:, forget] = float("-inf")
            c_teacher += logits.argmax(1).tolist()
        with acc.autocast():
            z, y = _teacher_pairs(teacher, pipe.scheduler.config, cond, c_teacher, shape, self.regression_steps,
                                  self.teacher_guidance, self.seed, acc.device)
        return {"conditions": c_gen, "is_forget": [False] * (len(c_gen) - n_f) + [True] * n_f, "z": z, "y": y}

    @staticmethod
    def _modules(acc, fake, gen, ema) -> dict:
        modules = {"fake": acc.unwrap_model(fake), "generator": acc.unwrap_model(gen)}
        if ema is not None:
            modules["generator_ema"] = ema
        return modules

    def _teacher_conditions(self, c_gen, n_retain, override, retain, forget, rng, teacher, oracle, cond, x_t, t, a, device):
        """Conditions for the teacher: retained ones as they are, forgotten ones replaced by an override."""
        c_teacher = list(c_gen)
        forget_idx = range(n_retain, len(c_gen))
        if self.override == "fixed":
            for i in forget_idx:
                c_teacher[i] = override[forget.index(c_gen[i]) % len(override)]
        elif self.override == "random":
            for i in forget_idx:
                c_teacher[i] = rng.choice(retain)
        else:  # the oracle's pick on the teacher's denoised forget-conditional, forgotten classes masked
            idx = torch.tensor(list(forget_idx), device=device)
            with torch.no_grad():
                eps = teacher(x_t[idx], t[idx], **cond.embed([c_gen[i] for i in forget_idx], device)).sample.float()
                x0 = ((x_t[idx] - (1 - a[idx]).sqrt() * eps) / a[idx].sqrt()).clamp(-1, 1)
                logits = oracle(((x0 + 1) / 2).to(device)).float()
                logits[:, forget] = float("-inf")
            for i, pick in zip(forget_idx, logits.argmax(1).tolist()):
                c_teacher[i] = pick
        return c_teacher

    # -------------------------------------------------------------------------------------------------
    def to_pipeline(self, pipe, device: str | torch.device | None = "pipe", *, online: bool = False):
        """The one-step generator as a :class:`OneStepPipeline` (with ``pipe``'s VAE / text encoder, if any),
        its UNet on ``device`` (``"pipe"``: beside ``pipe``'s UNet; ``None``: where it is; mid-training, the live
        EMA generator itself).
        ``online=True`` takes the raw generator the optimiser moves instead of its EMA."""
        from diffusers import DDPMScheduler

        from guardgen.models.pipelines import OneStepPipeline

        if not hasattr(self, "generator_"):
            raise GuardgenError("SFD is not fitted yet; call fit first")
        unet = self.online_generator_ if online else self.generator_
        if isinstance(device, str) and device == "pipe":
            device = pipe.unet.device
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        num_classes = getattr(self.conditioning_, "num_classes", 0)
        one = OneStepPipeline(unet=unet if device is None else unet.to(device), scheduler=scheduler, vae=getattr(pipe, "vae", None),
                              text_encoder=getattr(pipe, "text_encoder", None), tokenizer=getattr(pipe, "tokenizer", None),
                              t_init=self.t_init_, num_classes=num_classes,
                              text_encoder_name=getattr(pipe.config, "text_encoder_name", "") or "")
        return one

    def get_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.endswith("_")}


@torch.no_grad()
def _teacher_pairs(teacher, scheduler_config, cond, conditions: list, shape: tuple, steps: int, guidance: float, seed: int,
                   device, batch_size: int = 128, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, y), both (N, C, H, W): z ~ N(0, I) and y the teacher's deterministic DDIM (eta 0) sample from z_T = z
    under ``conditions`` (N,), in the UNet's space (latents for a latent diffusion model). z is the rows
    ``offset, offset + N`` of one seeded draw, so a subset of the conditions can be sampled with the same noise."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    z = torch.randn((offset + len(conditions), *shape), generator=torch.Generator().manual_seed(seed * 7_919 + 13))[offset:].to(device)
    ys = []
    for i in range(0, len(conditions), batch_size):
        x = z[i : i + batch_size] * sched.init_noise_sigma
        c, null = cond.embed(conditions[i : i + batch_size], device), cond.null(len(x), device)
        ys.append(ddim_sample(teacher, sched, x, c, null, guidance).float())
    return z, torch.cat(ys)


def _ema_decay(halflife: float, rampup: float, done: int) -> float:
    """The EMA decay after ``done`` iterations: a half-life of ``halflife`` iterations, at most ``rampup * done``."""
    return 0.5 ** (1 / max(min(halflife, rampup * done), 1e-8))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, over all parameters at once (one fused kernel per dtype group)."""
    targets = list(ema.parameters())
    torch._foreach_lerp_(targets, [p.detach().to(e.dtype) for e, p in zip(targets, model.parameters())], 1 - decay)


def _clip_values(module: torch.nn.Module, value: float) -> None:
    """Per-value gradient clipping (the paper's setting), skipping parameters without gradients."""
    torch.nn.utils.clip_grad_value_(module.parameters(), value)
