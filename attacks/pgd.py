"""Projected gradient descent in pixel space (Madry et al., ICLR 2018): the off-manifold baseline.

Maximises ``loss_fn(model(x + delta), labels)`` over ``||delta||_inf <= eps`` with signed-gradient steps,
projecting back onto the budget and onto the image range [0, 1] after each step. For a detector,
``model`` returns (B,) fake logits and ``labels`` are the true labels (1 = fake): raising the loss pushes
fakes towards "real". The perturbation is one no generator would produce (contrast: ``on_manifold``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks import ATTACKS
from guardgen.errors import GuardgenError

__all__ = ["PGD"]


def _default_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 1 or logits.shape[-1] == 1:  # binary: one logit
        return F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


@ATTACKS.register("pgd")
@dataclass(kw_only=True)
class PGD:
    eps: float = 4 / 255
    step_size: float = 1 / 255
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True

    def _validate_params(self) -> None:
        if self.norm != "linf":
            raise GuardgenError(f"PGD: norm {self.norm!r} is not implemented; use linf")
        if self.eps < 0 or self.step_size <= 0 or self.steps < 0:
            raise GuardgenError("PGD: eps >= 0, step_size > 0 and steps >= 0 are needed")

    def attack(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
               loss_fn=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """images (B, C, H, W) in [0, 1] -> adversarial images within ``eps`` (L-inf) of them, in [0, 1]."""
        self._validate_params()
        loss_fn = loss_fn or _default_loss
        device = next(model.parameters()).device
        x0 = images.detach().float().to(device)
        labels = torch.as_tensor(labels).to(device)
        was_training = model.training
        model.eval()
        delta = torch.zeros_like(x0)
        if self.random_start and self.eps > 0:
            rand = torch.rand(x0.shape, generator=generator, device=generator.device if generator is not None else "cpu")
            delta = (rand * 2 - 1).to(device) * self.eps
        delta = ((x0 + delta).clamp(0, 1) - x0).requires_grad_(True)
        for _ in range(self.steps):
            loss = loss_fn(model(x0 + delta), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += self.step_size * grad.sign()
                delta.clamp_(-self.eps, self.eps)
                delta.copy_((x0 + delta).clamp(0, 1) - x0)
        model.train(was_training)
        return (x0 + delta).detach().cpu()
