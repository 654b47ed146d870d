"""PGD: stays within its L-inf budget and the image range, and raises the loss."""

import torch
import torch.nn.functional as F

from attacks import ATTACKS
from attacks.pgd import PGD


def test_pgd_within_budget_raises_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 1))
    x = torch.rand(8, 1, 8, 8)
    y = torch.ones(8)
    eps = 4 / 255
    adv = ATTACKS.create("pgd", eps=eps, step_size=1 / 255, steps=10).attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    loss = lambda z: F.binary_cross_entropy_with_logits(model(z).reshape(-1), y).item()  # noqa: E731
    assert loss(adv) > loss(x) + 1e-3
    assert torch.equal(PGD(eps=0.0, steps=3).attack(model, x, y), x)
