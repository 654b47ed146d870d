"""Membership inference from per-sample losses: lower loss = more likely a training member."""

from __future__ import annotations

import numpy as np

from guardgen.metrics.detection import auroc, tpr_at_fpr

__all__ = ["mia_auc"]


def _np(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return x.astype(np.float64).ravel()


def mia_auc(member_losses, nonmember_losses) -> dict[str, float]:
    """AUROC and TPR at 1% FPR of the loss-threshold attack (score = -loss); losses: (N,) and (M,).

    0.5 AUROC means members are indistinguishable from non-members (the goal after unlearning).
    """
    m, n = _np(member_losses), _np(nonmember_losses)
    y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    s = -np.concatenate([m, n])
    return {"auroc": auroc(y, s), "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01)}
