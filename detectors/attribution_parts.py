"""Parts of open-world attribution (:mod:`detectors.attribution`): the network, the winner-take-all hash,
the merge of clusters by the 1-nearest-neighbour graph of their centroids, and the discovery metrics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttributionNet", "WTAHash", "merge_clusters", "discovery_metrics"]


# ---------------------------------------------------------------------------------------------------
# network


class AttributionNet(nn.Module):
    """Backbone -> MLP embedding (``embed_dim``) -> linear classifier. Input (B, C, H, W) in [0, 1].

    ``backbone="cnn"``: a small VGG-style CNN without early downsampling (generator fingerprints are high
    frequency); any other name is created by ``timm`` (``num_classes=0``, no pretrained weights).
    """

    def __init__(self, *, in_chans: int = 1, num_classes: int = 2, backbone: str = "cnn", width: int = 16,
                 embed_dim: int = 64, dropout: float = 0.2, highpass: bool = False):
        super().__init__()
        self.config = dict(in_chans=in_chans, num_classes=num_classes, backbone=backbone, width=width,
                           embed_dim=embed_dim, dropout=dropout, highpass=highpass)
        self.highpass = highpass
        in_chans = in_chans * (2 if highpass else 1)
        if backbone == "cnn":
            w = width

            def block(c_in, c_out):
                return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

            self.backbone = nn.Sequential(*block(in_chans, w), *block(w, w), nn.MaxPool2d(2),
                                          *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                                          *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            feat = 4 * w
        else:
            from guardgen.models.classifier import create_classifier

            self.backbone = create_classifier(backbone, num_classes=0, in_chans=in_chans)
            feat = self.backbone.num_features
        self.mlp = nn.Sequential(nn.Linear(feat, 2 * embed_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(2 * embed_dim, embed_dim), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone features (B, F), embedding (B, embed_dim))."""
        x = x * 2 - 1
        if self.highpass:  # add the high-frequency residual (generator fingerprints live there) as channels
            x = torch.cat([x, (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)) * 4], dim=1)
        f = self.backbone(x)
        return f, self.mlp(f)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embed(x)))

    def grow(self, num_classes: int) -> None:
        """A head for ``num_classes`` classes keeping the rows of the classes kept (the first ones)."""
        old = self.head
        self.head = nn.Linear(old.in_features, num_classes).to(old.weight.device)
        k = min(num_classes, old.out_features)
        with torch.no_grad():
            self.head.weight[:k] = old.weight[:k]
            self.head.bias[:k] = old.bias[:k]
        self.config["num_classes"] = num_classes


# ---------------------------------------------------------------------------------------------------
# OOD: winner-take-all hash


class WTAHash:
    """Winner-take-all hash of standardised features: ``P`` permutations, argmax of the first ``K`` coordinates.

    ``codes(f)`` -> (N, P*K) one-hot floats; ``distance(a, b) = P - <a, b>`` (the number of permutations
    whose winners differ).
    """

    def __init__(self, dim: int, permutations: int = 2048, k: int = 2, seed: int = 0, perms: torch.Tensor | None = None):
        if perms is None:
            g = torch.Generator().manual_seed(seed)
            perms = torch.stack([torch.randperm(dim, generator=g)[:k] for _ in range(permutations)])
        self.perms = perms.long()
        self.P, self.K = self.perms.shape

    def codes(self, features: torch.Tensor) -> torch.Tensor:
        winners = features[:, self.perms].argmax(-1)  # (N, P)
        return F.one_hot(winners, self.K).flatten(1).float()

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.P - a @ b.T

    def mean_distance(self, codes: torch.Tensor, mean_code: torch.Tensor) -> torch.Tensor:
        """Mean distance of each code (N, P*K) to a class summarised by its mean code (P*K,) -> (N,)."""
        return self.P - codes @ mean_code


def merge_clusters(centroids: np.ndarray, connection: str = "strong", metric: str = "cosine",
                   cannot_link: np.ndarray | None = None) -> np.ndarray:
    """Component id per centroid of the directed 1-nearest-neighbour graph (scipy ``connected_components``).

    ``cannot_link`` (n, n) bool: pairs that may not be each other's neighbour (e.g. two clusters already kept
    as distinct classes: the closest pair of any set is always mutually nearest, so without it every round
    would merge two of them).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.metrics import pairwise_distances

    n = len(centroids)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    d = pairwise_distances(centroids, metric=metric)
    np.fill_diagonal(d, np.inf)
    if cannot_link is not None:
        d[np.asarray(cannot_link, dtype=bool)] = np.inf
    nn_idx = d.argmin(1)
    graph = csr_matrix((np.ones(n), (np.arange(n), nn_idx)), shape=(n, n))
    _, comp = connected_components(graph, directed=True, connection=connection)
    return comp.astype(np.int64)


def discovery_metrics(y_true, y_pred, *, unseen: list[int] | None = None) -> dict:
    """Purity, NMI and ARI (scikit-learn) of predicted ids against true sources, and sources discovered.

    ``unseen``: the true labels of the unseen sources; a source counts as discovered when it is the
    majority source of at least one predicted cluster id that no seen label maps to.
    """
    from guardgen.metrics import ari, nmi, purity

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {"purity": purity(y_true, y_pred), "nmi": nmi(y_true, y_pred), "ari": ari(y_true, y_pred)}
    if unseen is not None:
        found = set()
        for c in np.unique(y_pred):
            members = y_true[y_pred == c]
            major = np.bincount(members).argmax()
            if major in unseen:
                found.add(int(major))
        out["unseen_discovered"] = sorted(found)
        out["num_unseen_discovered"] = len(found)
    return out
