"""The evaluation protocol of AIGC detectors: per generator, cross-generator, robustness, format shortcuts.

- Per generator: accuracy on reals and on fakes (at the detector's threshold), AUROC, AP, and TPR at a
  fixed FPR whose threshold is chosen on *held-out reals* (never on the test set), each with a
  percentile bootstrap CI.
- Cross-generator: train on one generator and test on every other (:func:`evaluate_generators` on a
  detector trained on one), and leave-one-generator-out (:func:`leave_one_generator_out`).
- Robustness grid: JPEG quality (Pillow), down-and-up resize, Gaussian blur and Gaussian noise,
  applied alike to reals and fakes (:func:`robustness_grid`).
- Format-shortcut control (DIRE issue #11, "Fake or JPEG?"): JPEG re-encode only the fakes, only the
  reals, and both the same way; a detector that keys on format swings between the first two
  (:func:`format_control`).
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError
from guardgen.metrics.detection import auroc, average_precision, bootstrap_ci, threshold_at_fpr

__all__ = ["evaluate_generators", "leave_one_generator_out", "robustness_grid", "format_control", "perturb",
           "paired_mean_auroc_difference", "DEFAULT_GRID"]

DEFAULT_GRID = (("none", 0), ("jpeg", 90), ("jpeg", 75), ("jpeg", 50), ("resize", 0.5), ("resize", 0.75),
                ("blur", 0.5), ("blur", 1.0), ("noise", 0.02), ("noise", 0.05))


def _check(images: torch.Tensor, what: str) -> torch.Tensor:
    if images is None or len(images) == 0:
        raise GuardgenError(f"{what}: no images (an empty class); each class needs at least one image")
    return images


def _acc(y, s, thr):
    return float(((s > thr).astype(np.int64) == y).mean())


def evaluate_generators(detector, real_test: torch.Tensor, fakes: dict[str, torch.Tensor], *,
                        real_heldout: torch.Tensor, fpr: float = 0.01, n_boot: int = 300, seed: int = 0,
                        scores: dict | None = None) -> dict:
    """Per-generator figures of ``detector`` (``predict_proba``) on reals vs each generator's fakes.

    ``real_heldout`` (reals not in ``real_test``) fixes the threshold for TPR at ``fpr``. Returns
    ``{"threshold_fpr", "threshold", "acc_real", "generators": {name: {...}}, "mean_auroc", "scores"}``.
    """
    _check(real_test, "test reals")
    _check(real_heldout, "held-out reals")
    if not fakes:
        raise GuardgenError("no fake images to evaluate; pass at least one generator or fake folder")
    s_held = detector.predict_proba(real_heldout).numpy()
    s_real = detector.predict_proba(real_test).numpy()
    thr_fpr = threshold_at_fpr(s_held, fpr)
    thr = float(getattr(detector, "threshold", 0.5))
    out = {"threshold": thr, "threshold_fpr": thr_fpr, "fpr_target": fpr, "n_real": len(s_real), "n_heldout": len(s_held),
           "acc_real": float((s_real <= thr).mean()), "fpr_realised": float((s_real > thr_fpr).mean()), "generators": {},
           "scores": {"real": s_real}}
    for name, images in fakes.items():
        s_fake = detector.predict_proba(_check(images, f"fakes of {name}")).numpy()
        out["scores"][name] = s_fake
        y = np.r_[np.zeros(len(s_real)), np.ones(len(s_fake))].astype(np.int64)
        s = np.r_[s_real, s_fake]
        row = {"n_fake": len(s_fake), "acc_real": float((s_real <= thr).mean()), "acc_fake": float((s_fake > thr).mean()),
               "accuracy": _acc(y, s, thr), "auroc": auroc(y, s), "ap": average_precision(y, s),
               "tpr_at_fpr": float((s_fake > thr_fpr).mean())}
        row["auroc_ci"] = bootstrap_ci(auroc, y, s, n_boot=n_boot, seed=seed)
        row["ap_ci"] = bootstrap_ci(average_precision, y, s, n_boot=n_boot, seed=seed)
        row["acc_fake_ci"] = bootstrap_ci(lambda v: float((v > thr).mean()), s_fake, n_boot=n_boot, seed=seed)
        row["tpr_at_fpr_ci"] = bootstrap_ci(lambda v: float((v > thr_fpr).mean()), s_fake, n_boot=n_boot, seed=seed)
        out["generators"][name] = row
    out["mean_auroc"] = float(np.mean([r["auroc"] for r in out["generators"].values()]))
    return out


def paired_mean_auroc_difference(scores_a: dict, scores_b: dict, names: list[str], *, n_boot: int = 500,
                                 seed: int = 0, alpha: float = 0.05) -> dict:
    """Mean-over-``names`` AUROC of B minus A, with a paired bootstrap CI (the same resampled images for both).

    ``scores_*``: ``{"real": (N_r,), name: (N_g,)}`` as in :func:`evaluate_generators`'s ``scores``.
    """
    def mean_auc(sc, idx_r, idx):
        vals = []
        for n in names:
            y = np.r_[np.zeros(len(idx_r)), np.ones(len(idx[n]))]
            vals.append(auroc(y, np.r_[sc["real"][idx_r], sc[n][idx[n]]]))
        return float(np.mean(vals))

    full_r = np.arange(len(scores_a["real"]))
    full = {n: np.arange(len(scores_a[n])) for n in names}
    diff = mean_auc(scores_b, full_r, full) - mean_auc(scores_a, full_r, full)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx_r = rng.integers(0, len(full_r), len(full_r))
        idx = {n: rng.integers(0, len(full[n]), len(full[n])) for n in names}
        boots.append(mean_auc(scores_b, idx_r, idx) - mean_auc(scores_a, idx_r, idx))
    return {"difference": diff, "ci": (float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2)))}


def leave_one_generator_out(fit: Callable[[torch.Tensor, torch.Tensor], object], real_train: torch.Tensor,
                            fakes_train: dict[str, torch.Tensor], real_test: torch.Tensor, fakes_test: dict[str, torch.Tensor],
                            *, real_heldout: torch.Tensor, fpr: float = 0.01, n_boot: int = 200, seed: int = 0) -> dict:
    """For each generator g: ``fit(real_train, fakes of all others)`` and evaluate on g's test fakes only."""
    if len(fakes_train) < 2:
        raise GuardgenError("leave-one-generator-out needs at least two generators")
    out = {}
    for name in fakes_train:
        others = torch.cat([v for k, v in fakes_train.items() if k != name])
        det = fit(real_train, others)
        res = evaluate_generators(det, real_test, {name: fakes_test[name]}, real_heldout=real_heldout, fpr=fpr,
                                  n_boot=n_boot, seed=seed)
        out[name] = res["generators"][name]
    return out


# --------------------------------------------------------------------------- perturbations


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for x in images.detach().cpu():
        arr = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        back = np.asarray(Image.open(buf).convert(img.mode), dtype=np.float32) / 255.0
        t = torch.from_numpy(back)
        out.append(t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1))
    return torch.stack(out)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-xs**2 / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def perturb(images: torch.Tensor, kind: str, level, *, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> the same perturbed: ``jpeg`` (quality), ``resize`` (factor, down then back up),
    ``blur`` (Gaussian sigma, px), ``noise`` (Gaussian std), ``none``. The result is on the CPU."""
    images = images.detach().cpu()
    if kind == "none":
        return images
    if kind == "jpeg":
        return _jpeg(images, int(level))
    if kind == "resize":
        h, w = images.shape[-2:]
        small = F.interpolate(images, size=(max(1, round(h * level)), max(1, round(w * level))), mode="bilinear",
                              antialias=True, align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    if kind == "blur":
        return _blur(images, float(level)).clamp(0, 1) if level > 0 else images
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return (images + float(level) * torch.randn(images.shape, generator=g)).clamp(0, 1)
    raise GuardgenError(f"unknown perturbation {kind!r}; use jpeg, resize, blur, noise or none")


def robustness_grid(detector, real: torch.Tensor, fake: torch.Tensor, grid=DEFAULT_GRID, *, seed: int = 0) -> list[dict]:
    """AUROC, AP and accuracies when reals and fakes get the same perturbation, for each (kind, level)."""
    _check(real, "reals")
    _check(fake, "fakes")
    thr = float(getattr(detector, "threshold", 0.5))
    rows = []
    for kind, level in grid:
        s_r = detector.predict_proba(perturb(real, kind, level, seed=seed)).numpy()
        s_f = detector.predict_proba(perturb(fake, kind, level, seed=seed + 1)).numpy()
        y, s = np.r_[np.zeros(len(s_r)), np.ones(len(s_f))], np.r_[s_r, s_f]
        rows.append({"perturbation": kind, "level": level, "auroc": auroc(y, s), "ap": average_precision(y, s),
                     "acc_real": float((s_r <= thr).mean()), "acc_fake": float((s_f > thr).mean())})
    return rows


def format_control(detector, real: torch.Tensor, fake: torch.Tensor, *, quality: int = 75) -> list[dict]:
    """AUROC/accuracies with JPEG re-encoding applied to fakes only, reals only, both, or neither."""
    rows = []
    thr = float(getattr(detector, "threshold", 0.5))
    jr, jf = _jpeg(real, quality), _jpeg(fake, quality)
    for name, r, f in [("as given", real, fake), (f"fakes JPEG q{quality}", real, jf),
                       (f"reals JPEG q{quality}", jr, fake), (f"both JPEG q{quality} (matched)", jr, jf)]:
        s_r, s_f = detector.predict_proba(r).numpy(), detector.predict_proba(f).numpy()
        y, s = np.r_[np.zeros(len(s_r)), np.ones(len(s_f))], np.r_[s_r, s_f]
        rows.append({"setting": name, "auroc": auroc(y, s), "acc_real": float((s_r <= thr).mean()),
                     "acc_fake": float((s_f > thr).mean())})
    return rows
