import numpy as np
import pytest
import torch

from guardgen import metrics as M


def test_fd_of_1d_gaussians_matches_closed_form():
    # (mu1 - mu2)^2 + (s1 - s2)^2 for 1-D Gaussians
    assert M.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(9 + 1)


def test_fd_diagonal_closed_form_and_zero_for_same_stats():
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    expected = 1.0 + sum((np.sqrt(a) - np.sqrt(b)) ** 2 for a, b in [(1, 4), (4, 1), (9, 1)])
    assert M.frechet_distance([0, 0, 0], s1, [1, 0, 0], s2) == pytest.approx(expected)
    assert M.frechet_distance([1, 2, 3], s1, [1, 2, 3], s1) == pytest.approx(0.0, abs=1e-8)


def test_fd_with_singular_covariances_matches_the_eigenvalue_form():
    # N < D gives rank-deficient covariances; Tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 10)), rng.normal(1.0, 2.0, size=(6, 10))
    (mu1, s1), (mu2, s2) = M.feature_statistics(a), M.feature_statistics(b)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert M.fd_from_features(a, b) == pytest.approx(expected, rel=1e-4)
    # disjoint supports: S1 S2 = 0, so FD = Tr S1 + Tr S2
    assert M.frechet_distance([0, 0], np.diag([1.0, 0.0]), [0, 0], np.diag([0.0, 1.0])) == pytest.approx(2.0)


def test_feature_statistics_and_shape_checks():
    mu, sigma = M.feature_statistics(torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]]))
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])
    with pytest.raises(ValueError):
        M.frechet_distance([0.0, 0.0], np.eye(2), [0.0], np.eye(1))
    with pytest.raises(ValueError):
        M.feature_statistics(np.zeros((1, 3)))


def test_fd_from_samples_approaches_the_analytic_value():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 2))
    b = rng.normal([2, 0], [1, 3], (20000, 2))
    assert M.fd_from_features(a, b) == pytest.approx(4 + 0 + 4, rel=0.05)


def test_fd_score_uses_the_feature_function():
    x = torch.zeros(64, 1, 4, 4)
    y = torch.ones(64, 1, 4, 4)
    noise = torch.randn(64, 2) * 0.1
    calls = []

    def feat(batch):
        calls.append(len(batch))
        return batch.flatten(1)[:, :2] + noise[: len(batch)]

    assert M.fd_score(x, y, feat, batch_size=32) == pytest.approx(2.0, rel=0.05)
    assert calls == [32, 32, 32, 32]


def test_precision_recall_detects_collapse():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 2))
    same = rng.normal(size=(500, 2))
    collapsed = rng.normal(scale=0.05, size=(500, 2))
    far = rng.normal(loc=50, size=(500, 2))
    assert M.precision_recall_knn(real, real) == {"precision": 1.0, "recall": 1.0}
    assert M.coverage_density(real, real)["coverage"] == 1.0
    assert M.precision_recall_knn(real, same)["recall"] > 0.9
    pr = M.precision_recall_knn(real, collapsed)
    assert pr["precision"] > 0.9 and pr["recall"] < 0.3
    assert M.precision_recall_knn(real, far) == {"precision": 0.0, "recall": 0.0}
    assert M.coverage_density(real, far)["coverage"] == 0.0
    assert M.coverage_density(real, same)["coverage"] > 0.9


def test_auroc_ap_and_tpr_on_a_hand_example():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert M.auroc(y, s) == pytest.approx(0.75)
    assert M.average_precision(y, s) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert M.tpr_at_fpr(y, s, fpr=0.0) == pytest.approx(0.5)
    assert M.tpr_at_fpr(y, s, fpr=0.49) == pytest.approx(0.5)  # never interpolated upwards
    assert M.tpr_at_fpr(y, s, fpr=0.5) == pytest.approx(1.0)
    # 5 negatives, 5 positives: with no negative above (t=0.8) 3 positives are; with one (t=0.5) 4 are
    y2 = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    s2 = [0.1, 0.2, 0.3, 0.4, 0.75, 0.5, 0.8, 0.9, 0.95, 0.35]
    assert M.tpr_at_fpr(y2, s2, fpr=0.0) == pytest.approx(0.6)
    assert M.tpr_at_fpr(y2, s2, fpr=0.19) == pytest.approx(0.6)
    assert M.tpr_at_fpr(y2, s2, fpr=0.2) == pytest.approx(0.8)


def test_threshold_at_fpr_leaves_at_most_fpr_above():
    ten = np.arange(1.0, 11.0)
    assert M.threshold_at_fpr(ten, 0.2) == 8.0  # 9 and 10 lie above
    assert M.threshold_at_fpr(ten, 0.0) == 10.0
    assert M.threshold_at_fpr(ten, 0.29) == 8.0
    with pytest.raises(ValueError):
        M.threshold_at_fpr(ten, 1.5)
    neg = np.random.default_rng(0).normal(size=1000)
    for fpr in (0.0, 0.01, 0.05, 0.2):
        t = M.threshold_at_fpr(neg, fpr)
        assert (neg > t).mean() <= fpr
        assert (neg >= t).mean() > fpr - 0.002


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(1)

    def data(n):
        y = rng.integers(0, 2, n)
        return y, y + rng.normal(0, 1.0, n)

    small, large = data(100), data(4000)
    lo, hi = M.bootstrap_ci(M.auroc, *small, n_boot=200)
    assert lo <= M.auroc(*small) <= hi
    lo2, hi2 = M.bootstrap_ci(M.auroc, *large, n_boot=200)
    assert hi2 - lo2 < (hi - lo) / 2
    assert M.bootstrap_ci(M.auroc, *small, n_boot=50, seed=3) == M.bootstrap_ci(M.auroc, *small, n_boot=50, seed=3)
    assert M.bootstrap_ci(M.auroc, *small, n_boot=50, seed=3) != M.bootstrap_ci(M.auroc, *small, n_boot=50, seed=4)


def test_bootstrap_ci_skips_resamples_with_one_class():
    # 2 positives in 20: about 12% of resamples hold no positive and AUROC is undefined there
    y = np.array([0] * 18 + [1] * 2)
    s = np.concatenate([np.linspace(0, 1, 18), [0.7, 0.95]])
    lo, hi = M.bootstrap_ci(M.auroc, y, s, n_boot=300)
    assert np.isfinite(lo) and np.isfinite(hi)
    assert 0.0 <= lo <= M.auroc(y, s) <= hi <= 1.0
    assert np.isnan(M.bootstrap_ci(M.auroc, np.zeros(5), np.arange(5.0), n_boot=20)[0])


def test_clustering_scores():
    assert M.purity([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == pytest.approx(4 / 5)
    assert M.nmi([0, 0, 1, 1], [5, 5, 3, 3]) == pytest.approx(1.0)
    assert M.ari([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert M.ari([0, 0, 1, 1], [0, 1, 0, 1]) < 0


def test_classification_metrics():
    logits = torch.tensor([[2.0, 0.1], [0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    assert M.accuracy(logits, [0, 1, 1, 1]) == pytest.approx(0.75)
    assert M.forget_rate(torch.tensor([7, 7, 1, 3]), 7) == pytest.approx(0.5)
    assert M.class_rates([1, 1, 2, 0], [1, 2, 2, 0], num_classes=3) == {0: 1.0, 1: 1.0, 2: 0.5}
    assert M.class_rates(logits, torch.tensor([0, 1, 1, 0]), num_classes=2) == {0: 0.5, 1: 0.5}
    assert M.conditional_accuracy([3, 3, 4, 5], [3, 4, 4, 4]) == pytest.approx(0.5)


def test_mia_auc_separates_members():
    member = np.random.default_rng(0).normal(0.1, 0.05, 500)
    nonmember = np.random.default_rng(1).normal(1.0, 0.05, 500)
    out = M.mia_auc(member, nonmember)
    assert out["auroc"] > 0.99 and out["tpr_at_1pct_fpr"] > 0.9
    assert M.mia_auc(member, member)["auroc"] == pytest.approx(0.5)
    assert M.mia_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4]))["auroc"] == pytest.approx(1.0)
    assert M.mia_auc([0.3, 0.4], [0.1, 0.2])["auroc"] == pytest.approx(0.0)  # lower loss = member
