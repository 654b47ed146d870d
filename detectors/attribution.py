"""Open-world GAN discovery and attribution (Girish, Suri, Rambhatla and Shrivastava, ICCV 2021).

Closed-set attribution of images to known sources (real data and generators), then the paper's
iterative discovery on a pool of unlabelled images. Each round:

1. **network**: a CNN (or a timm backbone) with an MLP embedding is trained on the seen sources plus the
   clusters discovered so far (class-weighted cross-entropy, AdamW with a cosine learning-rate decay over
   each round, warm-started after the first round; on the zoo benchmark the cosine decay took closed-set
   accuracy from 0.93-0.94 to 0.97 over a constant rate);
2. **OOD**: every pool image is attributed to its predicted class only if an OOD scorer accepts it for
   that class; the rest are *undiscovered*. Scorers: the paper's winner-take-all (WTA) hash (standardised
   embeddings, ``P`` random permutations, one-hot argmax of the first ``K`` permuted coordinates;
   distance ``P - <h_a, h_b>``; an image is in-distribution for class c when its mean distance to c's
   reference codes is below the ``wta_quantile`` quantile of c's pairwise distances), and beside it
   maximum softmax probability (``msp``), ``energy`` (logsumexp of the logits) and ``knn`` (Sun et al.,
   ICML 2022: cosine similarity of the L2-normalised backbone features to the ``knn_k``-th nearest
   reference image of the predicted class) with per-class quantile thresholds; and the transductive
   ``pu`` (:mod:`detectors.novelty`, the default): a cross-fitted logistic regression of the known classes plus a
   *pool* class over the pool's pixels rejects the images that only the pool class explains
   (p(pool) >= ``pu_threshold``) and attributes the rest to its most likely known class (the network,
   trained on the seen sources, misattributes images of unseen ones with confidence). Members of the
   clusters discovered so far are re-scored the same way each round, their cluster as a provisional
   label that the other folds train on, so a seen-source image clustered by mistake returns to its
   source (cross-fitted self-training, ``pu_iterations`` passes a round, each pass's attributions the
   next one's provisional labels; on the zoo benchmark 5 folds, C = 0.03 and 3 passes took NMI from
   0.79-0.80 to 0.86-0.87); ``predict`` then uses a regression fitted on the whole pool;
3. **cluster**: k-means (scikit-learn, k-means++) of the undiscovered embeddings (with ``pu``: of the
   undiscovered images in the standardised pixel space whitened by the known classes' within-class
   covariance and winsorised, where the network's embedding, trained on the seen sources only, does not
   separate unseen ones);
4. **merge**: each centroid links to its nearest centroid; the strongly (or weakly) connected
   components of that 1-NN graph (scipy) are merged, new clusters among themselves first, then with
   the clusters discovered before (two earlier clusters never link to each other: the closest pair of
   any set is mutually nearest, so they would merge every round);
5. **refine**: one RBF SVM per cluster against the rest of the discovered set; a cluster is dropped when
   at most ``svm_min_fraction`` of its members, or at most ``svm_min_members`` members, are predicted
   positive; otherwise the members predicted negative go back to the pool;
6. the surviving clusters become new classes, and the next round retrains.

With ``pu`` the pixel regression is also the closed-set attributor (``predict``, ``predict_proba``), from
``fit`` on: a linear model on whitened pixels attributes the zoo's small GANs better than the network
(seen test images: 0.989 against 0.967 on the default split, 0.976 against 0.920 when two seeds of one
architecture are both seen). Before a pool exists nothing contrasts with the known classes, so the
network's max-softmax rejects. Pixels are average-pooled to 32 a side: for large images whose generators
differ only in high frequencies, pick a network scorer (``wta``, ``knn``, ``msp``). Default ``pu`` rather
than the paper's ``wta``: on the zoo benchmark (3 seeds) discovery reaches NMI 0.86 and purity 0.94
against 0.57 and 0.61.

Deviation (documented): reference codes and thresholds come from a held-out ``calibration_split`` of the
labelled images (0 uses the training images themselves, as the paper does), because a small network
overfits its training images. Sizes are scaled to the zoo (k = 12 rather than 500, 20 members rather
than 100).

``fit`` (labelled sources, optionally an unlabelled pool), ``discover`` (a pool), ``partial_fit`` (new
unlabelled images arriving online: one more round over the grown pool) and ``predict`` (a seen source,
a discovered cluster, or -1 for unknown). ``save_pretrained`` / ``from_pretrained``: ``config.json`` +
safetensors; the scikit-learn parts are kept as arrays, never pickled.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from detectors import DETECTORS
from detectors.attribution_parts import AttributionNet, WTAHash, discovery_metrics, merge_clusters
from guardgen.errors import GuardgenError
from guardgen.registry import (NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Range, Seed,
                               SubUnitFloat, UnitFloat, check_settings, saved_seed)
from guardgen.utils import Callback, fused, make_accelerator, prepare

__all__ = ["OpenWorldAttribution", "AttributionNet", "WTAHash", "merge_clusters", "discovery_metrics", "OOD_SCORERS"]

OOD_SCORERS = ("wta", "msp", "energy", "knn", "pu")
UNKNOWN = -1


# ---------------------------------------------------------------------------------------------------
# the method


@DETECTORS.register("openworld")
@dataclass(kw_only=True)
class OpenWorldAttribution:
    backbone: str = "cnn"
    width: PositiveInt = 16
    embed_dim: PositiveInt = 64
    dropout: SubUnitFloat = 0.2
    highpass: bool = False  # also feed the network the image minus its 3x3 local mean
    epochs: PositiveInt = 12  # first round (paper: 50)
    later_epochs: PositiveInt = 6  # later rounds, warm-started (paper: 100)
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # cosine: to 0 over each round's epochs
    weight_decay: NonNegFloat = 1e-4
    class_weighted: bool = True
    calibration_split: SubUnitFloat = 0.2  # held out of the labelled images for OOD thresholds (0: the training set)
    ood: Literal["pu", "wta", "msp", "energy", "knn"] = "pu"  # wta: the paper's
    wta_permutations: PositiveInt = 2048
    wta_k: PositiveInt = 2
    wta_quantile: UnitFloat = 0.9
    score_quantile: UnitFloat = 0.05  # msp / energy / knn: reject below this quantile of the class's calibration scores
    knn_k: PositiveInt = 10  # knn: the k-th nearest reference image of the predicted class
    pu_threshold: UnitFloat = 0.5  # pu: reject pool images whose cross-fitted p(pool) is at least this
    pu_folds: Annotated[int, Range(2)] = 5
    pu_c: PositiveFloat = 0.03  # pu: inverse L2 strength of the pool regression
    pu_iterations: PositiveInt = 3  # pu: cross-fitted self-training passes over the cluster members each round
    n_clusters: PositiveInt = 12  # k of k-means (paper: 500)
    merge: Literal["strong", "weak"] = "strong"  # connected components of the 1-NN centroid graph
    svm_min_fraction: UnitFloat = 0.5
    svm_min_members: NonNegInt = 20
    svm_c: PositiveFloat = 1.0
    rounds: PositiveInt = 3
    max_reference: PositiveInt = 400  # reference codes per class kept for WTA thresholds
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    history_: list = field(default_factory=list, init=False, repr=False)

    # ------------------------------------------------------------------ closed set

    def fit(self, images: torch.Tensor, labels, class_names: list[str] | None = None, *,
            unlabeled: torch.Tensor | None = None, callback: Callback | None = None) -> "OpenWorldAttribution":
        """Train on labelled sources: images (N, C, H, W) in [0, 1], labels (N,) in 0..S-1; then discover in
        ``unlabeled`` if given."""
        check_settings(self)
        self._check_settings()
        images, labels = _check_images(images), torch.as_tensor(labels).long().flatten()
        if len(images) != len(labels):
            raise GuardgenError(f"{len(images)} images and {len(labels)} labels; pass one label per image")
        num = int(labels.max()) + 1 if len(labels) else 0
        if num < 2 or len(torch.unique(labels)) != num:
            raise GuardgenError("attribution needs labelled images of at least 2 sources, labelled 0..S-1 without gaps")
        self.class_names_ = list(class_names) if class_names else [f"source-{i}" for i in range(num)]
        if len(self.class_names_) != num:
            raise GuardgenError(f"{len(self.class_names_)} class names for {num} sources")
        self.num_seen_ = num
        self.image_shape_ = tuple(images.shape[1:])
        g = torch.Generator().manual_seed(self.seed)
        calib = torch.zeros(len(labels), dtype=torch.bool)
        if self.calibration_split > 0:
            for c in range(num):
                idx = torch.nonzero(labels == c).flatten()
                idx = idx[torch.randperm(len(idx), generator=g)]
                calib[idx[: int(round(len(idx) * self.calibration_split))]] = True
        self.train_images_, self.train_labels_ = images[~calib], labels[~calib]
        self.calib_images_, self.calib_labels_ = (images[calib], labels[calib]) if calib.any() else (images, labels)
        self.pool_ = torch.empty(0, *self.image_shape_)
        self.pool_labels_ = torch.empty(0, dtype=torch.long)  # class id per pool image, -1 undiscovered
        self.round_ = 0
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        self.network_ = AttributionNet(in_chans=images.shape[1], num_classes=num, backbone=self.backbone,
                                       width=self.width, embed_dim=self.embed_dim, dropout=self.dropout,
                                       highpass=self.highpass)
        self._train_network(self.epochs, callback, tag="closed-set")
        self._calibrate()
        self.train_seconds_ = time.perf_counter() - t0
        if unlabeled is not None:
            self.discover(unlabeled, callback=callback)
        return self

    @property
    def num_classes_(self) -> int:
        return len(self.class_names_)

    def _check_settings(self) -> None:
        if self.knn_k < 1:
            raise GuardgenError(f"knn_k must be at least 1, got {self.knn_k}")
        if not 0 < self.pu_threshold < 1 or self.pu_folds < 2 or self.pu_c <= 0 or self.pu_iterations < 1:
            raise GuardgenError(f"pu_threshold must be in (0, 1), pu_folds at least 2, pu_c positive and pu_iterations at "
                                f"least 1, got {self.pu_threshold}, {self.pu_folds}, {self.pu_c}, {self.pu_iterations}")
        if self.n_clusters < 2:
            raise GuardgenError(f"n_clusters must be at least 2, got {self.n_clusters}")

    def _fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise GuardgenError("this attribution model is not trained yet; call fit() or load one with from_pretrained()")

    def _training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labelled training images plus the pool images in discovered clusters (their cluster's class)."""
        in_cluster = self.pool_labels_ >= self.num_seen_
        return (torch.cat([self.train_images_, self.pool_[in_cluster]]),
                torch.cat([self.train_labels_, self.pool_labels_[in_cluster]]))

    def _train_network(self, epochs: int, callback, tag: str) -> None:
        x_all, y_all = self._training_set()
        acc = make_accelerator(self.device, self.mixed_precision)
        torch.manual_seed(self.seed + self.round_)
        net = self.network_.train()
        counts = torch.bincount(y_all, minlength=self.num_classes_).float()
        weight = (counts.max() / counts.clamp_min(1)) if self.class_weighted else torch.ones_like(counts)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=fused(acc.device))
        net, opt = prepare(acc, net, opt)
        weight = weight.to(acc.device)
        n = len(y_all)
        steps_per_epoch = max(n // self.batch_size, 1)
        total = epochs * steps_per_epoch
        cosine = self.lr_schedule == "cosine"
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)) if cosine else 1.0)
        g = torch.Generator().manual_seed(self.seed * 7_919 + self.round_)
        step = 0
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(steps_per_epoch):
                idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
                x, y = x_all[idx].to(acc.device), y_all[idx].to(acc.device)
                with acc.autocast():
                    loss = F.cross_entropy(net(x).float(), y, weight=weight)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite attribution loss in round {self.round_}; lower lr")
                opt.zero_grad(set_to_none=True)
                acc.backward(loss)
                opt.step()
                schedule.step()
                step += 1
                self.history_.append({"round": self.round_, "step": step, "loss": loss.item()})
                if callback is not None:
                    callback(step, {"total": total, "loss": loss.item(), "stage": tag, "round": self.round_})
        self.network_ = acc.unwrap_model(net).cpu().eval()

    @torch.no_grad()
    def _forward(self, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embeddings (N, D), logits (N, K), L2-normalised backbone features (N, F)) on CPU."""
        net = self.network_.eval()
        device = next(net.parameters()).device
        embs, logits, feats = [], [], []
        for i in range(0, len(images), batch_size):
            f, e = net.features(images[i:i + batch_size].to(device))
            embs.append(e.float().cpu())
            logits.append(net.head(e).float().cpu())
            feats.append(F.normalize(f.float(), dim=1).cpu())
        if not embs:
            return torch.empty(0, self.embed_dim), torch.empty(0, self.num_classes_), torch.empty(0, 0)
        return torch.cat(embs), torch.cat(logits), torch.cat(feats)

    def _standardise(self, emb: torch.Tensor) -> torch.Tensor:
        return (emb - self.feat_mean_) / self.feat_std_

    def _reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels that define each class for the OOD scorer: calibration images of seen
        sources, members of discovered clusters."""
        in_cluster = self.pool_labels_ >= self.num_seen_
        return (torch.cat([self.calib_images_, self.pool_[in_cluster]]),
                torch.cat([self.calib_labels_, self.pool_labels_[in_cluster]]))

    def _calibrate(self) -> None:
        """Feature statistics, WTA reference codes and per-class thresholds of every scorer."""
        x_train, _ = self._training_set()
        emb_train = self._forward(x_train)[0]
        self.feat_mean_, self.feat_std_ = emb_train.mean(0), emb_train.std(0).clamp_min(1e-6)
        x_ref, y_ref = self._reference()
        emb, logits, feats = self._forward(x_ref)
        z = self._standardise(emb)
        if not hasattr(self, "wta_") or self.wta_.perms.shape[1] != self.wta_k:
            self.wta_ = WTAHash(self.embed_dim, self.wta_permutations, self.wta_k, seed=self.seed)
        codes = self.wta_.codes(z)
        K = self.num_classes_
        self.mean_codes_ = torch.zeros(K, codes.shape[1])
        self.wta_threshold_ = torch.zeros(K)
        self.msp_threshold_, self.energy_threshold_ = torch.zeros(K), torch.zeros(K)
        self.centroids_ = torch.zeros(K, emb.shape[1])
        g = torch.Generator().manual_seed(self.seed + 17)
        probs, energy = logits.softmax(1), torch.logsumexp(logits, 1)
        self.knn_threshold_ = torch.zeros(K)
        knn_refs, knn_labels = [], []
        for c in range(K):
            idx = torch.nonzero(y_ref == c).flatten()
            if len(idx) == 0:
                continue
            sub = idx[torch.randperm(len(idx), generator=g)[: self.max_reference]]
            self.mean_codes_[c] = codes[sub].mean(0)
            self.centroids_[c] = F.normalize(z[idx], dim=1).mean(0)
            d = self.wta_.pairwise(codes[sub], codes[sub])
            iu = torch.triu_indices(len(sub), len(sub), 1)
            pair = d[iu[0], iu[1]]
            self.wta_threshold_[c] = torch.quantile(pair, self.wta_quantile) if len(pair) else float(self.wta_.P)
            self.msp_threshold_[c] = torch.quantile(probs[idx, c], self.score_quantile)
            self.energy_threshold_[c] = torch.quantile(energy[idx], self.score_quantile)
            # knn: each reference image's k-th neighbour among the others (leave-one-out)
            refs = feats[sub]
            k = min(self.knn_k, max(len(sub) - 1, 1))
            own = (refs @ refs.T).fill_diagonal_(-2.0) if len(sub) > 1 else refs @ refs.T
            self.knn_threshold_[c] = torch.quantile(own.topk(k, dim=1).values[:, -1], self.score_quantile)
            knn_refs.append(refs)
            knn_labels.append(torch.full((len(sub),), c))
        self.knn_refs_, self.knn_labels_ = torch.cat(knn_refs), torch.cat(knn_labels)
        # pu: one regression with the pool images left undiscovered as the pool class, for images that arrive later
        # (without a pool class when every pool image is attributed)
        self.novelty_ = None
        if self.ood == "pu":
            self.novelty_ = self._pu().fit(*self._known(), self.pool_[self.pool_labels_ == UNKNOWN])

    def _pu(self, iteration: int = 0):
        from detectors.novelty import PoolNovelty

        return PoolNovelty(folds=self.pu_folds, C=self.pu_c, seed=self.seed + self.round_ + 1_009 * iteration)

    def _known(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labelled images of the known classes for the pu scorer: all labelled images, cluster members."""
        in_cluster = self.pool_labels_ >= self.num_seen_
        return (torch.cat([self.train_images_, self.calib_images_, self.pool_[in_cluster]]),
                torch.cat([self.train_labels_, self.calib_labels_, self.pool_labels_[in_cluster]]))

    def novelty_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Cross-fitted p(pool) (N,) of ``images`` taken as an unlabelled pool against the known classes
        (the ``pu`` scorer's statistic; higher = more novel). Does not change the model."""
        self._fitted()
        return self._pu().cross_fit(*self._known(), self._check_shape(_check_images(images)))

    def _knn_score(self, feats: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image's features (N, F) to its k-th nearest reference of class ``pred`` (N,)."""
        sim = feats @ self.knn_refs_.T  # (N, R)
        sim = sim.masked_fill(self.knn_labels_[None, :] != pred[:, None], -2.0)
        k = min(self.knn_k, len(self.knn_refs_))
        return sim.topk(k, dim=1).values[:, -1]

    def _accept(self, emb: torch.Tensor, logits: torch.Tensor, feats: torch.Tensor,
                images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted class (N,), accepted (N,) bool) with the configured OOD scorer."""
        pred = logits.argmax(1)
        ood = self.ood
        if ood == "pu" and (images is None or self.novelty_ is None):
            ood = "msp"  # a model saved without its regression
        if ood == "pu":
            proba = self.novelty_.predict_proba(images)
            if len(self.pool_):
                ok = proba[:, -1] < self.pu_threshold
            else:  # no pool to contrast with yet: the network's max-softmax rejects
                ok = logits.softmax(1).max(1).values >= self.msp_threshold_[pred]
            pred = proba[:, :-1].argmax(1)
        elif ood == "knn":
            ok = self._knn_score(feats, pred) >= self.knn_threshold_[pred]
        elif ood == "wta":
            codes = self.wta_.codes(self._standardise(emb))
            dist = self.wta_.P - (codes @ self.mean_codes_.T)  # (N, K) mean distance to each class
            ok = dist.gather(1, pred[:, None])[:, 0] < self.wta_threshold_[pred]
        elif ood == "msp":
            ok = logits.softmax(1).gather(1, pred[:, None])[:, 0] >= self.msp_threshold_[pred]
        else:
            ok = torch.logsumexp(logits, 1) >= self.energy_threshold_[pred]
        return pred, ok

    def ood_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every scorer's in-distribution score for the predicted class (higher = more in-distribution)."""
        self._fitted()
        emb, logits, feats = self._forward(_check_images(images))
        pred = logits.argmax(1)
        codes = self.wta_.codes(self._standardise(emb))
        dist = self.wta_.P - (codes @ self.mean_codes_.T)
        return {"wta": -dist.gather(1, pred[:, None])[:, 0] + self.wta_threshold_[pred],
                "msp": logits.softmax(1).max(1).values, "energy": torch.logsumexp(logits, 1),
                "knn": self._knn_score(feats, pred), "pred": pred}

    # ------------------------------------------------------------------ discovery

    def discover(self, images: torch.Tensor, *, rounds: int | None = None, callback: Callback | None = None) -> "OpenWorldAttribution":
        """Iterative discovery on a pool of unlabelled images (replaces the current pool)."""
        self._fitted()
        images = self._check_shape(_check_images(images))
        if len(images) < self.n_clusters:
            raise GuardgenError(f"{len(images)} images to discover sources in, fewer than the {self.n_clusters} clusters "
                                "requested; pass more images or lower n_clusters (--clusters)")
        self.pool_ = images
        self.pool_labels_ = torch.full((len(images),), UNKNOWN, dtype=torch.long)
        for _ in range(self.rounds if rounds is None else rounds):
            self._round(callback)
        return self

    def partial_fit(self, images: torch.Tensor, *, rounds: int = 1, callback: Callback | None = None) -> "OpenWorldAttribution":
        """New unlabelled images arrive: add them to the pool and run ``rounds`` more discovery rounds."""
        self._fitted()
        images = self._check_shape(_check_images(images))
        self.pool_ = torch.cat([self.pool_, images])
        self.pool_labels_ = torch.cat([self.pool_labels_, torch.full((len(images),), UNKNOWN, dtype=torch.long)])
        if len(self.pool_) < 2:
            raise GuardgenError("partial_fit needs at least 2 images in the pool")
        for _ in range(rounds):
            self._round(callback)
        return self

    def _check_shape(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != self.image_shape_:
            raise GuardgenError(f"images of shape {tuple(images.shape[1:])}; this model was trained on {self.image_shape_}")
        return images

    def _round(self, callback) -> None:
        from sklearn.cluster import KMeans

        self.round_ += 1
        rec = {"round": self.round_}
        if self.ood == "pu":  # transductive: every pool image cross-fitted against the known classes
            known, clustered = self._known(), self.pool_labels_ >= self.num_seen_
            seen = (torch.cat([self.train_images_, self.calib_images_]), torch.cat([self.train_labels_, self.calib_labels_]))
            current = self.pool_labels_
            for it in range(self.pu_iterations if clustered.any() else 1):
                provisional = torch.where(current >= self.num_seen_, current, torch.full_like(current, UNKNOWN))
                proba = self._pu(it).cross_fit(*seen, self.pool_, proba=True, pool_labels=provisional)
                novelty = proba[:, -1]
                ok = novelty < self.pu_threshold
                pred = proba[:, :-1].argmax(1)  # the regression attributes the accepted ones, re-attributes cluster members
                current = torch.where(ok, pred, torch.full_like(pred, UNKNOWN))
            rec["pool_novelty_mean"] = float(novelty[~clustered].mean()) if (~clustered).any() else 0.0
            rec["cluster_members_moved"] = int((clustered & (current != self.pool_labels_)).sum())
            # cluster in the pixel space whitened by the known classes' within-class scatter
            z = self._pu().whiten(*known, self.pool_)
        else:  # OOD over the whole pool with the current network and classes; cluster its embeddings
            emb, logits, feats = self._forward(self.pool_)
            pred, ok = self._accept(emb, logits, feats)
            z = F.normalize(self._standardise(emb), dim=1).numpy()
        labels = torch.where(ok, pred, torch.full_like(pred, UNKNOWN))
        undiscovered = torch.nonzero(~ok).flatten()
        rec["accepted"] = int(ok.sum())
        rec["undiscovered"] = len(undiscovered)
        k = min(self.n_clusters, len(undiscovered) // max(self.svm_min_members // 2, 2))
        old = [c for c in range(self.num_seen_, self.num_classes_)]
        if k >= 2:
            km = KMeans(n_clusters=k, n_init=3, random_state=self.seed + self.round_).fit(z[undiscovered.numpy()])
            new_assign = km.labels_
            if len(np.unique(new_assign)) < 2:  # collapsed: rerun once with another seed (as the paper does)
                km = KMeans(n_clusters=k, n_init=3, random_state=self.seed + 1000 + self.round_).fit(z[undiscovered.numpy()])
                new_assign = km.labels_
            # merge new clusters among themselves
            comp = merge_clusters(km.cluster_centers_, self.merge)
            new_assign = comp[new_assign]
            n_new = int(new_assign.max()) + 1
            # then with the discovered clusters (centroids of their accepted members)
            cents, owners = [], []
            for c in old:
                m = (labels == c).numpy()
                if m.any():
                    cents.append(z[m].mean(0))
                    owners.append(("old", c))
            for j in range(n_new):
                cents.append(z[undiscovered.numpy()[new_assign == j]].mean(0))
                owners.append(("new", j))
            is_old = np.array([kind == "old" for kind, _ in owners])
            comp = merge_clusters(np.stack(cents), self.merge, cannot_link=np.outer(is_old, is_old))
            # a component's id: its discovered cluster if it holds one, else a fresh id
            comp_class: dict[int, int] = {}
            for (kind, c), cc in zip(owners, comp):
                if kind == "old":
                    comp_class.setdefault(int(cc), c)
            fresh = self.num_classes_
            for (kind, c), cc in zip(owners, comp):
                if int(cc) not in comp_class:
                    comp_class[int(cc)] = fresh
                    fresh += 1
            relabel = {c: comp_class[int(cc)] for (kind, c), cc in zip(owners, comp) if kind == "old"}
            labels = torch.tensor([relabel.get(int(v), int(v)) for v in labels.tolist()])
            for (kind, j), cc in zip(owners, comp):
                if kind == "new":
                    labels[undiscovered[torch.from_numpy(new_assign == j)]] = comp_class[int(cc)]
            rec["kmeans_k"] = k
        # refine with one SVM per discovered cluster
        labels = self._refine(z, labels)
        # renumber: seen classes keep 0..S-1, surviving clusters follow in order
        kept = sorted(int(c) for c in torch.unique(labels).tolist() if c >= self.num_seen_)
        mapping = {c: self.num_seen_ + i for i, c in enumerate(kept)}
        labels = torch.tensor([mapping.get(int(v), int(v)) for v in labels.tolist()], dtype=torch.long)
        # seen-class acceptances stay attributed; they are not training data for the network
        self.pool_labels_ = labels
        self.class_names_ = self.class_names_[: self.num_seen_] + [f"cluster-{i}" for i in range(len(kept))]
        rec["clusters"] = len(kept)
        rec["discovered"] = int((labels >= self.num_seen_).sum())
        self.history_.append(rec)
        # retrain with the discovered clusters as new classes
        self.network_.grow(self.num_classes_)
        self._train_network(self.later_epochs, callback, tag=f"round {self.round_}")
        self._calibrate()

    def _refine(self, z: np.ndarray, labels: torch.Tensor) -> torch.Tensor:
        from sklearn.svm import SVC

        labels = labels.clone()
        disc = torch.nonzero(labels >= self.num_seen_).flatten()
        clusters = sorted(set(labels[disc].tolist()))
        if not clusters:
            return labels
        if len(clusters) == 1:  # nothing to contrast with: keep it if it is large enough
            if len(disc) <= self.svm_min_members:
                labels[disc] = UNKNOWN
            return labels
        zd, yd = z[disc.numpy()], labels[disc].numpy()
        for c in clusters:
            pos = yd == c
            svm = SVC(kernel="rbf", C=self.svm_c, gamma="scale", class_weight="balanced", random_state=self.seed)
            svm.fit(zd, pos.astype(int))
            hit = svm.predict(zd[pos]).astype(bool)
            members = disc[torch.from_numpy(pos)]
            if hit.mean() <= self.svm_min_fraction or hit.sum() <= self.svm_min_members:
                labels[members] = UNKNOWN
            else:
                labels[members[torch.from_numpy(~hit)]] = UNKNOWN
        return labels

    # ------------------------------------------------------------------ prediction

    def predict(self, images: torch.Tensor, *, assign_unknown: bool = False) -> torch.Tensor:
        """Class id per image (N,): 0..S-1 a seen source, S.. a discovered cluster, -1 unknown.

        ``assign_unknown`` gives each unknown image its nearest class centroid (cosine), as the paper's
        full-set metrics do.
        """
        self._fitted()
        images = self._check_shape(_check_images(images))
        emb, logits, feats = self._forward(images)
        pred, ok = self._accept(emb, logits, feats, images)
        out = torch.where(ok, pred, torch.full_like(pred, UNKNOWN))
        if assign_unknown and (~ok).any():
            if self._regression_attributes():  # the regression's most likely class
                out[~ok] = pred[~ok]
            else:
                z = F.normalize(self._standardise(emb[~ok]), dim=1)
                out[~ok] = (z @ F.normalize(self.centroids_, dim=1).T).argmax(1)
        return out

    def _regression_attributes(self) -> bool:
        """With ``pu`` the pixel regression, not the network, attributes images (closed set included)."""
        return self.ood == "pu" and self.novelty_ is not None

    def predict_names(self, images: torch.Tensor) -> list[str]:
        return [self.class_names_[i] if i >= 0 else "unknown" for i in self.predict(images).tolist()]

    def predict_proba(self, images: torch.Tensor, *, network: bool = False) -> torch.Tensor:
        """Closed-set distribution over the seen sources and discovered clusters (N, K): the network's softmax,
        or with ``pu`` the pixel regression's, renormalised without its pool class (``network``: the
        network's whatever the scorer)."""
        self._fitted()
        images = self._check_shape(_check_images(images))
        if self._regression_attributes() and not network:
            proba = self.novelty_.predict_proba(images)[:, :-1]
            return proba / proba.sum(1, keepdim=True).clamp_min(1e-12)
        return self._forward(images)[1].softmax(1)

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | Path, *, keep_data: bool = True, extra: dict | None = None) -> Path:
        """``config.json`` + ``model.safetensors`` (network) + ``ood.safetensors`` (WTA permutations, reference
        codes, thresholds, feature statistics, centroids) [+ ``data.safetensors``: labelled and pool images as
        uint8, so ``partial_fit`` can continue after loading]."""
        from guardgen import __version__
        from guardgen.checkpoint import save_checkpoint

        self._fitted()
        config = {"_class": type(self).__name__, "_guardgen_version": __version__, "detector": asdict(self),
                  "network": self.network_.config, "class_names": self.class_names_, "num_seen": self.num_seen_,
                  "image_shape": list(self.image_shape_), "round": self.round_,
                  "history": [h for h in self.history_ if "loss" not in h], **(extra or {})}
        ood = {"perms": self.wta_.perms, "mean_codes": self.mean_codes_, "wta_threshold": self.wta_threshold_,
               "msp_threshold": self.msp_threshold_, "energy_threshold": self.energy_threshold_,
               "knn_refs": self.knn_refs_, "knn_labels": self.knn_labels_, "knn_threshold": self.knn_threshold_,
               "feat_mean": self.feat_mean_, "feat_std": self.feat_std_, "centroids": self.centroids_}
        weights = {"model": self.network_.state_dict(), "ood": ood}
        if self.novelty_ is not None:
            weights["novelty"] = self.novelty_.state_dict()
        if keep_data:
            q = lambda x: (x * 255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
            weights["data"] = {"train_images": q(self.train_images_), "train_labels": self.train_labels_,
                               "calib_images": q(self.calib_images_), "calib_labels": self.calib_labels_,
                               "pool_images": q(self.pool_), "pool_labels": self.pool_labels_}
        return save_checkpoint(folder, config, weights)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str = "cpu") -> "OpenWorldAttribution":
        from guardgen.checkpoint import load_checkpoint, load_json, mismatch

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise GuardgenError(f"{folder}: not an attribution model folder (no config.json); train one with "
                                "`guardgen attribute fit`")
        config = load_json(folder / "config.json")
        if not isinstance(config, dict) or config.get("_class") != cls.__name__:
            raise GuardgenError(f"{folder}: config.json is not a guardgen open-world attribution model's")
        _, weights = load_checkpoint(folder, data=("data",))
        for name in ("model", "ood"):
            if name not in weights:
                raise GuardgenError(f"{folder}: no {name}.safetensors beside config.json")
        try:  # a hand-edited or damaged folder: one line, not a traceback from deep inside
            known = set(cls.__dataclass_fields__)
            self = cls(**{k: (tuple(v) if isinstance(v, list) else saved_seed(v) if k == "seed" else v)
                          for k, v in config["detector"].items() if k in known and not k.endswith("_")})
            self.class_names_, self.num_seen_ = list(config["class_names"]), int(config["num_seen"])
            self.image_shape_, self.round_ = tuple(config["image_shape"]), int(config.get("round", 0))
            self.network_ = AttributionNet(**config["network"])
            try:
                self.network_.load_state_dict(weights["model"])
            except RuntimeError as err:
                raise GuardgenError(f"{folder}/model.safetensors does not fit config.json ({mismatch(err)})") from None
            ood = weights["ood"]
            self.wta_ = WTAHash(self.embed_dim, perms=ood["perms"])
            self.mean_codes_, self.wta_threshold_ = ood["mean_codes"], ood["wta_threshold"]
            self.msp_threshold_, self.energy_threshold_ = ood["msp_threshold"], ood["energy_threshold"]
            if "knn_refs" not in ood:
                raise GuardgenError(f"{folder}/ood.safetensors has no knn references; it was saved by an older guardgen, "
                                    "retrain it with `guardgen attribute fit`")
            self.knn_refs_, self.knn_labels_ = ood["knn_refs"], ood["knn_labels"].long()
            self.knn_threshold_ = ood["knn_threshold"]
            self.novelty_ = self._pu().load_state_dict(weights["novelty"]) if "novelty" in weights else None
            self.feat_mean_, self.feat_std_, self.centroids_ = ood["feat_mean"], ood["feat_std"], ood["centroids"]
            data = weights.get("data")
            shape = self.image_shape_
            if data is not None:
                f = lambda x: x.float() / 255  # noqa: E731
                self.train_images_, self.train_labels_ = f(data["train_images"]), data["train_labels"].long()
                self.calib_images_, self.calib_labels_ = f(data["calib_images"]), data["calib_labels"].long()
                self.pool_, self.pool_labels_ = f(data["pool_images"]).reshape(-1, *shape), data["pool_labels"].long()
            else:
                empty = torch.empty(0, *shape)
                self.train_images_ = self.calib_images_ = self.pool_ = empty
                self.train_labels_ = self.calib_labels_ = self.pool_labels_ = torch.empty(0, dtype=torch.long)
            check_settings(self)
            self._check_settings()
            self.history_ = list(config.get("history", []))
        except GuardgenError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise GuardgenError(f"{folder}: a damaged attribution model ({type(err).__name__}: {first}); "
                                "retrain it with `guardgen attribute fit`") from None
        self.network_.to(device).eval()  # outside the damaged-folder net: a device error is not a damaged model
        return self


def _check_images(images) -> torch.Tensor:
    images = torch.as_tensor(images).float().cpu()  # the pool, whitenings and sklearn models live on the CPU
    if images.ndim != 4:
        raise GuardgenError(f"images must be (N, C, H, W) in [0, 1], got shape {tuple(images.shape)}")
    return images
