"""Detection metrics on scores (higher = more likely positive/fake): AUROC, AP, TPR at a fixed FPR, bootstrap CIs."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

__all__ = ["auroc", "average_precision", "tpr_at_fpr", "threshold_at_fpr", "bootstrap_ci"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def auroc(y_true, scores) -> float:
    """Area under the ROC curve; y_true: (N,) in {0, 1}, scores: (N,). NaN if y_true has one class."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_np(y_true), _np(scores)))


def average_precision(y_true, scores) -> float:
    """Average precision (area under the precision-recall curve); y_true: (N,) in {0, 1}, scores: (N,)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(_np(y_true), _np(scores)))


def tpr_at_fpr(y_true, scores, fpr: float = 0.01) -> float:
    """The largest TPR among ROC points whose FPR is at most ``fpr`` (no interpolation upwards)."""
    from sklearn.metrics import roc_curve

    fprs, tprs, _ = roc_curve(_np(y_true), _np(scores))
    ok = fprs <= fpr + 1e-12
    return float(tprs[ok].max()) if ok.any() else 0.0


def threshold_at_fpr(negative_scores, fpr: float = 0.01) -> float:
    """A threshold from held-out negatives (N,): at most ``fpr`` of them score strictly above it.

    Use it as ``scores > threshold`` -> positive. Ties can make the realised FPR lower than ``fpr``.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    s = np.sort(_np(negative_scores).astype(np.float64).ravel())
    if not len(s):
        return float("nan")
    k = min(int(np.floor(fpr * len(s) + 1e-9)), len(s) - 1)  # how many negatives may lie above
    return float(s[len(s) - 1 - k])


def bootstrap_ci(
    metric_fn: Callable[..., float], *arrays, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(*arrays)``, resampling rows of all arrays jointly.

    arrays: each (N, ...). Resamples where the metric is undefined (raises ValueError, returns a
    non-finite value, e.g. one class only) are skipped; (nan, nan) if none is left.
    """
    from sklearn.exceptions import UndefinedMetricWarning

    arrays = [_np(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays must have the same length")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            try:
                value = float(metric_fn(*[a[idx] for a in arrays]))
            except ValueError:
                continue
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))
