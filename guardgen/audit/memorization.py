"""Section 4, memorization: how close samples come to training images, against a held-out baseline.

- calibrated l2 (Carlini et al. 2023, CIFAR-10 form): l(x^, x) = l2(x^, x_nn) / (alpha * mean l2 from x^ to
  its n nearest training images), n = 50, alpha = 0.5; below 1/3 counts as an extracted training image.
  The same statistic for held-out real images is the baseline (near-duplicates occur in real data too).
- AuthPct (dgm-eval): share of samples farther from their nearest training point t than t is from its own
  nearest training neighbour; C_T (Meehan et al. 2020): per k-means cell of the training features, a
  Mann-Whitney U z-score of the samples' vs held-out images' nearest-training distances, averaged with
  held-out weights; C_T << 0 means copying, >> 0 underfitting. Both run in pixel space by default
  (``memorization_space``): a classifier's features are built to ignore what tells a copy from another
  drawing of the same class (bench/audit.py: on oracle features neither flagged a model that copies
  its 20 training images; on pixels AuthPct fell from 61% to 1% and C_T from -1 to -16).
- a gallery of the closest (sample, training image) pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from guardgen.audit._base import Section, not_run

__all__ = ["memorization_section", "calibrated_l2", "auth_pct", "ct_score"]

LIMITATIONS = [
    "Distances are in pixel space by default (calibrated l2, AuthPct, C_T); copies that are shifted, flipped or "
    "re-coloured can escape pixel distances, and a copy-detection embedding (SSCD, DINOv2) is not used here.",
    "The extraction test is a reduced-budget version of Carlini et al. (a few hundred samples, not 10^6-10^8): "
    "a zero extraction rate bounds the rate only roughly (about 3/N at 95% confidence).",
    "None of these metrics separates memorization from underfitting or mode shrinkage (Stein et al., dgm-eval); "
    "read them with the gallery.",
]


def _sqdist(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) euclidean distances, in chunks of rows."""
    a, b = a.double(), b.double()
    return torch.cat([torch.cdist(a[i : i + chunk], b) for i in range(0, len(a), chunk)]).float()


def calibrated_l2(queries: torch.Tensor, train: torch.Tensor, *, n: int = 50, alpha: float = 0.5, skip_self: bool = False):
    """queries (N, ...), train (M, ...) -> (calibrated (N,), nearest distance (N,), nearest index (N,))."""
    d = _sqdist(queries.flatten(1), train.flatten(1))
    k = min(n + int(skip_self), d.shape[1])
    top, idx = d.topk(k, dim=1, largest=False)
    if skip_self:
        top, idx = top[:, 1:], idx[:, 1:]
    calibrated = top[:, 0] / (alpha * top.mean(1).clamp_min(1e-12))
    return calibrated, top[:, 0], idx[:, 0]


def auth_pct(gen_f: np.ndarray, train_f: np.ndarray) -> float:
    """Percentage of samples that are 'authentic' (dgm-eval's AuthPct); features (N, D) and (M, D)."""
    from sklearn.neighbors import NearestNeighbors

    nn_train = NearestNeighbors(n_neighbors=2).fit(train_f)
    train_radius = nn_train.kneighbors(train_f)[0][:, 1]
    d, idx = nn_train.kneighbors(gen_f, n_neighbors=1)
    return float(100 * (train_radius[idx[:, 0]] < d[:, 0]).mean())


def ct_score(gen_f: np.ndarray, test_f: np.ndarray, train_f: np.ndarray, *, cells: int = 3, seed: int = 0,
             min_cell: int = 20) -> dict:
    """Meehan et al.'s C_T: PCA to <= 64 dims, k-means cells on train, per-cell Mann-Whitney z of NN distances."""
    from scipy.stats import mannwhitneyu
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    from threadpoolctl import threadpool_limits

    dims = min(64, train_f.shape[1], len(train_f))
    pca = PCA(n_components=dims, random_state=seed).fit(train_f)
    tr, te, ge = pca.transform(train_f), pca.transform(test_f), pca.transform(gen_f)
    with threadpool_limits(limits=1):  # OpenMP threads spin under a shared CPU; the fit is small
        km = KMeans(n_clusters=cells, n_init=10, random_state=seed).fit(tr)
    ctr, cte, cge = km.labels_, km.predict(te), km.predict(ge)
    zs, weights, used = [], [], []
    for c in range(cells):
        g, t, r = ge[cge == c], te[cte == c], tr[ctr == c]
        if len(g) < min_cell or len(t) < 2 or len(r) < 2:
            continue
        nn = NearestNeighbors(n_neighbors=1).fit(r)
        dg, dt = nn.kneighbors(g)[0][:, 0], nn.kneighbors(t)[0][:, 0]
        m, n = len(dg), len(dt)
        u = mannwhitneyu(dg, dt, alternative="two-sided").statistic  # pairs where the sample is farther
        zs.append((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
        weights.append(len(t))
        used.append(c)
    if not zs:
        return {"ct_score": None, "cells_used": 0, "note": f"no cell held {min_cell}+ samples"}
    w = np.asarray(weights, dtype=float)
    return {"ct_score": float(np.dot(w / w.sum(), zs)), "cells_used": len(used), "cell_z": [float(z) for z in zs]}


def memorization_section(pool: dict, train, holdout, oracle, *, config, features=None) -> Section:
    """pool["images"]: (N, C, H, W) samples; train/holdout: ImageSets at the model's resolution."""
    if train is None:
        return not_run("memorization", "no training data (--train-data) to compare samples with", LIMITATIONS)
    images = pool["images"]
    cal, nn_d, nn_i = calibrated_l2(images, train.images, n=config.nn_neighbours, alpha=config.nn_alpha)
    thr = config.extraction_threshold
    figures = {
        "samples": len(images), "training_images": len(train),
        "extraction_budget": f"{len(images)} samples, calibrated l2 < {thr:.3g} (n={config.nn_neighbours}, alpha={config.nn_alpha})",
        "extraction_rate": float((cal < thr).float().mean()),
        "extracted": int((cal < thr).sum()),
        "extracted_unique_training_images": int(nn_i[cal < thr].unique().numel()),
        "calibrated_l2_median": float(cal.median()),
        "nn_l2_median": float(nn_d.median()),
    }
    plots = {}
    hist = {"generated": cal.tolist()}
    if holdout is not None:
        hcal, hnn, _ = calibrated_l2(holdout.images, train.images, n=config.nn_neighbours, alpha=config.nn_alpha)
        figures.update({"holdout_extraction_rate": float((hcal < thr).float().mean()),
                        "holdout_calibrated_l2_median": float(hcal.median()),
                        "holdout_nn_l2_median": float(hnn.median())})
        hist["held-out real"] = hcal.tolist()
    plots["calibrated_l2"] = {"kind": "hist", "series": hist, "threshold": thr,
                              "xlabel": "calibrated l2 to the nearest training image", "ylabel": "share"}
    space = config.memorization_space
    if space == "pixels" or oracle is not None:
        if space == "pixels":
            embed = lambda x: x.flatten(1).numpy()  # noqa: E731
        else:
            from guardgen.audit._base import FeatureCache

            features = features or FeatureCache(oracle)
            embed = lambda x: features(x).numpy()  # noqa: E731
        gf, tf = embed(images), embed(train.images)
        figures["feature_space"] = space
        figures["auth_pct"] = auth_pct(gf, tf)
        if holdout is not None:
            ct = ct_score(gf, embed(holdout.images), tf, cells=config.ct_cells, seed=config.seed,
                          min_cell=min(20, max(2, len(gf) // 10)))
            figures.update(ct)
    order = cal.argsort()[: config.gallery_size]
    pairs = torch.stack([torch.stack([images[i], train.images[nn_i[i]]]) for i in order.tolist()]).flatten(0, 1)
    rows = [{"rank": r + 1, "sample": int(i), "training image": int(nn_i[i]), "l2": float(nn_d[i]),
             "calibrated l2": float(cal[i]), "extracted": bool(cal[i] < thr)} for r, i in enumerate(order.tolist())]
    s = Section(name="memorization", figures=figures, tables={"closest_pairs": rows}, plots=plots, limitations=LIMITATIONS)
    s.images["closest_pairs"] = (pairs, 8, "closest pairs, left: sample, right: its nearest training image")
    return s
