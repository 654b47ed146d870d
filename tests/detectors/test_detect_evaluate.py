"""Evaluation protocol: threshold from held-out reals only, per-generator figures, perturbations."""

import numpy as np
import pytest
import torch

from detectors.evaluate import evaluate_generators, format_control, leave_one_generator_out, perturb, robustness_grid
from guardgen.errors import GuardgenError
from guardgen.metrics.detection import threshold_at_fpr


class MeanDetector:
    """p_fake = mean pixel value (a transparent stand-in)."""

    threshold = 0.5

    def predict_proba(self, x):
        return x.flatten(1).mean(1)


def imgs(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()


def test_threshold_comes_from_heldout_reals_only():
    det = MeanDetector()
    held = imgs(np.linspace(0.0, 0.3, 200))
    test_a = imgs(np.linspace(0.0, 0.2, 100))
    test_b = imgs(np.linspace(0.5, 0.9, 100))  # a very different test set: must not move the threshold
    fake = imgs(np.linspace(0.25, 1.0, 100))
    ra = evaluate_generators(det, test_a, {"g": fake}, real_heldout=held, n_boot=20)
    rb = evaluate_generators(det, test_b, {"g": fake}, real_heldout=held, n_boot=20)
    expected = threshold_at_fpr(det.predict_proba(held).numpy(), 0.01)
    assert ra["threshold_fpr"] == pytest.approx(expected) == rb["threshold_fpr"]
    assert ra["generators"]["g"]["tpr_at_fpr"] == pytest.approx(float((det.predict_proba(fake) > expected).float().mean()))
    row = ra["generators"]["g"]
    assert row["auroc"] == pytest.approx(1.0) and row["acc_real"] == 1.0
    assert row["auroc_ci"][0] <= row["auroc"] <= row["auroc_ci"][1] + 1e-9
    assert rb["fpr_realised"] == 1.0  # the test reals all lie above the held-out threshold


def test_empty_classes_are_refused():
    det = MeanDetector()
    with pytest.raises(GuardgenError, match="no images"):
        evaluate_generators(det, imgs([0.1]), {"g": imgs([0.9])[:0]}, real_heldout=imgs([0.1]))
    with pytest.raises(GuardgenError, match="no fake"):
        evaluate_generators(det, imgs([0.1]), {}, real_heldout=imgs([0.1]))


def test_leave_one_generator_out_trains_without_the_tested_generator():
    calls = []

    def fit(real, fake):
        calls.append(len(fake))
        return MeanDetector()

    fakes = {"a": imgs([0.8] * 3), "b": imgs([0.9] * 5)}
    res = leave_one_generator_out(fit, imgs([0.1] * 4), fakes, imgs([0.1, 0.2]), fakes, real_heldout=imgs([0.1, 0.2]), n_boot=5)
    assert calls == [5, 3] and set(res) == {"a", "b"}


def test_perturbations_and_grids():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=g)
    for kind, level in [("jpeg", 50), ("resize", 0.5), ("blur", 1.0), ("noise", 0.1)]:
        y = perturb(x, kind, level)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and not torch.allclose(x, y)
    assert torch.equal(perturb(x, "none", 0), x)
    with pytest.raises(GuardgenError):
        perturb(x, "swirl", 1)
    rows = robustness_grid(MeanDetector(), x * 0.5, x * 0.5 + 0.5)
    assert rows[0]["auroc"] == 1.0 and {r["perturbation"] for r in rows} == {"none", "jpeg", "resize", "blur", "noise"}
    ctrl = format_control(MeanDetector(), x * 0.5, x * 0.5 + 0.5)
    assert [r["setting"].split()[0] for r in ctrl] == ["as", "fakes", "reals", "both"]
