"""Section 2, quality: FD on the oracle's features, per-condition accuracy, k-NN precision/recall, a sample grid."""

from __future__ import annotations

import torch

from guardgen.audit._base import Section, not_run

__all__ = ["quality_section"]

LIMITATIONS = [
    "FD is computed on the oracle classifier's pooled features (not Inception or DINOv2): comparable only to FDs taken "
    "with the same features and sample sizes; small sample counts bias FD upwards.",
    "Conditional accuracy trusts the oracle; an oracle error counts as a model error.",
    "A collapsed generator can score good FD and accuracy; read recall beside them.",
]


def quality_section(subject, pool: dict, oracle, real, *, forgotten_classes=(), features=None) -> Section:
    """pool: {"images": (N, C, H, W), "conditions": N conditions, "classes": (N,) oracle class or -1}.

    ``real``: held-out real images (ImageSet) for FD; ``forgotten_classes`` are left out of FD (an
    unlearned run is meant to draw them differently).
    """
    from guardgen.metrics import fd_from_features, precision_recall_knn
    from guardgen.audit._base import FeatureCache
    from guardgen.utils import predict_logits

    images, classes = pool["images"], pool["classes"]
    grid = _grid(images, pool["conditions"])
    if oracle is None:
        s = not_run("quality", "no oracle classifier (--oracle) to score samples with", LIMITATIONS)
        s.images["samples"] = (grid[0], grid[1], "samples, one row per condition")
        return s
    features = features or FeatureCache(oracle)
    pred = predict_logits(oracle, images).argmax(1)
    figures = {"samples": len(images), "samples_per_second": round(pool["samples_per_second"], 2),
               "oracle": pool.get("oracle_spec")}
    rows = []
    known = classes >= 0
    if subject.cond is not None and known.any():
        keep = known & ~torch.isin(classes, torch.tensor(list(forgotten_classes), dtype=torch.long))
        figures["conditional_accuracy"] = float((pred[keep] == classes[keep]).float().mean()) if keep.any() else None
        for c in dict.fromkeys(pool["conditions"]):
            idx = [i for i, x in enumerate(pool["conditions"]) if x == c]
            k = int(classes[idx[0]])
            acc = float((pred[idx] == k).float().mean()) if k >= 0 else None
            rows.append({"condition": str(c), "oracle class": k if k >= 0 else "?", "accuracy": acc,
                         "forgotten": k in forgotten_classes})
    hist = torch.bincount(pred, minlength=int(pred.max()) + 1).tolist()
    figures["oracle_class_histogram"] = hist
    if real is not None and len(real) >= 2:
        fake_idx = ~torch.isin(classes, torch.tensor(list(forgotten_classes), dtype=torch.long)) if forgotten_classes else slice(None)
        f_fake = features(images)[fake_idx]
        f_real = features(real.images)
        if forgotten_classes:
            f_real = f_real[~torch.isin(real.labels, torch.tensor(list(forgotten_classes), dtype=torch.long))]
        figures["fd_oracle"] = fd_from_features(f_fake, f_real)
        figures["fd_real_split"] = _fd_real_split(f_real, len(f_fake))
        figures.update(precision_recall_knn(f_real, f_fake))
        figures["fd_reference"] = f"{len(f_real)} held-out real images" + (
            f", classes {sorted(forgotten_classes)} left out" if forgotten_classes else "")
    plots = {"oracle_classes": {"kind": "bars", "labels": [str(i) for i in range(len(hist))], "values": hist,
                                "xlabel": "oracle class of the samples", "ylabel": "count"}}
    s = Section(name="quality", figures=figures, tables={"per_condition": rows} if rows else {}, plots=plots,
                limitations=LIMITATIONS)
    s.images["samples"] = (grid[0], grid[1], "samples, one row per condition (up to 10 rows of 10)")
    return s


def _fd_real_split(f_real: torch.Tensor, n: int) -> float | None:
    """FD of n real images against the other real images: about the floor a perfect model scores at n samples."""
    from guardgen.metrics import fd_from_features

    n = min(len(f_real) // 2, n)
    if n < 2:
        return None
    perm = torch.randperm(len(f_real), generator=torch.Generator().manual_seed(0))
    return fd_from_features(f_real[perm[:n]], f_real[perm[n:]])


def _grid(images: torch.Tensor, conditions: list, per_row: int = 10, rows: int = 10):
    picked = []
    for c in list(dict.fromkeys(conditions))[:rows]:
        idx = [i for i, x in enumerate(conditions) if x == c][:per_row]
        picked += idx
    if conditions and conditions[0] is None:
        picked = list(range(min(len(images), per_row * rows)))
    return images[picked], per_row
