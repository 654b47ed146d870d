"""Erased Stable Diffusion (ESD). Gandikota, Materzynska, Fiotto-Kaufman and Bau, "Erasing Concepts from
Diffusion Models", ICCV 2023.

Fine-tune the UNet so that its prediction for the concept c regresses onto the frozen model with
negative guidance:  eps_theta(x_t, c) -> eps*(x_t) - eta [eps*(x_t, c) - eps*(x_t)],
where x_t comes from partially sampling the fine-tuned model with c (DDIM), as in the paper.
``train`` picks the parameters: "all", ESD-x ("cross_attn", text models) or ESD-u ("non_cross_attn").
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError
from guardgen.models.conditioning import conditioning_for, ddim_sample
from guardgen.registry import NonNegFloat, PositiveFloat, PositiveInt, Seed, check_settings
from guardgen.utils import Callback, fused, make_accelerator, prepare
from unlearn import UNLEARN
from unlearn._resume import LoopState, check_state, set_task

__all__ = ["ESD"]


@UNLEARN.register("esd")
@dataclass(kw_only=True)
class ESD:
    summary: ClassVar[str] = ("Erased Stable Diffusion (Gandikota et al., ICCV 2023): fine-tune the UNet onto "
                              "negative guidance away from the concept")  # one line for `guardgen unlearn methods`
    target: ClassVar[str] = "diffusion"  # the kind of model it unlearns (`guardgen unlearn methods`)
    eta: NonNegFloat = 1.0  # negative guidance strength
    lr: PositiveFloat = 1e-4
    iterations: PositiveInt = 200
    batch_size: PositiveInt = 8
    ddim_steps: PositiveInt = 10  # the partial sampler that produces x_t
    train: Literal["all", "cross_attn", "non_cross_attn"] = "all"  # cross_attn: ESD-x; non_cross_attn: ESD-u
    checkpoint_every: PositiveInt = 50  # iterations between training states in out/training_state (with out=)
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    history_: list = field(default_factory=list, init=False, repr=False)

    def _params(self, unet):
        if self.train == "all":
            return [p for p in unet.parameters()]
        is_x = lambda n: "attn2" in n  # noqa: E731 - cross-attention blocks in diffusers UNets
        named = [(n, p) for n, p in unet.named_parameters()]
        chosen = [p for n, p in named if is_x(n) == (self.train == "cross_attn")]
        if not chosen:
            raise GuardgenError(f"ESD train={self.train!r}: this UNet has no such parameters; use train='all'")
        return chosen

    def fit(self, pipe, *, forget: Sequence, retain: Sequence = (), override: Sequence | None = None, oracle=None,
            callback: Callback | None = None, out=None, resume: bool = False) -> "ESD":
        """Fine-tune a copy of ``pipe.unet`` to erase the ``forget`` conditions (``retain``/``override`` unused).

        With ``out``, the training state is kept in ``out/training_state`` and ``resume=True`` continues it exactly."""
        check_settings(self)
        from diffusers import DDIMScheduler

        cond = conditioning_for(pipe)
        forget = [cond.parse(c) for c in forget]
        set_task(self, pipe.unet, forget=forget)
        check_state(self, out, resume)  # before the UNet is copied
        acc = make_accelerator(self.device, self.mixed_precision)
        rng = random.Random(self.seed)
        torch.manual_seed(self.seed)
        frozen = copy.deepcopy(pipe.unet).requires_grad_(False).eval().to(acc.device)
        unet = copy.deepcopy(pipe.unet).train()
        params = self._params(unet)
        opt = torch.optim.Adam(params, lr=self.lr, fused=fused(acc.device))
        unet, opt = prepare(acc, unet, opt)
        sampler = DDIMScheduler.from_config(pipe.scheduler.config)
        sampler.set_timesteps(self.ddim_steps, device=acc.device)
        cfg = pipe.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        state, modules, optimizers = LoopState(self, out, resume), {"unet": acc.unwrap_model(unet)}, {"unet": opt}
        self.history_ = []
        for step in range(state.start(modules, optimizers, rng), self.iterations + 1):
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            c = [rng.choice(forget) for _ in range(self.batch_size)]
            c_emb, null = cond.embed(c, acc.device), cond.null(self.batch_size, acc.device)
            stop = rng.randrange(self.ddim_steps)
            x = torch.randn((self.batch_size, cfg.in_channels, size, size), generator=g).to(acc.device)
            with torch.no_grad():  # partial DDIM sampling with the model being erased
                x = ddim_sample(unet, sampler, x, c_emb, timesteps=sampler.timesteps[:stop])
            t = sampler.timesteps[stop].expand(self.batch_size)
            with torch.no_grad():
                e0, ec = frozen(x, t, **null).sample, frozen(x, t, **c_emb).sample
                target = e0 - self.eta * (ec - e0)
            with acc.autocast():
                loss = F.mse_loss(unet(x, t, **c_emb).sample.float(), target.float())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ESD diverged at iteration {step}; lower lr")
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            self.history_.append({"step": step, "loss": loss.item()})
            if callback is not None:
                callback(step, {"total": self.iterations, "loss": loss.item()})
            state.save(step, modules, optimizers, rng)
        state.finish()
        self.unet_ = acc.unwrap_model(unet).eval().requires_grad_(False)
        self.train_seconds_ = state.seconds()
        return self

    def to_pipeline(self, pipe):
        from guardgen.models.diffusion import with_unet

        return with_unet(pipe, self.unet_)
