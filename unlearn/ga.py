"""Gradient ascent with a fine-tuning anchor (the "GA" / "FT" baselines of machine unlearning).

Ascend the denoising loss on forget data while descending it on retain data:
    L = -lambda_forget * E||eps - eps_theta(x_t, c_f)||^2 + lambda_retain * E||eps - eps_theta(x_t, c_r)||^2.
``lambda_forget = 0`` is plain fine-tuning on the retained data (FT). The data are the pretrained model's
own samples for each condition (no training data needed), or images passed in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError
from guardgen.models.conditioning import conditioning_for
from guardgen.models.diffusion import sample_images
from guardgen.registry import NonNegFloat, PositiveFloat, PositiveInt, Seed, check_settings
from guardgen.utils import Callback, fused, make_accelerator, prepare
from unlearn import UNLEARN
from unlearn._resume import LoopState, check_state, set_task

__all__ = ["GA"]


@UNLEARN.register("ga")
@dataclass(kw_only=True)
class GA:
    summary: ClassVar[str] = ("Gradient ascent on the concept's denoising loss with a fine-tuning anchor on retained "
                              "ones (lambda_forget=0: FT)")  # one line for `guardgen unlearn methods`
    target: ClassVar[str] = "diffusion"  # the kind of model it unlearns (`guardgen unlearn methods`)
    lambda_forget: NonNegFloat = 1.0
    lambda_retain: NonNegFloat = 1.0
    lr: PositiveFloat = 5e-5
    iterations: PositiveInt = 200
    batch_size: PositiveInt = 32
    samples_per_condition: PositiveInt = 64
    sample_steps: PositiveInt = 25
    checkpoint_every: PositiveInt = 50  # iterations between training states in out/training_state (with out=)
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    history_: list = field(default_factory=list, init=False, repr=False)

    def fit(self, pipe, *, forget: Sequence, retain: Sequence, override: Sequence | None = None, oracle=None,
            forget_images: torch.Tensor | None = None, retain_images: tuple[torch.Tensor, list] | None = None,
            callback: Callback | None = None, out=None, resume: bool = False) -> "GA":
        check_settings(self)
        cond = conditioning_for(pipe)
        forget, retain = [cond.parse(c) for c in forget], [cond.parse(c) for c in retain]
        if not retain and self.lambda_retain > 0:
            raise GuardgenError("GA with a retain anchor needs retained conditions")
        set_task(self, pipe.unet, forget=forget, retain=retain, given_images=forget_images is not None)
        check_state(self, out, resume)  # before sampling the data
        # data: (x0 in [-1, 1], condition) pairs for the forget and retain sets
        f_conds = [c for c in forget for _ in range(self.samples_per_condition)]
        r_conds = [c for c in retain for _ in range(self.samples_per_condition)]
        f_x = forget_images if forget_images is not None else sample_images(pipe, f_conds, num_inference_steps=self.sample_steps, seed=self.seed)
        r_x = sample_images(pipe, r_conds, num_inference_steps=self.sample_steps, seed=self.seed + 1) if r_conds else None
        f_x, r_x = f_x * 2 - 1, (r_x * 2 - 1 if r_x is not None else None)
        if getattr(pipe, "vae", None) is not None:
            raise GuardgenError("GA on latent diffusion needs encoded data; pass a pixel-space model or use sfd/esd")

        acc = make_accelerator(self.device, self.mixed_precision)
        torch.manual_seed(self.seed)
        unet = copy.deepcopy(pipe.unet).train()
        opt = torch.optim.Adam(unet.parameters(), lr=self.lr, fused=fused(acc.device))
        unet, opt = prepare(acc, unet, opt)
        abar = pipe.scheduler.alphas_cumprod.to(acc.device, torch.float32)
        T = len(abar)

        def denoising_loss(x0, conds, g):
            t = torch.randint(0, T, (len(x0),), generator=g).to(acc.device)
            eps = torch.randn(x0.shape, generator=g).to(acc.device)
            a = abar[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x0.to(acc.device) + (1 - a).sqrt() * eps
            with acc.autocast():
                return F.mse_loss(unet(x_t, t, **cond.embed(conds, acc.device)).sample.float(), eps)

        state, modules, optimizers = LoopState(self, out, resume), {"unet": acc.unwrap_model(unet)}, {"unet": opt}
        self.history_ = []
        for step in range(state.start(modules, optimizers), self.iterations + 1):
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            fi = torch.randint(0, len(f_x), (self.batch_size,), generator=g)
            loss_f = denoising_loss(f_x[fi], [f_conds[i] for i in fi.tolist()], g)
            loss = -self.lambda_forget * loss_f
            loss_r = torch.zeros(())
            if r_x is not None and self.lambda_retain > 0:
                ri = torch.randint(0, len(r_x), (self.batch_size,), generator=g)
                loss_r = denoising_loss(r_x[ri], [r_conds[i] for i in ri.tolist()], g)
                loss = loss + self.lambda_retain * loss_r
            if not torch.isfinite(loss):
                raise FloatingPointError(f"GA diverged at iteration {step}; lower lr or lambda_forget")
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            acc.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            logs = {"loss_forget": loss_f.item(), "loss_retain": loss_r.item()}
            self.history_.append({"step": step, **logs})
            if callback is not None:
                callback(step, {"total": self.iterations, **logs})
            state.save(step, modules, optimizers)
        state.finish()
        self.unet_ = acc.unwrap_model(unet).eval().requires_grad_(False)
        self.train_seconds_ = state.seconds()
        return self

    def to_pipeline(self, pipe):
        from guardgen.models.diffusion import with_unet

        return with_unet(pipe, self.unet_)
