"""Transductive novelty of an unlabelled pool: positive-unlabelled (PU) learning against the known sources.

Katz-Samuels, Nakhleh, Nowak and Li, "Training OOD detectors in their natural habitats" (ICML 2022) learn an
OOD detector from "wild" unlabelled data, a mixture of in-distribution and novel images, instead of from the
labelled data alone. Here the wild data is the discovery pool: a multinomial logistic regression is fitted on
the known classes (the seen sources and the clusters discovered so far) plus one extra *pool* class holding
the unlabelled images. A pool image from a known source cannot be told apart from that source's labelled
images, so the regression gives it a low pool probability; an image from an unseen source is only explained
by the pool class. The pool is cross-fitted (``folds``): each image is scored by a regression that did not
see it, otherwise the regression would memorise it.

Features are the images themselves, average-pooled to at most ``max_side`` pixels a side and flattened;
a linear model keeps the per-pixel statistics (faint backgrounds, stroke profiles) in which small
generators differ and which a network trained on the seen sources alone learns to ignore. With
``whitened`` (the default) they are standardised on the known images, whitened by the known classes'
pooled within-class covariance (content variation shrinks, source differences stay) and winsorised at
+-``clip``: on the zoo this lifts a 7-way linear attribution (real and six GANs, three architectures
x two seeds) from 0.893 to 0.946 with 200 labels per source. The same space clusters the rejected
images (``whiten``). On the zoo (16x16 MNIST GANs) the pool scores rank unseen images at AUROC
0.96-0.99, against at most 0.81 for the inductive scorers (max-softmax, energy, kNN, WTA) on the same
splits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError

__all__ = ["PoolNovelty"]


class PoolNovelty:
    """``cross_fit(known, labels, pool)`` -> p(pool) per pool image (cross-fitted); ``fit`` then ``score(images)``."""

    def __init__(self, *, folds: int = 2, C: float = 0.1, max_side: int = 32, max_per_class: int = 2000,
                 whitened: bool = True, clip: float | None = 3.0, shrinkage: float = 1e-3, seed: int = 0):
        if folds < 2:
            raise GuardgenError(f"cross-fitting needs at least 2 folds, got {folds}")
        self.folds, self.C, self.max_side, self.max_per_class, self.seed = folds, C, max_side, max_per_class, seed
        self.whitened, self.clip, self.shrinkage = whitened, clip, shrinkage
        self.whitener_ = None

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

    def _prepare(self, known, labels, pool):
        """(known features, their labels, pool features, whitener or None): subsampled, whitened if ``whitened``."""
        xk, yk = self._subsample(self.features(known), np.asarray(labels))
        xp = self.features(pool)
        if not self.whitened or len(xk) == 0:
            return xk, yk, xp, None
        whitener = self._whitener(xk, yk)
        return self._apply(xk, whitener, self.clip), yk, self._apply(xp, whitener, self.clip), whitener

    def _regression(self, known, labels, pool, pool_id=None):
        """Standardiser (mean, scale) and regression over the known classes + the pool class (``pool_id``,
        default one past the known labels)."""
        from sklearn.linear_model import LogisticRegression

        x = np.concatenate([known, pool])
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-6] = 1.0
        y = np.concatenate([labels, np.full(len(pool), labels.max() + 1 if pool_id is None else pool_id)])
        reg = LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced")
        reg.fit((x - mean) / scale, y)
        return mean, scale, reg

    def cross_fit(self, known: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, *, proba: bool = False,
                  pool_labels: torch.Tensor | None = None) -> torch.Tensor:
        """p(pool class) (N_pool,) for every pool image, each from a regression fitted without its fold; with
        ``proba`` the whole distribution (N_pool, K + 1): the known classes by id, the pool class last.

        ``pool_labels`` (N_pool,): a provisional class per pool image (-1: none), e.g. its discovered cluster.
        Labelled pool images of the other folds train their class; each is itself re-scored by a regression
        that never saw it, so a wrong provisional label can be corrected (cross-fitted self-training).
        """
        xk, yk, xp, _ = self._prepare(known, labels, pool)
        if len(xk) == 0 or len(xp) < self.folds:
            raise GuardgenError(f"PU novelty needs known images and at least {self.folds} pool images")
        yp = np.full(len(xp), -1) if pool_labels is None else np.asarray(pool_labels)
        pool_id = int(max(yk.max(), yp.max())) + 1
        fold = np.random.default_rng(self.seed + 1).permutation(len(xp)) % self.folds
        out = np.zeros((len(xp), pool_id + 1))
        for f in range(self.folds):
            lab, rest = (fold != f) & (yp >= 0), (fold != f) & (yp < 0)
            mean, scale, reg = self._regression(np.concatenate([xk, xp[lab]]), np.concatenate([yk, yp[lab]]), xp[rest], pool_id)
            out[np.ix_(fold == f, reg.classes_)] = reg.predict_proba((xp[fold == f] - mean) / scale)
        out = torch.from_numpy(out).float()
        return out if proba else out[:, -1]

    def _whitener(self, xk: np.ndarray, yk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean (D,), scale (D,), projection (D, D)) that whiten the known classes' pooled within-class covariance."""
        mean, scale = xk.mean(0), xk.std(0)
        scale[scale < 1e-6] = 1.0
        xs = (xk - mean) / scale
        means = {c: xs[yk == c].mean(0) for c in np.unique(yk)}
        r = xs - np.stack([means[c] for c in yk])
        cov = r.T @ r / len(r)
        cov += self.shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        w, v = np.linalg.eigh(cov)
        return mean, scale, v / np.sqrt(w)

    @staticmethod
    def _apply(x: np.ndarray, whitener, clip: float | None) -> np.ndarray:
        mean, scale, proj = whitener
        z = (x - mean) / scale @ proj
        return z if clip is None else np.clip(z, -clip, clip)

    def whiten(self, known: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> np.ndarray:
        """``images`` in the feature space whitened by the known classes' pooled within-class covariance
        (N, D): the directions along which a source's own images vary (content) are shrunk, those along
        which sources differ are kept (Fisher's criterion); a source is then a roughly spherical blob.

        Features are first standardised on the known images, so the shrinkage treats every pixel alike: the
        faint, nearly constant background pixels, where small generators differ most, are not shrunk away.
        Coordinates are then winsorised at +-``clip`` (None: not) within-class standard deviations: an
        unseen source varies more than the known ones along some directions, and its heavy tails would
        otherwise decide the k-means partition.
        """
        xk, yk = self._subsample(self.features(known), np.asarray(labels))
        return self._apply(self.features(images), self._whitener(xk, yk), self.clip)

    def fit(self, known: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor) -> "PoolNovelty":
        """One regression on all of the pool, for images that arrive later (``score``). An empty pool (every
        pool image attributed) fits the known classes alone; the pool class then has probability 0."""
        xk, yk, xp, self.whitener_ = self._prepare(known, labels, pool)
        mean, scale, reg = self._regression(xk, yk, xp)
        self.num_outputs_ = int(yk.max()) + 2
        self.mean_, self.scale_ = torch.from_numpy(mean).float(), torch.from_numpy(scale).float()
        self.coef_ = torch.from_numpy(reg.coef_).float()  # (K + 1, D), the pool class last
        self.intercept_ = torch.from_numpy(reg.intercept_).float()
        self.classes_ = torch.from_numpy(reg.classes_).long()
        return self

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """(N, max(labels) + 2) probabilities of new images under the fitted regression, the pool class last."""
        x = self.features(images)
        if self.whitener_ is not None:
            x = self._apply(x, self.whitener_, self.clip)
        x = (torch.from_numpy(x).float() - self.mean_) / self.scale_
        logits = x @ self.coef_.T + self.intercept_
        if logits.shape[1] == 1:  # two classes: scikit-learn keeps one row, for the last class
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        out = torch.zeros(len(x), self.num_outputs_)
        out[:, self.classes_] = logits.softmax(1)
        return out

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """p(pool class) (N,) of new images under the fitted regression."""
        return self.predict_proba(images)[:, -1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_,
                 "classes": self.classes_, "num_outputs": torch.tensor(self.num_outputs_)}
        if self.whitener_ is not None:
            for name, value in zip(("mean", "scale", "proj"), self.whitener_):
                state[f"whitener.{name}"] = torch.from_numpy(np.ascontiguousarray(value))
            state["whitener.clip"] = torch.tensor(float("nan") if self.clip is None else self.clip, dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> "PoolNovelty":
        self.mean_, self.scale_, self.coef_, self.intercept_ = state["mean"], state["scale"], state["coef"], state["intercept"]
        self.classes_ = state["classes"].long()
        # files written before ``num_outputs`` was kept always held the pool class, the last of ``classes``
        self.num_outputs_ = int(state["num_outputs"]) if "num_outputs" in state else int(self.classes_.max()) + 1
        self.whitener_ = None
        if "whitener.proj" in state:
            self.whitener_ = tuple(state[f"whitener.{k}"].double().numpy() for k in ("mean", "scale", "proj"))
            clip = float(state["whitener.clip"])
            self.clip = None if np.isnan(clip) else clip
        return self
