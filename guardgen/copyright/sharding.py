"""Sharding a dataset for near access-freeness, with deduplication of the protected works.

NAF's ``safe_C`` is a model trained without access to C (Vyas et al., 2023, §3): split the data into
disjoint shards, train one model per shard, and take for each protected work C the model of a shard
that holds neither C nor any duplicate or near-duplicate of it. So the sharder first groups
near-duplicates, then places whole groups:

- near-duplicates: images whose *perceptual pixel distance* (RMS difference of the images average-pooled
  to ``size`` x ``size``, values in [0, 1]) is at most ``threshold``; groups are the connected components
  of that graph, so chains of near-duplicates stay together;
- each protected work, every image within ``threshold`` of it, and their groups, go to one shard
  (protected works round-robin over the shards); the other groups are spread to balance shard sizes.

``check_shards`` refuses shards that share an image or that both hold a (near-)copy of a protected work,
naming the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from guardgen.data import ImageSet
from guardgen.errors import GuardgenError

__all__ = ["ShardPlan", "pixel_distance", "nn_distance", "near_duplicate_groups", "shard_dataset", "check_shards",
           "plan_given_shards"]


def _pool(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """(N, C, H, W) -> (N, D) flattened, average-pooled to size x size (None: full resolution)."""
    x = images.float()
    if size is not None and x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


def pixel_distance(a: torch.Tensor, b: torch.Tensor, size: int | None = None, chunk: int = 2048) -> torch.Tensor:
    """RMS pixel distance between every image of ``a`` (N, C, H, W) and of ``b`` (M, C, H, W) -> (N, M).

    ``size`` average-pools both to size x size first (a blur that makes the distance perceptual: robust
    to pixel noise and sub-pixel shifts). Images in [0, 1]; 0 means identical.
    """
    fa, fb = _pool(a, size), _pool(b, size)
    d = fa.shape[1]
    rows = [torch.cdist(fa[i : i + chunk], fb) for i in range(0, len(fa), chunk)]
    return (torch.cat(rows) if rows else torch.empty(0, len(fb))) / d**0.5


def nn_distance(samples: torch.Tensor, references: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-reference RMS pixel distance of each sample: (N, C, H, W), (M, C, H, W) -> values (N,), indices (N,)."""
    return pixel_distance(samples, references, size).min(1)


def near_duplicate_groups(images: torch.Tensor, threshold: float, size: int = 8) -> torch.Tensor:
    """Group ids (N,) of the connected components of {i ~ j : pixel_distance(i, j) <= threshold}."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(images)
    rows, cols = [], []
    for i in range(0, n, 1024):
        close = (pixel_distance(images[i : i + 1024], images, size) <= threshold).nonzero()
        rows.append(close[:, 0] + i)
        cols.append(close[:, 1])
    r, c = torch.cat(rows).numpy(), torch.cat(cols).numpy()
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    return torch.from_numpy(connected_components(graph, directed=False)[1].astype(np.int64))


@dataclass
class ShardPlan:
    """Where every image goes: ``assignment`` (N,) shard ids, ``groups`` (N,) near-duplicate group ids,
    and per protected work ``protected_shard`` (P,) and ``protected_members`` (indices of its copies)."""

    assignment: torch.Tensor
    groups: torch.Tensor
    protected_shard: torch.Tensor
    protected_members: list[list[int]] = field(default_factory=list)
    n_shards: int = 2
    threshold: float = 0.05
    size: int = 8

    def shard(self, data: ImageSet, i: int) -> ImageSet:
        out = data.subset(self.assignment == i)
        out.name = f"{data.name or 'data'}-shard{i}"
        return out

    def summary(self) -> dict:
        return {"n_shards": self.n_shards, "threshold": self.threshold, "size": self.size,
                "shard_sizes": torch.bincount(self.assignment, minlength=self.n_shards).tolist(),
                "near_duplicate_groups": int(self.groups.unique().numel()),
                "protected": [{"work": j, "shard": int(s), "copies_in_data": len(m)}
                              for j, (s, m) in enumerate(zip(self.protected_shard.tolist(), self.protected_members))]}


def _protected_members(images, protected, threshold, size, groups) -> list[torch.Tensor]:
    """Indices of the images within ``threshold`` of each protected work, closed under near-duplicate groups."""
    close = pixel_distance(protected, images, size) <= threshold  # (P, N)
    return [torch.isin(groups, groups[row]).nonzero().flatten() for row in close]


def _owners(members: list[torch.Tensor]) -> list[int]:
    """Protected works that share a copy must share a shard, and so must chains of them (A shares with C, C with B):
    the connected components of "shares a copy", numbered in order of their first work."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = [(a, b) for a in range(len(members)) for b in range(a) if torch.isin(members[a], members[b]).any()]
    rows, cols = [a for a, _ in pairs], [b for _, b in pairs]
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (rows, cols)), shape=(len(members), len(members)))
    return connected_components(graph, directed=False)[1].tolist()


def shard_dataset(data: ImageSet, protected: torch.Tensor, *, n_shards: int = 2, threshold: float = 0.05, size: int = 8,
                  seed: int = 0) -> ShardPlan:
    """Split ``data`` into ``n_shards`` disjoint shards with each protected work (P, C, H, W) and all its
    near-duplicates in exactly one shard; the rest is balanced by a seeded greedy placement of groups."""
    if n_shards < 2:
        raise GuardgenError(f"n_shards={n_shards}: NAF needs at least 2 shards")
    if len(protected) == 0:
        raise GuardgenError("no protected works given; pass at least one image to protect")
    if protected.shape[1:] != data.images.shape[1:]:
        raise GuardgenError(f"protected works are {tuple(protected.shape[1:])}, the data {tuple(data.images.shape[1:])}; "
                            "resize them to the data's resolution")
    groups = near_duplicate_groups(data.images, threshold, size)
    members = _protected_members(data.images, protected, threshold, size, groups)
    owner = _owners(members)
    assignment = torch.full((len(data),), -1, dtype=torch.long)
    sizes = torch.zeros(n_shards, dtype=torch.long)
    protected_shard = torch.empty(len(protected), dtype=torch.long)
    for j in range(len(protected)):
        protected_shard[j] = owner[j] % n_shards
        assignment[members[j]] = protected_shard[j]
    for s in range(n_shards):
        sizes[s] = (assignment == s).sum()
    rest = assignment < 0
    gids, counts = groups[rest].unique(return_counts=True)
    order = torch.randperm(len(gids), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(counts[order], descending=True, stable=True)]  # big groups first, ties seeded
    for g, c in zip(gids[order].tolist(), counts[order].tolist()):
        s = int(torch.argmin(sizes))
        assignment[groups == g] = s
        sizes[s] += c
    return ShardPlan(assignment=assignment, groups=groups, protected_shard=protected_shard,
                     protected_members=[m.tolist() for m in members], n_shards=n_shards, threshold=threshold, size=size)


def _names(idx: torch.Tensor, limit: int = 5) -> str:
    idx = idx.tolist()
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(str(i) for i in idx[:limit]) + more


def check_shards(shards: list[torch.Tensor], protected: torch.Tensor, *, threshold: float = 0.05, size: int = 8,
                 names: list[str] | None = None) -> None:
    """Refuse (one-line ``GuardgenError``) shards (each (N_i, C, H, W)) that share an image, or where a
    protected work (P, C, H, W) has a copy or near-duplicate in more than one shard."""
    names = names or [f"shard {i}" for i in range(len(shards))]
    if len(shards) < 2:
        raise GuardgenError("NAF needs at least 2 shards")
    for a in range(len(shards)):
        for b in range(a):
            same = (pixel_distance(shards[a], shards[b]) <= 1e-6).nonzero()
            if len(same):
                raise GuardgenError(f"shards are not disjoint: {len(same)} image(s) in both {names[b]} and {names[a]} "
                                    f"(e.g. {names[b]} image {int(same[0, 1])} = {names[a]} image {int(same[0, 0])}); "
                                    "deduplicate before sharding")
    for j, work in enumerate(protected):
        found = [(names[i], (pixel_distance(work[None], s, size)[0] <= threshold).nonzero().flatten())
                 for i, s in enumerate(shards)]
        found = [(n, idx) for n, idx in found if len(idx)]
        if len(found) > 1:
            where = "; ".join(f"{n} images {_names(idx)}" for n, idx in found)
            raise GuardgenError(f"protected work {j} has (near-)duplicates in {len(found)} shards ({where}); "
                                "a protected work and all its copies must be in one shard")


def plan_given_shards(parts: list[ImageSet], protected: torch.Tensor, *, threshold: float = 0.05, size: int = 8,
                      names: list[str] | None = None) -> tuple[ImageSet, ShardPlan]:
    """Shards made elsewhere: check them, then return them concatenated with the plan that splits them back."""
    check_shards([s.images for s in parts], protected, threshold=threshold, size=size, names=names)
    assignment = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(parts)])
    data = ImageSet(torch.cat([s.images for s in parts]), torch.cat([s.labels for s in parts]), parts[0].class_names,
                    "given-shards")
    shard_of, members = [], []
    for work in protected:
        close = (pixel_distance(work[None], data.images, size)[0] <= threshold).nonzero().flatten()
        shard_of.append(int(assignment[close[0]]) if len(close) else len(shard_of) % len(parts))
        members.append(close.tolist())
    plan = ShardPlan(assignment=assignment, groups=torch.arange(len(data)), protected_shard=torch.tensor(shard_of),
                     protected_members=members, n_shards=len(parts), threshold=threshold, size=size)
    return data, plan
