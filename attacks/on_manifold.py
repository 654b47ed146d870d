"""On-manifold adversarial examples against AIGC detectors: optimise a diffusion model's initial noise z_T.

Zhou et al., "Breaking Latent Prior Bias in Detectors for Generalizable AIGC Image Detection" (OMAT,
NeurIPS 2025). The generator and its conditioning (class id or prompt embedding) stay fixed; only z_T
moves, so every image is still one the generator can produce. The loss is ``softplus(detector logit)``
(binary cross-entropy towards "real"), backpropagated through a short deterministic DDIM sampler
(eta = 0, the pipeline's own noise schedule) with gradient checkpointing on every UNet (and VAE) call.
After each Adam step z_T is put back on the Gaussian shell, ``||z|| = sqrt(d)``. An image is done as soon
as the detector scores it below ``threshold`` (p_fake < 0.5 by default); the image at that step is kept.
The loss form, optimiser and renormalisation are our design (the paper's attack code could not be read).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from attacks import ATTACKS
from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, NonNegInt, OpenUnitFloat, PositiveFloat, PositiveInt, Seed, check_settings
from guardgen.utils import Callback

__all__ = ["OnManifoldAttack", "OnManifoldResult", "latent_sampler"]


@dataclass
class OnManifoldResult:
    """Per image: ``images`` (N, C, H, W) in [0, 1] (adversarial, at success or after the last step),
    ``clean`` the images from the unmodified z_T, ``success`` (N,) bool, ``steps`` (N,) attack steps used,
    ``drift`` (N,) ||z - z0|| / sqrt(d), ``norm_ratio`` (N,) ||z|| / sqrt(d), ``score_before``/``score_after``
    (N,) p_fake, ``latents`` the final z_T, and ``conditions``."""

    images: torch.Tensor
    clean: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    drift: torch.Tensor
    norm_ratio: torch.Tensor
    score_before: torch.Tensor
    score_after: torch.Tensor
    latents: torch.Tensor
    conditions: list
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())

    def summary(self) -> dict:
        ok = self.success
        return {"n": len(ok), "success_rate": self.success_rate,
                "mean_steps_success": float(self.steps[ok].float().mean()) if ok.any() else float("nan"),
                "mean_drift": float(self.drift.mean()), "max_norm_error": float((self.norm_ratio - 1).abs().max()),
                "mean_score_before": float(self.score_before.mean()), "mean_score_after": float(self.score_after.mean()),
                "seconds": round(self.seconds, 2)}


def _needs_diffusion(pipe) -> None:
    if isinstance(pipe, (tuple, list)) or not hasattr(pipe, "unet") or not hasattr(pipe, "scheduler"):
        what = type(pipe[0] if isinstance(pipe, (tuple, list)) else pipe).__name__
        raise GuardgenError(f"{what}: no diffusion latent z_T to optimise; the on-manifold attack needs a diffusers "
                            "pipeline with a UNet and a noise scheduler (e.g. zoo:mnist-ddpm, zoo:mnist-t2i, a Stable Diffusion folder)")
    if type(pipe).__name__ == "OneStepPipeline":
        raise GuardgenError("OneStepPipeline: a one-step distilled generator has no sampler to backpropagate through; "
                            "attack its teacher diffusion pipeline instead")


def latent_sampler(pipe, num_inference_steps: int, *, guidance_scale: float = 1.0, checkpointing: bool = True):
    """``(latent_shape, decode)`` for a diffusers pipeline: ``decode(z, conds) -> images in [0, 1]``, differentiable.

    Deterministic DDIM (eta = 0) built from the pipeline's scheduler config; latent diffusion (a VAE) is decoded.
    ``latent_shape`` is (C, H, W) of z_T.
    """
    from diffusers import DDIMScheduler

    from guardgen.models.conditioning import conditioning_for, ddim_sample

    _needs_diffusion(pipe)
    unet, vae = pipe.unet, getattr(pipe, "vae", None)
    cond = conditioning_for(pipe)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(num_inference_steps)
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    shape = (cfg.in_channels, size, size)
    device = unet.device

    def run(fn, *args):
        return checkpoint(fn, *args, use_reentrant=False) if checkpointing and torch.is_grad_enabled() else fn(*args)

    def decode(z: torch.Tensor, conds: Sequence) -> torch.Tensor:
        c = cond.embed(list(conds), device)
        null = cond.null(len(z), device) if guidance_scale != 1.0 else None
        x = ddim_sample(unet, sched, z.to(device) * sched.init_noise_sigma, c, null, guidance_scale, run=run)
        if vae is not None:
            x = run(lambda zz: vae.decode((zz / vae.config.scaling_factor).to(vae.dtype)).sample, x)
        return ((x.float() + 1) / 2).clamp(0, 1)

    return shape, decode


@ATTACKS.register("on_manifold")
@dataclass(kw_only=True)
class OnManifoldAttack:
    """``attack(pipe, detector, conditions) -> OnManifoldResult``; ``detector`` maps [0, 1] images to (B,) fake logits."""

    steps: NonNegInt = 30  # Adam steps on z_T (the attack budget)
    lr: PositiveFloat = 0.05
    num_inference_steps: PositiveInt = 10  # DDIM steps of the differentiable sampler
    guidance_scale: NonNegFloat = 1.0
    threshold: OpenUnitFloat = 0.5  # success: p_fake < threshold
    renormalize: bool = True  # keep ||z_T|| = sqrt(d) after every step
    checkpointing: bool = True
    batch_size: PositiveInt = 32
    seed: Seed = 0

    def _validate_params(self) -> None:
        check_settings(self, name="on_manifold")

    def attack(self, pipe, detector: nn.Module, conditions: Sequence, *, latents: torch.Tensor | None = None,
               callback: Callback | None = None) -> OnManifoldResult:
        """Attack one image per condition (class id or prompt); ``latents`` (N, C, H, W) fixes the starting z_T."""
        self._validate_params()
        conditions = list(conditions.tolist() if isinstance(conditions, torch.Tensor) else conditions)
        if not conditions:
            raise GuardgenError("on_manifold: no conditions given (one image is attacked per condition)")
        shape, decode = latent_sampler(pipe, self.num_inference_steps, guidance_scale=self.guidance_scale,
                                       checkpointing=self.checkpointing)
        from guardgen.models.conditioning import conditioning_for

        cond = conditioning_for(pipe)
        conditions = [cond.parse(c) for c in conditions]  # unknown class ids / empty prompts -> one-line error
        if latents is None:
            latents = torch.randn((len(conditions), *shape), generator=torch.Generator().manual_seed(self.seed))
        if tuple(latents.shape) != (len(conditions), *shape):
            raise GuardgenError(f"latents {tuple(latents.shape)} do not match {len(conditions)} x {shape}")
        for p in list(pipe.unet.parameters()) + list(detector.parameters()):
            p.requires_grad_(False)
        detector.eval()
        t0 = time.perf_counter()
        parts = []
        n_batches = math.ceil(len(conditions) / self.batch_size)
        for b in range(n_batches):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            parts.append(self._attack_batch(decode, detector, latents[sl].float(), conditions[sl], b, n_batches, callback))
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return OnManifoldResult(conditions=conditions, seconds=time.perf_counter() - t0, **out)

    def _attack_batch(self, decode, detector, z0, conds, b, n_batches, callback) -> dict:
        n, d = len(z0), z0[0].numel()
        view = (-1, *[1] * (z0.ndim - 1))
        device = next(detector.parameters()).device
        z0 = z0 * (math.sqrt(d) / z0.flatten(1).norm(dim=1)).view(view)  # start on the shell
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        success = torch.zeros(n, dtype=torch.bool)
        steps_used = torch.zeros(n, dtype=torch.long)
        final_z, score, score0 = z0.clone(), torch.zeros(n), torch.zeros(n)
        best = clean = None
        for step in range(self.steps + 1):  # step k scores the image after k updates, then takes update k + 1
            active = torch.nonzero(~success).flatten()
            if len(active) == 0:
                break
            with torch.set_grad_enabled(step < self.steps):
                images = decode(z[active], [conds[i] for i in active.tolist()])
                logits = detector(images.to(device)).float().reshape(-1)
            p = torch.sigmoid(logits.detach()).cpu()
            if best is None:
                best, clean, score0 = images.detach().cpu().clone(), images.detach().cpu().clone(), p.clone()
            best[active], score[active] = images.detach().cpu(), p
            final_z[active], steps_used[active] = z.detach()[active], step
            done = p < self.threshold
            success[active[done]] = True
            if step == self.steps or bool(done.all()):
                continue
            loss = F.softplus(logits[~done.to(logits.device)]).mean()  # -log(1 - p_fake): BCE towards "real"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                z[success] = final_z[success]  # images already done stay where they succeeded
                if self.renormalize:
                    z.mul_((math.sqrt(d) / z.flatten(1).norm(dim=1)).view(view))
            if callback is not None:
                callback(b * self.steps + step + 1, {"total": n_batches * self.steps, "loss": loss.item(),
                                                     "success_rate": float(success.float().mean()), "batch": b + 1})
        if callback is not None:  # the final state, after the last scoring
            callback((b + 1) * self.steps, {"total": n_batches * self.steps, "success_rate": float(success.float().mean()),
                                            "batch": b + 1})
        drift = (final_z - z0).flatten(1).norm(dim=1) / math.sqrt(d)
        norm_ratio = final_z.flatten(1).norm(dim=1) / math.sqrt(d)
        return {"images": best, "clean": clean, "success": success, "steps": steps_used, "drift": drift,
                "norm_ratio": norm_ratio, "score_before": score0, "score_after": score, "latents": final_z}
