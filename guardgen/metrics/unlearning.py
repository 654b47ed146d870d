"""Metrics of classifier unlearning (Fan et al., "Challenging Forgets", ECCV 2024; SalUn, ICLR 2024).

All figures are fractions in [0, 1] (multiply by 100 for the papers' percentage points):
- UA  = 1 - accuracy on the forget set (unlearning accuracy),
- RA  = accuracy on the retain set, TA = accuracy on the test set,
- MIA-efficacy: an RBF-SVC membership-inference attack is trained on features of the model's outputs
  (prediction entropy, loss, confidence) with a slice of the retain set as members and the test set as
  non-members; MIA-efficacy is the share of forget samples it predicts as NON-members (higher = more forgotten),
- gap to retrain: the mean absolute difference to the retrained model's figures over UA, MIA-efficacy, RA, TA
  (a fraction as well).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["REPORT_KEYS", "output_features", "mia_efficacy", "unlearning_report", "gap_to_retrain"]

REPORT_KEYS = ("ua", "mia_efficacy", "ra", "ta")
FEATURES = ("entropy", "loss", "confidence")


def output_features(logits, labels, features: tuple[str, ...] = FEATURES) -> np.ndarray:
    """(N, K) logits and (N,) labels -> (N, F) per-sample features for the membership attack."""
    logits = torch.as_tensor(logits).detach().float().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    logp = F.log_softmax(logits, -1)
    p = logp.exp()
    cols = {
        "entropy": -(p * logp).sum(-1),
        "loss": -logp.gather(1, labels[:, None]).squeeze(1),
        "confidence": p.gather(1, labels[:, None]).squeeze(1),
    }
    unknown = set(features) - set(cols)
    if unknown:
        raise ValueError(f"unknown MIA feature(s) {sorted(unknown)}; use {FEATURES}")
    return torch.stack([cols[f] for f in features], 1).numpy().astype(np.float64)


def mia_efficacy(member: tuple, nonmember: tuple, target: tuple, *, features: tuple[str, ...] = FEATURES,
                 C: float = 3.0, seed: int = 0) -> float:
    """Share of ``target`` samples an SVC, trained on ``member`` (1) vs ``nonmember`` (0), calls non-members.

    Each argument is ``(logits, labels)``. The features are standardised on the shadow (training) data.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    xm, xn, xt = (output_features(lg, lb, features) for lg, lb in (member, nonmember, target))
    if len(xt) == 0:
        return float("nan")
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm)), np.zeros(len(xn))])
    if len(np.unique(y)) < 2:
        raise ValueError("the membership attack needs both member and non-member samples")
    clf = make_pipeline(StandardScaler(), SVC(C=C, gamma="auto", kernel="rbf", random_state=seed))
    clf.fit(x, y)
    return float(1.0 - clf.predict(xt).mean())


@torch.no_grad()
def _logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean()) if len(labels) else float("nan")


def unlearning_report(model: torch.nn.Module, forget: tuple, retain: tuple, test: tuple, *,
                      mia_members: int | None = None, batch_size: int = 512, seed: int = 0) -> dict[str, float]:
    """UA, MIA-efficacy, RA and TA of ``model`` (fractions); each data argument is ``(images, labels)``.

    The attack's members are ``mia_members`` retain samples (default: as many as the test set, as in the
    paper's code), drawn with ``seed``; its non-members are the test set.
    """
    (xf, yf), (xr, yr), (xt, yt) = ((torch.as_tensor(x), torch.as_tensor(y).long().cpu()) for x, y in (forget, retain, test))
    lf, lr, lt = _logits(model, xf, batch_size), _logits(model, xr, batch_size), _logits(model, xt, batch_size)
    k = min(len(yr), mia_members or len(yt))
    pick = torch.randperm(len(yr), generator=torch.Generator().manual_seed(seed))[:k]
    return {
        "ua": 1.0 - _accuracy(lf, yf),
        "mia_efficacy": mia_efficacy((lr[pick], yr[pick]), (lt, yt), (lf, yf), seed=seed),
        "ra": _accuracy(lr, yr),
        "ta": _accuracy(lt, yt),
    }


def gap_to_retrain(report: dict, retrain_report: dict, keys: tuple[str, ...] = REPORT_KEYS) -> float:
    """Mean |report[k] - retrain_report[k]| over UA, MIA-efficacy, RA and TA (a fraction, like the inputs)."""
    return float(np.mean([abs(float(report[k]) - float(retrain_report[k])) for k in keys]))
