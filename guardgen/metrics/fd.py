"""Frechet distance on a chosen feature space, and k-NN precision/recall/coverage beside it.

``fd_score`` is the FID formula (Heusel et al., 2017) on whatever features ``feature_fn`` returns; the
zoo uses the digit oracle's pooled features, so the number is comparable only to other numbers taken
with the same features and sample sizes. A collapsed generator can score a good FD and good accuracy,
so report recall/coverage (diversity) beside it.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

__all__ = ["feature_statistics", "frechet_distance", "fd_from_features", "fd_score", "precision_recall_knn", "coverage_density"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """features: (N, D) with N >= 2 -> mean (D,) and unbiased covariance (D, D)."""
    f = _np(features)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians; mu: (D,), sigma: (D, D).

    Follows pytorch-fid: if the product is too singular for a finite square root, ``eps`` is added to
    both diagonals; a negligible imaginary part from round-off is dropped, a large one raises ValueError.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(_np(mu1)), np.atleast_1d(_np(mu2))
    sigma1, sigma2 = np.atleast_2d(_np(sigma1)), np.atleast_2d(_np(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # pytorch-fid silences the singular-matrix warning (disp=False) too
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # singular product: offset the diagonals (as pytorch-fid does)
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm(sigma1 @ sigma2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fd_from_features(features_a, features_b) -> float:
    """FD between two sets of features (N, D) and (M, D)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def fd_score(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
) -> float:
    """FID formula between image sets (N, C, H, W) and (M, C, H, W) on a user-chosen feature space.

    ``feature_fn`` maps (B, C, H, W) -> (B, D) and runs under ``torch.no_grad`` in chunks of ``batch_size``;
    the zoo passes the digit oracle's pooled features. Inception features give the usual FID.
    """

    def feats(images):
        with torch.no_grad():
            return torch.cat([feature_fn(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])

    return fd_from_features(feats(images_a), feats(images_b))


def _knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return dist[:, -1]  # column 0 is the point itself


def precision_recall_knn(real_features, fake_features, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019) with k-NN manifold balls.

    real_features: (N, D), fake_features: (M, D). Each sample gets a ball reaching its k-th nearest
    neighbour in its own set. precision: share of fakes inside some real ball; recall: share of reals
    inside some fake ball. Low recall with high precision is the signature of mode collapse.
    """
    from sklearn.metrics import pairwise_distances

    real, fake = _np(real_features), _np(fake_features)
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = pairwise_distances(fake, real)  # (n_fake, n_real)
    precision = (d <= r_real[None, :]).any(1).mean()
    recall = (d.T <= r_fake[None, :]).any(1).mean()
    return {"precision": float(precision), "recall": float(recall)}


def coverage_density(real_features, fake_features, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al., 2020) with k-NN balls around the real samples only.

    real_features: (N, D), fake_features: (M, D). density: mean count of real balls holding a fake,
    divided by k (about 1 when the sets match, can exceed 1); coverage: share of real balls holding a fake.
    """
    from sklearn.metrics import pairwise_distances

    real, fake = _np(real_features), _np(fake_features)
    r_real = _knn_radii(real, k)
    inside = pairwise_distances(real, fake) <= r_real[:, None]  # (n_real, n_fake)
    return {"density": float(inside.sum() / (k * fake.shape[0])), "coverage": float(inside.any(1).mean())}
