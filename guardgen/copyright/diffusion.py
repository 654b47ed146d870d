"""CP-k for diffusion models, with a per-step Gaussian log-ratio along the sampling path as likelihood proxy.

Exact likelihoods log p(y|x) of a diffusion model need the probability-flow ODE and a trace estimator.
Here, as a cheap **proxy**, we sample with a stochastic DDIM sampler (eta > 0), where every step is a
Gaussian x_{t-1} ~ N(μ_m(x_t, t), σ_t² I) whose mean μ_m depends on the model m. Along one path drawn
from the full model p, the log-ratio of the path densities under p and a shard model q_i is

    log2 p(path) - log2 q_i(path) = Σ_t ( ‖x_{t-1} - μ_{q_i}‖² - ‖x_{t-1} - μ_p‖² ) / (2 σ_t² ln 2)   [bits]

(the prior N(0, I) on x_T cancels; steps with σ_t = 0, such as DDIM's last step, add nothing). It is the
exact log-ratio of the two *discretised sampling paths*, not of the final images: treat k and the bounds
computed from it as a proxy for the image-level NAF guarantee, and say so where they are reported.

CP-k (Vyas et al., 2023, Algorithm 3): draw y ~ p(·|x), accept it if the log-ratio to every shard model
is <= k, else draw again; ν_k is the acceptance rate and k + log2(1/ν_k) the max-KL guarantee (proxy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from guardgen.copyright.bounds import check_k, k_effective
from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, PositiveInt, Seed, UnitFloat, check_settings

__all__ = ["CPk", "CPkSamples", "audit_naf", "calibrate_k", "image_shape", "sample_with_log_ratios"]


def _decode(pipe, x: torch.Tensor) -> torch.Tensor:
    """Final latents -> images (B, C, H, W) in [0, 1] (through the VAE for latent pipelines)."""
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        x = vae.decode(x.to(vae.dtype) / vae.config.scaling_factor).sample
    return ((x.float() + 1) / 2).clamp(0, 1).cpu()


def image_shape(pipe) -> tuple[int, int, int]:
    """(C, H, W) of the images ``pipe`` samples (after the VAE for latent pipelines), without sampling."""
    channels, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return channels, size, size
    size *= 2 ** (len(vae.config.block_out_channels) - 1)
    return vae.config.out_channels, size, size


def _check_compatible(models) -> tuple[int, int]:
    shapes = {(m.unet.config.in_channels, m.unet.config.sample_size) for m in models}
    if len(shapes) != 1:
        raise GuardgenError(f"the full and shard models sample in different spaces {sorted(shapes)}; "
                            "CP-k needs models of one architecture family (same channels and resolution)")
    return shapes.pop()


@torch.no_grad()
def sample_with_log_ratios(p, qs, conditions, *, num_inference_steps: int = 25, eta: float = 1.0,
                           guidance_scale: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample from pipeline ``p`` for N conditions (class ids or prompts) and score the path under ``qs``.

    Returns images (N, C, H, W) in [0, 1] and log2 p(path) - log2 q_i(path), (N, len(qs)), in bits (a proxy
    for the image log-likelihood ratio; see the module docstring). Seeded: the same ``seed`` gives the same paths.
    """
    from diffusers import DDIMScheduler

    from guardgen.models.conditioning import conditioning_for, guided_eps

    if eta <= 0:
        raise GuardgenError(f"eta={eta}: the Gaussian path log-ratio needs a stochastic sampler (eta > 0)")
    models = [p, *qs]
    channels, size = _check_compatible(models)
    conditions = list(conditions.tolist() if isinstance(conditions, torch.Tensor) else conditions)
    n, device = len(conditions), p.unet.device
    embeds = []
    for m in models:
        cond = conditioning_for(m)
        embeds.append((cond.embed(conditions, device), cond.null(n, device) if guidance_scale != 1.0 else None))
    scheduler = DDIMScheduler.from_config(p.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g).to(device, p.unet.dtype)
    log_ratio = torch.zeros(n, len(qs), dtype=torch.float64)
    for t in scheduler.timesteps:
        means = []
        for m, (cond, null) in zip(models, embeds):
            eps = guided_eps(m.unet, x, t, cond, null, guidance_scale)
            means.append(scheduler.step(eps, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample)
        # σ_t: the scheduler's own noise scale (the step with unit noise minus the step with none)
        sigma = (scheduler.step(eps, t, x, eta=eta, variance_noise=torch.ones_like(x)).prev_sample - means[-1]).mean().item()
        z = torch.randn(x.shape, generator=g).to(device, x.dtype)
        x_next = means[0] + sigma * z
        if sigma > 1e-8:
            d_p = ((x_next - means[0]).double() ** 2).flatten(1).sum(1)
            for i, mu_q in enumerate(means[1:]):
                d_q = ((x_next - mu_q).double() ** 2).flatten(1).sum(1)
                log_ratio[:, i] += ((d_q - d_p) / (2 * sigma**2 * math.log(2))).cpu()
        x = x_next
    return _decode(p, x), log_ratio


def calibrate_k(log_ratios: torch.Tensor, quantile: float = 0.95) -> float:
    """k as the ``quantile`` of max_i log2 p/q_i over (N, n_q) log-ratios of clean prompts, floored at 0."""
    if not 0 < quantile < 1:
        raise GuardgenError(f"quantile={quantile}: out of range; expected a number in (0, 1)")
    return max(0.0, float(torch.quantile(log_ratios.max(1).values.double(), quantile)))


@dataclass
class CPkSamples:
    """CP-k output: accepted ``images`` (N, C, H, W), their ``log_ratios`` (N, n_q); ``first_images`` (N, ...)
    are the first draw for every slot, i.e. plain samples of the full model p on the same seeds; every
    draw's condition and log-ratios are kept (``draw_conditions``, ``draw_log_ratios`` (D, n_q))."""

    images: torch.Tensor
    log_ratios: torch.Tensor
    first_images: torch.Tensor
    conditions: list
    draw_conditions: list
    draw_log_ratios: torch.Tensor
    k: float
    acceptance_rate: float
    k_effective: float
    per_condition: dict = field(default_factory=dict)
    likelihood: str = "per-step Gaussian log-ratio along the stochastic DDIM path (proxy)"


@dataclass(kw_only=True)
class CPk:
    """CP-k by rejection sampling from the full model with log-ratio threshold ``k`` (bits) against every shard.

    ``max_draws_per_sample`` bounds the draws per requested sample (acceptance below 1/that is refused).
    """

    k: float
    num_inference_steps: PositiveInt = 25
    eta: UnitFloat = 1.0
    guidance_scale: NonNegFloat = 1.0
    batch_size: PositiveInt = 128
    max_draws_per_sample: PositiveInt = 50
    seed: Seed = 0

    def sample(self, p, qs, conditions, callback=None) -> CPkSamples:
        """One accepted sample per entry of ``conditions`` (N class ids or prompts)."""
        check_settings(self)
        k = check_k(self.k)
        if not qs:
            raise GuardgenError("CP-k needs at least one shard model")
        conditions = list(conditions.tolist() if isinstance(conditions, torch.Tensor) else conditions)
        n = len(conditions)
        images, ratios, first = [None] * n, [None] * n, [None] * n
        draw_conds, draw_ratios = [], []
        pending, draws, round_ = list(range(n)), 0, 0
        while pending:
            if draws >= self.max_draws_per_sample * n:
                rate = (n - len(pending)) / max(draws, 1)
                raise GuardgenError(f"k={k}: acceptance {rate:.3g} too low ({n - len(pending)} of {n} samples after "
                                    f"{draws} draws); raise k or --max-draws")
            batch = pending[: self.batch_size]
            conds = [conditions[i] for i in batch]
            x, lr = sample_with_log_ratios(p, qs, conds, num_inference_steps=self.num_inference_steps, eta=self.eta,
                                           guidance_scale=self.guidance_scale, seed=self.seed * 1_000_003 + round_)
            round_ += 1
            draws += len(batch)
            draw_conds += conds
            draw_ratios.append(lr)
            ok = (lr <= k).all(1)
            for j, i in enumerate(batch):
                if first[i] is None:
                    first[i] = x[j]
                if ok[j]:
                    images[i], ratios[i] = x[j], lr[j]
            pending = [i for i in pending if images[i] is None]
            if callback is not None:
                callback(n - len(pending), {"total": n, "draws": draws, "acceptance": (n - len(pending)) / draws})
        all_ratios = torch.cat(draw_ratios)
        acceptance = n / draws
        per = {}
        accept = (all_ratios <= k).all(1)
        for c in dict.fromkeys(draw_conds):
            mask = torch.tensor([dc == c for dc in draw_conds])
            rate = float(accept[mask].float().mean())
            per[str(c)] = {"draws": int(mask.sum()), "acceptance": rate,
                           "k_effective": k_effective(k, rate) if rate > 0 else float("inf")}
        return CPkSamples(images=torch.stack(images), log_ratios=torch.stack(ratios), first_images=torch.stack(first),
                          conditions=conditions, draw_conditions=draw_conds, draw_log_ratios=all_ratios, k=k,
                          acceptance_rate=acceptance, k_effective=k_effective(k, acceptance), per_condition=per)


def audit_naf(model, shards, *, conditions, samples: int = 16, seed: int = 0, quantile: float = 0.95,
              num_inference_steps: int = 25) -> dict:
    """NAF figures of ``model`` against shard pipelines, for an audit report (``guardgen.audit``).

    Per condition x, ``samples`` paths from the model; ``k_values``: per-prompt k_x estimated as the largest
    max_i log2 p/q_i seen (a Monte-Carlo lower estimate of Δ_max, proxy likelihood); ``k_threshold``: the
    ``quantile`` of all log-ratios (the CP-k threshold one would use); ``acceptance``: the share of paths
    CP-k would accept at that threshold; ``effective_k``: k + log2(1/acceptance).
    """
    conditions = list(conditions)
    conds = [c for c in conditions for _ in range(samples)]
    _, lr = sample_with_log_ratios(model, list(shards), conds, num_inference_steps=num_inference_steps, seed=seed)
    worst = lr.max(1).values.view(len(conditions), samples)
    k = calibrate_k(lr, quantile)
    acceptance = float((worst <= k).float().mean())
    return {"k_values": worst.max(1).values.tolist(), "k_threshold": k, "acceptance": acceptance,
            "effective_k": k_effective(k, acceptance), "samples_per_condition": samples,
            "likelihood": "per-step Gaussian log-ratio along the stochastic DDIM path (proxy)"}
