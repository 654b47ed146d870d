"""Transductive PU novelty: cross-fitted pool scores, within-class whitening, the fitted scorer, its state."""

import numpy as np
import pytest
import torch

from detectors.novelty import PoolNovelty
from guardgen.errors import GuardgenError
from guardgen.metrics import auroc


@pytest.fixture(scope="module")
def sources(make_sources):
    (x, y), (xt, yt) = make_sources(150, seed=0), make_sources(80, seed=1)
    return x[y < 3], y[y < 3], xt, yt


def test_cross_fit_scores_unseen_sources_as_novel(sources):
    x, y, pool, pool_y = sources
    novelty = PoolNovelty(seed=0).cross_fit(x, y, pool)
    assert novelty.shape == (len(pool),) and ((novelty >= 0) & (novelty <= 1)).all()
    assert auroc((pool_y >= 3).numpy().astype(int), novelty.numpy()) > 0.95
    assert novelty[pool_y < 3].mean() < 0.5 < novelty[pool_y >= 3].mean()


def test_cross_fit_distribution_attributes_known_sources(sources):
    x, y, pool, pool_y = sources
    proba = PoolNovelty(seed=0).cross_fit(x, y, pool, proba=True)
    assert proba.shape == (len(pool), 4) and torch.allclose(proba.sum(1), torch.ones(len(pool)), atol=1e-5)
    seen = pool_y < 3
    assert (proba[seen, :3].argmax(1) == pool_y[seen]).float().mean() > 0.95
    assert torch.equal(PoolNovelty(seed=0).cross_fit(x, y, pool), proba[:, -1])


def test_provisional_pool_labels_are_re_attributed_by_cross_fitting(sources):
    """Source 3's pool images carry a provisional cluster label 3, and so do ten images of known source 0 (a
    clustering mistake): the cross-fitted regression keeps source 3 in its cluster, sends the ten back to
    source 0, and still calls the unlabelled source 4 novel."""
    x, y, pool, pool_y = sources
    provisional = torch.full_like(pool_y, -1)
    provisional[pool_y == 3] = 3
    wrong = torch.nonzero(pool_y == 0).flatten()[:10]
    provisional[wrong] = 3
    proba = PoolNovelty(seed=0).cross_fit(x, y, pool, proba=True, pool_labels=provisional)
    assert proba.shape == (len(pool), 5)
    known = proba[:, :-1].argmax(1)
    assert (known[wrong] == 0).float().mean() >= 0.9
    assert (known[pool_y == 3] == 3).float().mean() > 0.9 and (proba[pool_y == 3, -1] < 0.5).float().mean() > 0.9
    assert (proba[pool_y == 4, -1] > 0.5).float().mean() > 0.9


def test_cross_fitting_does_not_memorise_the_pool(sources):
    """A pool of known-source images only: held-out scores stay low (an in-sample fit would call them novel)."""
    x, y, pool, pool_y = sources
    novelty = PoolNovelty(seed=0).cross_fit(x, y, pool[pool_y < 3])
    in_sample = PoolNovelty(seed=0).fit(x, y, pool[pool_y < 3]).score(pool[pool_y < 3])
    assert novelty.mean() < in_sample.mean()


def test_whitening_makes_the_known_within_class_covariance_the_identity(sources):
    x, y, _, _ = sources
    z = PoolNovelty(shrinkage=1e-6, clip=None).whiten(x, y, x)
    r = np.concatenate([z[(y == c).numpy()] - z[(y == c).numpy()].mean(0) for c in range(3)])
    cov = r.T @ r / len(r)
    assert np.allclose(np.diag(cov), 1.0, atol=0.05) and np.abs(cov - np.diag(np.diag(cov))).max() < 0.05


def test_whitening_separates_sources_that_differ_in_faint_background_pixels():
    """Known sources: strong content, near-constant backgrounds. Two new sources differ only by a background
    offset of 1e-3 between them, and one image in ten has a wild pixel (heavy tails). Standardised, whitened and
    winsorised coordinates split them (unstandardised or unclipped ones give NMI 0 here)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    g = torch.Generator().manual_seed(0)

    def source(n, offset):
        x = 0.2 + 1e-4 * torch.randn(n, 1, 8, 8, generator=g) + offset
        x[:, :, 2:6, 2:6] += 0.3 * torch.rand(n, 1, 4, 4, generator=g)  # content: large, shared by all sources
        return x

    known = torch.cat([source(200, 0.0), source(200, 2e-4), source(200, -2e-4)])
    labels = torch.arange(3).repeat_interleave(200)
    new = torch.cat([source(100, 5e-4), source(100, -5e-4)])
    wild = torch.randperm(200, generator=g)[:20]
    new.view(200, -1)[wild, torch.randint(0, 64, (20,), generator=g)] += 0.05
    truth = np.repeat([0, 1], 100)
    z = PoolNovelty().whiten(known, labels, new)
    assert np.abs(z).max() <= 3.0 + 1e-9
    assert normalized_mutual_info_score(truth, KMeans(2, n_init=3, random_state=0).fit_predict(z)) > 0.75
    unclipped = PoolNovelty(clip=None).whiten(known, labels, new)
    assert np.abs(unclipped).max() > 10 and np.allclose(np.clip(unclipped, -3, 3), z)


def test_fitted_scorer_and_state_round_trip(sources, make_sources):
    x, y, pool, pool_y = sources
    model = PoolNovelty(seed=0).fit(x, y, pool[pool_y >= 3][::2])
    fresh = make_sources(40, seed=2)
    scores = model.score(fresh[0])
    assert scores[fresh[1] >= 3].mean() > scores[fresh[1] < 3].mean() + 0.3
    again = PoolNovelty().load_state_dict(model.state_dict())
    assert torch.equal(again.score(fresh[0]), scores)
    proba = again.predict_proba(fresh[0])
    assert proba.shape == (len(fresh[0]), 4) and (proba[fresh[1] < 3, :3].argmax(1) == fresh[1][fresh[1] < 3]).float().mean() > 0.95


def test_empty_pool_fits_the_known_classes_alone(sources):
    """Every pool image attributed: the regression has no pool class, yet keeps its column (probability 0)."""
    x, y, pool, pool_y = sources
    model = PoolNovelty(seed=0).fit(x, y, pool[:0])
    seen = pool_y < 3
    proba = model.predict_proba(pool[seen])
    assert proba.shape == (int(seen.sum()), 4) and torch.equal(proba[:, -1], torch.zeros(int(seen.sum())))
    assert (proba[:, :3].argmax(1) == pool_y[seen]).float().mean() > 0.95
    again = PoolNovelty().load_state_dict(model.state_dict())
    assert torch.equal(again.predict_proba(pool[seen]), proba)


def test_features_pool_large_images():
    f = PoolNovelty(max_side=8).features(torch.rand(2, 3, 64, 48))
    assert f.shape == (2, 3 * 8 * 8)


def test_bad_settings(sources):
    x, y, pool, _ = sources
    with pytest.raises(GuardgenError, match="at least 2 folds"):
        PoolNovelty(folds=1)
    with pytest.raises(GuardgenError, match="pool images"):
        PoolNovelty().cross_fit(x, y, pool[:1])
