import pytest
import torch
from torch import nn

from guardgen import metrics as M
from guardgen.metrics.unlearning import REPORT_KEYS, output_features


def confident(labels, margin, k=4):
    return nn.functional.one_hot(labels, k).float() * margin


def test_output_features_by_hand():
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    f = output_features(logits, torch.tensor([0, 1]))
    assert f[0] == pytest.approx([torch.log(torch.tensor(2.0)).item(), torch.log(torch.tensor(2.0)).item(), 0.5], abs=1e-6)
    assert f[1, 1] == pytest.approx(10.0, abs=1e-3) and f[1, 2] == pytest.approx(0.0, abs=1e-4)


def test_mia_efficacy_calls_test_like_samples_non_members():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    members = (confident(y, 12) + 0.3 * torch.randn(200, 4, generator=g), y)  # members: confident
    nonmembers = (confident(y, 2) + 0.3 * torch.randn(200, 4, generator=g), y)  # non-members: unsure
    like_test = (confident(y[:50], 2) + 0.3 * torch.randn(50, 4, generator=g), y[:50])
    like_train = (confident(y[:50], 12) + 0.3 * torch.randn(50, 4, generator=g), y[:50])
    assert M.mia_efficacy(members, nonmembers, like_test) > 0.9
    assert M.mia_efficacy(members, nonmembers, like_train) < 0.1


class Lookup(nn.Module):
    """A 'model' whose logits are stored per input id (the first pixel)."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, x):
        return self.table[x.flatten(1)[:, 0].long()]


def test_unlearning_report_and_gap_by_hand():
    g = torch.Generator().manual_seed(1)
    n = 300
    y = torch.randint(0, 4, (n,), generator=g)
    logits = confident(y, 8) + 0.2 * torch.randn(n, 4, generator=g)
    wrong = torch.arange(n) < 10  # the first 10 ids are misclassified
    logits[wrong] = confident((y[wrong] + 1) % 4, 8)
    model = Lookup(logits)
    ids = torch.arange(n).float().view(n, 1, 1, 1)
    forget, retain, test = (ids[:20], y[:20]), (ids[20:200], y[20:200]), (ids[200:], y[200:])
    r = M.unlearning_report(model, forget, retain, test)
    assert set(r) == set(REPORT_KEYS)
    assert r["ua"] == pytest.approx(0.5) and r["ra"] == 1.0 and r["ta"] == 1.0
    assert 0 <= r["mia_efficacy"] <= 1
    ref = {"ua": 0.1, "mia_efficacy": r["mia_efficacy"] + 0.2, "ra": 0.9, "ta": 1.0}
    assert M.gap_to_retrain(r, ref) == pytest.approx((0.4 + 0.2 + 0.1 + 0.0) / 4)
    assert M.gap_to_retrain(r, r) == 0.0
