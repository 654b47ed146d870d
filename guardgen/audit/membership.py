"""Section 5, membership inference on a member / non-member split of real images.

- white-box: the denoising-loss attack for diffusion models (Carlini et al. 2023; score = minus the loss
  ||eps - eps_theta(x_t, t, c)||^2 averaged over several t and noise draws), or the discriminator's logit
  for a GAN (LOGAN, Hayes et al. 2019);
- black-box, for every model: GAN-Leaks (Chen et al. 2020), score = minus the distance of a real image to
  its nearest generated sample (the sample pool of the quality section).
Members: training images; non-members: held-out images of the same distribution. ROC, AUROC with a
bootstrap interval, TPR at 1% FPR.
"""

from __future__ import annotations

import numpy as np
import torch

from guardgen.audit._base import Section, not_run

__all__ = ["membership_section", "attack_figures"]

LIMITATIONS = [
    "AUROC near 0.5 says this attack fails, not that no attack succeeds (SecMI/PIA-style attacks are stronger).",
    "TPR at 1% FPR from a few hundred non-members is coarse (one non-member is 1/N of the FPR axis).",
    "Members and non-members must come from the same distribution; a shift between them inflates AUROC.",
]


def attack_figures(member_scores, nonmember_scores, seed: int = 0) -> dict:
    """Scores (higher = member) -> AUROC (+ 95% bootstrap interval), TPR at 1% FPR, ROC points for a plot."""
    from sklearn.metrics import roc_curve

    from guardgen.metrics import auroc, bootstrap_ci, tpr_at_fpr

    m, n = np.asarray(member_scores, dtype=float), np.asarray(nonmember_scores, dtype=float)
    y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    s = np.concatenate([m, n])
    fpr, tpr, _ = roc_curve(y, s)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).round().astype(int))
    lo, hi = bootstrap_ci(auroc, y, s, n_boot=200, seed=seed)
    return {"auroc": auroc(y, s), "auroc_ci95": [lo, hi], "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01),
            "members": len(m), "nonmembers": len(n), "roc": {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}}


def membership_section(subject, pool: dict, train, holdout, *, config) -> Section:
    if train is None or holdout is None:
        why = "no training data (--train-data)" if train is None else "no held-out non-member images (--holdout-data)"
        return not_run("membership", why, LIMITATIONS)
    k = min(config.mia_members, len(train), len(holdout))
    g = torch.Generator().manual_seed(config.seed)
    mi = torch.randperm(len(train), generator=g)[:k]
    ni = torch.randperm(len(holdout), generator=g)[:k]
    members, nonmembers = train.subset(mi), holdout.subset(ni)
    attacks, plots = {}, {}
    why_not = subject.loss_attack_available()
    if why_not is None:
        name = "discriminator" if subject.kind == "gan" else "denoising_loss"
        kw = dict(timesteps=config.mia_timesteps, draws=config.mia_noise_draws, seed=config.seed, batch_size=config.batch_size)
        sm = subject.membership_scores(members.images, members.labels, **kw)
        sn = subject.membership_scores(nonmembers.images, nonmembers.labels, **kw)
        attacks[name] = attack_figures(sm, sn, config.seed)
    from guardgen.audit.memorization import _sqdist

    flat = pool["images"].flatten(1)
    bm = -_sqdist(members.images.flatten(1), flat).min(1).values
    bn = -_sqdist(nonmembers.images.flatten(1), flat).min(1).values
    attacks["gan_leaks_blackbox"] = attack_figures(bm, bn, config.seed)
    best = max(attacks, key=lambda a: attacks[a]["auroc"])
    figures = {"attacks": {a: {k2: v for k2, v in f.items() if k2 != "roc"} for a, f in attacks.items()},
               "auroc": attacks[best]["auroc"], "tpr_at_1pct_fpr": max(f["tpr_at_1pct_fpr"] for f in attacks.values()),
               "strongest_attack": best, "members": k, "nonmembers": k}
    if why_not is not None:
        figures["white_box"] = f"not run: {why_not}"
    plots["roc"] = {"kind": "roc", "series": {a: f["roc"] for a, f in attacks.items()}}
    rows = [{"attack": a, "AUROC": f["auroc"], "95% CI": f"{f['auroc_ci95'][0]:.3f}-{f['auroc_ci95'][1]:.3f}",
             "TPR@1%FPR": f["tpr_at_1pct_fpr"]} for a, f in attacks.items()]
    return Section(name="membership", figures=figures, tables={"attacks": rows}, plots=plots, limitations=LIMITATIONS)
