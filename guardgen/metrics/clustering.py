"""Clustering agreement: NMI, ARI (scikit-learn) and purity."""

from __future__ import annotations

import numpy as np

__all__ = ["nmi", "ari", "purity"]


def nmi(y_true, y_pred) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(np.asarray(y_true), np.asarray(y_pred)))


def ari(y_true, y_pred) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(y_true), np.asarray(y_pred)))


def purity(y_true, y_pred) -> float:
    """Share of items whose cluster's majority true label is their own label."""
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(np.asarray(y_true), np.asarray(y_pred))
    return float(table.max(axis=0).sum() / table.sum())
