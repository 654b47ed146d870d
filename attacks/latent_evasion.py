"""Latent-space evasion of forensic detectors, conditioned on attributes (Shamshad et al., CVPR 2023).

Search a generator's latent space (``z``, or W+ and per-layer noise where it has them; ``attacks.latent_spaces``)
for images every attacked detector scores as real, while an attribute classifier still sees the asked
attribute (a class such as "digit 4") or the image stays near a reference image in a feature space:

    L = detector_weight * L_det + attribute_weight * L_attr + reg_weight * ||c - c0||^2

with L_det = BCE(D(G(c)), real) = softplus(logit), L_attr = CE(f(G(c)), target) or 1 - cos(phi(G(c)), phi(ref)).
Adam on the codes c; a layer mask freezes W+ rows (and their noise maps). Transfer to unseen detectors:

- ``single``: the first detector only; ``ensemble``: the mean of the detectors' losses;
- ``meta`` (MAML-style, as the paper's code): each step shuffles the detectors, the last is the meta-test
  model; for every meta-train model a virtual step c' = c - inner_lr * g/rms(g) on its loss, then the
  meta-test loss at c'; L_det is the mean of all meta-train and meta-test losses (second order unless
  ``first_order``). The rms-normalised inner step is our choice (detector gradients differ in scale). Its
  size, 0.02 per coordinate, stays under one Adam step (``lr`` 0.05). At 0.1 the meta-test loss was read
  too far from c, and meta fell behind the ensemble: black-box 0.489 vs 0.522
  (bench/results/latent_evasion-cpu-meta-lr10.json), against 0.544 vs 0.522 at 0.02 (latent_evasion-cpu.json).

Starts are the best of ``candidates`` random codes for the attribute (the paper keeps the best of 10).
Each image keeps its last state that fools every attacked detector with the attribute held, else its final
state. An image that ends a run without such a state starts again from fresh codes (best of ``candidates``
again), up to ``restarts`` times, each run a full ``steps`` budget; a successful restart replaces the record.
Restarts are the random restarts of robustness evaluations (PGD, AutoAttack): some starts sit in basins where
the detector holds. On the zoo's hardest pair (a ConvNeXt detector, mnist-gan-resnet, 50 images) 60 steps from
one start reached 0.64; 300 steps 0.84; the union of four 30-step starts 0.96.
Detectors of another input size than the generator's images are resized (bilinear) and noted
(``attacks.latent_guidance``: detector views and the attribute term).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from attacks import ATTACKS
from attacks.latent_guidance import AttributeGuide, detector_scores, detector_views, parse_attribute  # noqa: F401
from attacks.latent_spaces import LatentSpace, latent_space, parse_layers
from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, NonNegInt, OpenUnitFloat, PositiveFloat, PositiveInt, Seed, check_settings
from guardgen.utils import Callback

__all__ = ["LatentEvasion", "LatentEvasionResult", "detector_views", "detector_scores", "parse_attribute"]

MODES = ("single", "ensemble", "meta")


@dataclass
class LatentEvasionResult:
    """N images: ``images``/``clean`` (N, C, H, W) in [0, 1]; ``score_before``/``score_after`` (N, K) p_fake and
    ``success`` (N, K) under the K attacked detectors; ``targets`` (N,) class ids (or None); ``attribute_before``/
    ``attribute_after`` (N,) bool (classifier agrees); ``feature_distance`` (N,) to the reference (or None);
    ``drift`` (N,) RMS code change; ``kept_step`` (N,) step of the kept state and ``steps_used`` (N,) the steps
    spent, both counted over all runs (restarts included); ``codes``/``codes0`` the latents (of the kept run)."""

    images: torch.Tensor
    clean: torch.Tensor
    score_before: torch.Tensor
    score_after: torch.Tensor
    success: torch.Tensor
    targets: torch.Tensor | None
    attribute_before: torch.Tensor | None
    attribute_after: torch.Tensor | None
    feature_distance: torch.Tensor | None
    drift: torch.Tensor
    kept_step: torch.Tensor
    steps_used: torch.Tensor
    codes: dict
    codes0: dict
    detectors: list[str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        out = {"n": len(self.images), "success_per_detector": dict(zip(self.detectors, self.success.float().mean(0).tolist())),
               "success_all": float(self.success.all(1).float().mean()),
               "p_fake_before": dict(zip(self.detectors, self.score_before.mean(0).tolist())),
               "p_fake_after": dict(zip(self.detectors, self.score_after.mean(0).tolist())),
               "mean_drift": float(self.drift.mean()), "mean_steps_used": float(self.steps_used.float().mean()),
               "seconds": round(self.seconds, 2), "notes": self.notes}
        if self.attribute_after is not None:
            out["attribute_fidelity_before"] = float(self.attribute_before.float().mean())
            out["attribute_fidelity"] = float(self.attribute_after.float().mean())
        if self.feature_distance is not None:
            out["feature_distance"] = float(self.feature_distance.mean())
        return out


@ATTACKS.register("latent_evasion")
@dataclass(kw_only=True)
class LatentEvasion:
    """``attack(generator, detectors, n, classifier=..., target=... | reference=...) -> LatentEvasionResult``."""

    mode: Literal["single", "ensemble", "meta"] = "single"
    steps: NonNegInt = 60  # Adam steps on the codes (the attack budget)
    lr: PositiveFloat = 0.05
    detector_weight: NonNegFloat = 1.0
    attribute_weight: NonNegFloat = 1.0
    reg_weight: NonNegFloat = 1.0  # weight of the mean squared code change ||c - c0||^2 / dim
    inner_lr: NonNegFloat = 0.02  # meta: size of the virtual step (rms-normalised gradient), under one Adam step (lr)
    first_order: bool = False  # meta: drop second-order terms of the virtual step
    candidates: PositiveInt = 32  # start: best of k random codes for the attribute / reference
    restarts: NonNegInt = 2  # images that end a run without fooling every detector with the attribute start again (fresh codes)
    layers: str = ""  # layer mask over W+ rows ("0-3", "coarse", ...; "": all)
    threshold: OpenUnitFloat = 0.5  # success: p_fake < threshold under a detector
    early_stop: bool = False  # stop a batch once every image fools every attacked detector with its attribute
    batch_size: PositiveInt = 64
    seed: Seed = 0

    def _validate_params(self) -> None:
        check_settings(self, name="latent_evasion")

    def attack(self, generator, detectors, n: int, *, classifier: nn.Module | None = None, target=None,
               reference: torch.Tensor | None = None, classifier_size: int | None = None, names: list[str] | None = None,
               callback: Callback | None = None) -> LatentEvasionResult:
        """Attack ``n`` fresh codes of ``generator`` (a GAN module or a LatentSpace) against ``detectors``.

        ``target``: class id(s) the ``classifier`` must keep seeing (int or (n,); None with a classifier: the
        class it sees at the start). ``reference``: (C, H, W) image in [0, 1]; its features (the classifier's
        ``forward_features`` if it has them, else pixels) guide the images. ``classifier_size``: its input size.
        """
        self._validate_params()
        if target is not None and reference is not None:
            raise GuardgenError("pass an attribute target or a reference image, not both")
        if target is not None and classifier is None:
            raise GuardgenError("an attribute target needs an attribute classifier")
        if n < 1:
            raise GuardgenError("n must be at least 1")
        space = generator if isinstance(generator, LatentSpace) else latent_space(generator)
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            shape = tuple(space.decode(space.sample(1, torch.Generator().manual_seed(0))).shape[1:])
        views, notes = detector_views(list(detectors), shape, names)
        if not views:
            raise GuardgenError("no detector to attack")
        if self.mode == "meta" and len(views) < 2:
            raise GuardgenError("meta mode needs at least 2 white-box detectors (meta-train and meta-test)")
        attack_views = views[:1] if self.mode == "single" else views
        layers = parse_layers(self.layers, space.num_layers)
        if self.layers and space.num_layers == 1 and layers != (0,):
            raise GuardgenError("this generator has a single latent layer (z); a layer mask needs a W+ space")
        guide = AttributeGuide(classifier, classifier_size, target, reference, n, shape)
        t0 = time.perf_counter()
        parts = []
        n_batches = -(-n // self.batch_size)
        for b in range(n_batches):
            idx = torch.arange(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            part = self._batch(space, attack_views, guide, self._start(space, guide, idx, g), layers, idx, b, n_batches, g, callback)
            for r in range(1, self.restarts + 1):  # failures start again from fresh codes; a valid retry replaces them
                failed = ~part["valid"]
                if not failed.any():
                    break
                retry = self._batch(space, attack_views, guide, self._start(space, guide, idx[failed], g), layers, idx[failed],
                                    b, n_batches, g, callback, run=r)
                retry["kept_step"] += part["steps_used"][failed]
                part["steps_used"][failed] += retry["steps_used"]
                _replace(part, failed.nonzero()[:, 0][retry["valid"]], retry, retry["valid"])
            part.pop("valid")
            parts.append(part)
        cat = {k: torch.cat([p[k] for p in parts]) if parts[0][k] is not None else None
               for k in parts[0] if k not in ("codes", "codes0")}
        codes = {k: torch.cat([p["codes"][k] for p in parts]) for k in parts[0]["codes"]}
        codes0 = {k: torch.cat([p["codes0"][k] for p in parts]) for k in parts[0]["codes0"]}
        return LatentEvasionResult(codes=codes, codes0=codes0, detectors=[v.name for v in attack_views], notes=notes,
                                   seconds=time.perf_counter() - t0, **cat)

    # ------------------------------------------------------------------ internals

    def _start(self, space, guide, idx, g) -> dict:
        """Best of ``candidates`` random codes per image ``idx`` for the attribute (the first one without guidance)."""
        m = len(idx)
        k = self.candidates if guide.mode in ("class", "reference") else 1
        codes = space.sample(m * k, g)
        if k == 1:
            return codes
        with torch.no_grad():
            images = torch.cat([space.decode({c: v[i:i + 256] for c, v in codes.items()}) for i in range(0, m * k, 256)])
            loss = guide.loss(images, idx, repeat=k).view(m, k)  # (m, k): image-major
        best = loss.argmin(1) + torch.arange(m) * k
        return {c: v[best] for c, v in codes.items()}

    def _batch(self, space, views, guide, codes0, layers, idx, b, n_batches, g, callback, run: int = 0) -> dict:
        """One run of ``steps`` Adam steps from ``codes0`` for images ``idx`` (a tensor of indices); ``run`` 0 is the
        first, 1.. the restarts (the progress callback counts each run's steps over the batch again)."""
        m = len(next(iter(codes0.values())))
        masks = {k: _mask(space, k, v, layers) for k, v in codes0.items()}
        codes = {k: v.clone().requires_grad_(True) for k, v in codes0.items()}
        opt = torch.optim.Adam(codes.values(), lr=self.lr)
        kept = {k: v.clone() for k, v in codes0.items()}
        kept_step = torch.zeros(m, dtype=torch.long)
        ever = torch.zeros(m, dtype=torch.bool)
        clean = score0 = attr0 = None
        for step in range(self.steps + 1):
            with torch.set_grad_enabled(step < self.steps):
                x = space.decode(codes)
                logits = torch.stack([v(x) for v in views], 1)  # (m, K)
                attr_loss, attr_ok = guide.loss(x, idx), guide.ok(x, idx)
            p = torch.sigmoid(logits.detach()).cpu()
            valid = (p < self.threshold).all(1) & (attr_ok if attr_ok is not None else True)
            if clean is None:
                clean, score0, attr0 = x.detach().cpu(), p, attr_ok
            with torch.no_grad():
                for k in kept:
                    kept[k][valid] = codes[k].detach()[valid]
            kept_step[valid], ever = step, ever | valid
            if step == self.steps or (self.early_stop and bool(valid.all())):
                break
            if self.mode == "meta":
                with _double_backward_attention(not self.first_order):
                    det_loss = self._meta_loss(space, views, codes, masks, logits, g)
            else:
                det_loss = F.softplus(logits).mean(1)  # (m,) BCE towards "real", mean over detectors
            det_loss = det_loss.cpu()  # the detectors' device; the codes and the attribute loss are on the CPU
            loss = (self.detector_weight * det_loss + self.attribute_weight * attr_loss
                    + self.reg_weight * space.regularizer(codes, codes0)).mean()
            opt.zero_grad(set_to_none=True)
            with _double_backward_attention(self.mode == "meta" and not self.first_order):
                loss.backward()
            for k, c in codes.items():
                if c.grad is not None and masks[k] is not None:
                    c.grad.mul_(masks[k])
            opt.step()
            with torch.no_grad():
                space.project(codes)
            if callback is not None:
                callback(b * self.steps + step + 1, {"total": n_batches * self.steps, "loss": loss.item(),
                                                     "success_rate": float(valid.float().mean()), "batch": b + 1,
                                                     "run": run + 1})
        never = ~ever
        with torch.no_grad():  # images that never became valid keep their final state
            for k in kept:
                kept[k][never] = codes[k].detach()[never]
            images = space.decode(kept).cpu()
            p_after = detector_scores(views, images)
            ok_after = guide.ok(images, idx)
            dist = guide.distance(images, idx)
        drift = space.regularizer(kept, codes0).sqrt()
        kept_step[never] = step
        success = p_after < self.threshold
        return {"images": images, "clean": clean, "score_before": score0, "score_after": p_after,
                "success": success, "valid": success.all(1) & (ok_after if ok_after is not None else True),
                "steps_used": torch.full((m,), step), "targets": guide.batch_targets(idx),
                "attribute_before": attr0, "attribute_after": ok_after, "feature_distance": dist, "drift": drift,
                "kept_step": kept_step, "codes": kept, "codes0": codes0}

    def _meta_loss(self, space, views, codes, masks, logits, g) -> torch.Tensor:
        """Mean of the meta-train losses at c and the meta-test loss after each virtual step: (m,)."""
        order = torch.randperm(len(views), generator=g).tolist()
        train, test = order[:-1], order[-1]
        keys = list(codes)
        losses = []
        for i in train:
            li = F.softplus(logits[:, i])
            grads = torch.autograd.grad(li.sum(), [codes[k] for k in keys], create_graph=not self.first_order,
                                        retain_graph=True, allow_unused=True)
            fast = {}
            for k, gk in zip(keys, grads):
                if gk is None:
                    fast[k] = codes[k]
                    continue
                if masks[k] is not None:
                    gk = gk * masks[k]
                rms = gk.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, *[1] * (gk.ndim - 1))
                fast[k] = codes[k] - self.inner_lr * gk / rms
            losses += [li, F.softplus(views[test](space.decode(fast)))]
        return torch.stack(losses, 1).mean(1)

    def config(self) -> dict:
        return asdict(self)


def _double_backward_attention(on: bool):
    """Fused attention kernels have no double backward; the math kernel has (second-order meta steps through ViTs)."""
    from contextlib import nullcontext

    if not on:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _mask(space, key: str, code: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor | None:
    """1 where the layer mask lets ``code`` change (None: all of it may change)."""
    if len(layers) == space.num_layers:
        return None
    if key in space.layer_axis:
        axis = space.layer_axis[key]
        shape = [1] * code.ndim
        shape[axis] = code.shape[axis]
        mask = torch.zeros(code.shape[axis])
        mask[list(layers)] = 1.0
        return mask.view(shape)
    layer = space.layer_of(key)
    return None if layer is None else torch.tensor(float(layer in layers))


def _replace(part: dict, rows: torch.Tensor, new: dict, keep: torch.Tensor) -> None:
    """Overwrite ``part``'s records at ``rows`` with ``new``'s records where ``keep`` (codes and start too)."""
    for key, value in new.items():
        if key == "steps_used" or value is None:
            continue
        if isinstance(value, dict):
            for c, v in value.items():
                part[key][c][rows] = v[keep]
        else:
            part[key][rows] = value[keep]
