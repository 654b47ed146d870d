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


def test_cross_fitting_does_not_memorise_the_pool(sources):
    """A pool of known-source images only: held-out scores stay low (an in-sample fit would call them novel)."""
    x, y, pool, pool_y = sources
    novelty = PoolNovelty(seed=0).cross_fit(x, y, pool[pool_y < 3])
    in_sample = PoolNovelty(seed=0).fit(x, y, pool[pool_y < 3]).score(pool[pool_y < 3])
    assert novelty.mean() < in_sample.mean()


def test_whitening_makes_the_known_within_class_covariance_the_identity(sources):
    x, y, _, _ = sources
    z = PoolNovelty().whiten(x, y, x, shrinkage=1e-6)
    r = np.concatenate([z[(y == c).numpy()] - z[(y == c).numpy()].mean(0) for c in range(3)])
    cov = r.T @ r / len(r)
    assert np.allclose(np.diag(cov), 1.0, atol=0.05) and np.abs(cov - np.diag(np.diag(cov))).max() < 0.05


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


def test_features_pool_large_images():
    f = PoolNovelty(max_side=8).features(torch.rand(2, 3, 64, 48))
    assert f.shape == (2, 3 * 8 * 8)


def test_bad_settings(sources):
    x, y, pool, _ = sources
    with pytest.raises(GuardgenError, match="at least 2 folds"):
        PoolNovelty(folds=1)
    with pytest.raises(GuardgenError, match="pool images"):
        PoolNovelty().cross_fit(x, y, pool[:1])
