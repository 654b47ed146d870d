"""Open-world attribution: synthetic sources with planted fingerprints (closed set, OOD, discovery, online, I/O)."""

import copy

import numpy as np
import pytest
import torch

from detectors import DETECTORS
from detectors.attribution import OpenWorldAttribution, WTAHash, discovery_metrics, merge_clusters
from guardgen.errors import GuardgenError

SEEN, UNSEEN = [0, 1, 2], [3, 4]
SETTINGS = dict(width=8, embed_dim=32, epochs=15, later_epochs=5, lr=3e-3, batch_size=64, n_clusters=6, rounds=2,
                svm_min_members=10, wta_permutations=512, device="cpu")


@pytest.fixture(scope="module")
def data(make_sources):
    return make_sources(120, seed=0), make_sources(80, seed=1)


@pytest.fixture(scope="module")
def fitted(data):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    (x, y), _ = data
    seen = y < 3
    model = OpenWorldAttribution(**SETTINGS, ood="wta")
    model.fit(x[seen], y[seen], ["real", "gan-a", "gan-b"])
    yield model
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fitted_pu(data):
    """The default scorer, ``pu``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    (x, y), _ = data
    model = OpenWorldAttribution(**SETTINGS).fit(x[y < 3], y[y < 3], ["real", "gan-a", "gan-b"])
    yield model
    torch.set_num_threads(n)


def test_registered():
    assert DETECTORS.get("openworld") is OpenWorldAttribution


def test_wta_hash_by_hand():
    h = WTAHash(3, perms=torch.tensor([[0, 1], [2, 0]]))
    codes = h.codes(torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 5.0]]))
    # permutation 0 compares (f0, f1): winner 0 then 1; permutation 1 compares (f2, f0): winner 1 then 0
    assert codes.tolist() == [[1, 0, 0, 1], [0, 1, 1, 0]]
    assert h.pairwise(codes, codes).tolist() == [[0, 2], [2, 0]]
    assert h.mean_distance(codes, codes.mean(0)).tolist() == [1.0, 1.0]


def test_merge_takes_connected_components_of_the_1nn_graph():
    c = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.5], [10.0, 0.0], [10.0, 1.0]])
    strong = merge_clusters(c, "strong", metric="euclidean")
    assert strong[0] == strong[1] and strong[3] == strong[4] and strong[2] != strong[1] and strong[0] != strong[3]
    weak = merge_clusters(c, "weak", metric="euclidean")
    assert weak[0] == weak[1] == weak[2] and weak[3] == weak[4] and weak[0] != weak[3]


def test_merge_never_links_a_cannot_link_pair():
    """Two clusters kept in an earlier round are the closest pair, so they would merge; cannot_link keeps them apart."""
    c = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert merge_clusters(c, "strong", metric="euclidean")[0] == merge_clusters(c, "strong", metric="euclidean")[1]
    old = np.array([True, True, False])
    comp = merge_clusters(c, "strong", metric="euclidean", cannot_link=np.outer(old, old))
    assert comp[0] != comp[1] and comp[1] == comp[2]  # the new cluster joins its nearest earlier one


def test_discovery_metrics_by_hand():
    m = discovery_metrics([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 5, 5], unseen=[2])
    assert m["purity"] == 1.0 and m["nmi"] == pytest.approx(1.0) and m["num_unseen_discovered"] == 1


def test_closed_set_accuracy_and_rejection(fitted, data):
    _, (xt, yt) = data
    seen = yt < 3
    pred = fitted.predict(xt[seen])
    assert (pred == yt[seen]).float().mean() > 0.85  # rejections count as errors
    assert (fitted.predict_proba(xt[seen]).argmax(1) == yt[seen]).float().mean() > 0.95
    assert (fitted.predict(xt[~seen]) == -1).float().mean() > 0.6  # unseen fingerprints are rejected
    assert fitted.predict_names(xt[:2]) == ["real", "real"]


@pytest.mark.parametrize("scorer", ["msp", "energy", "knn"])
def test_simpler_scorers(fitted, data, scorer):
    _, (xt, yt) = data
    model = copy.copy(fitted)
    model.ood = scorer
    seen = yt < 3
    assert (model.predict(xt[seen]) == yt[seen]).float().mean() > 0.8
    scores = model.ood_scores(xt)
    assert scores[scorer][~seen].mean() < scores[scorer][seen].mean()


def test_discovery_finds_the_planted_unseen_sources(fitted, data):
    _, (xt, yt) = data
    model = copy.deepcopy(fitted)
    model.discover(xt)
    assert model.num_classes_ > 3 and model.class_names_[3].startswith("cluster-")
    m = discovery_metrics(yt.numpy(), model.predict(xt, assign_unknown=True).numpy(), unseen=UNSEEN)
    assert m["num_unseen_discovered"] >= 1 and m["purity"] > 0.7 and m["nmi"] > 0.6
    assert (model.predict(xt[yt < 3]) == yt[yt < 3]).float().mean() > 0.7


def test_transductive_pu_discovery(fitted_pu, data, tmp_path):
    """ood="pu" (the default): the pixel regression attributes from fit on; the pool is scored by a
    cross-fitted regression against the known classes, clustered in the whitened pixel space; the planted
    unseen sources are discovered and new images keep their attribution."""
    _, (xt, yt) = data
    model = copy.deepcopy(fitted_pu)
    assert OpenWorldAttribution().ood == "pu" and model.novelty_ is not None
    seen = yt < 3
    closed = model.predict_proba(xt[seen])
    assert closed.shape == (int(seen.sum()), 3) and torch.allclose(closed.sum(1), torch.ones(len(closed)))
    assert (closed.argmax(1) == yt[seen]).float().mean() > 0.95
    assert (model.predict(xt[seen]) == yt[seen]).float().mean() > 0.8  # no pool yet: the network's max-softmax rejects
    novelty = model.novelty_scores(xt)
    assert novelty[yt >= 3].mean() > 0.5 > novelty[yt < 3].mean()
    model.discover(xt)
    rounds = [h for h in model.history_ if "accepted" in h]
    assert [h["round"] for h in rounds] == [1, 2] and all("pool_novelty_mean" in h for h in rounds)
    m = discovery_metrics(yt.numpy(), model.predict(xt, assign_unknown=True).numpy(), unseen=UNSEEN)
    assert m["num_unseen_discovered"] >= 1 and m["purity"] > 0.7 and m["nmi"] > 0.6
    # every pool image attributed: new images are still attributed by the regression, never by the network
    model.pool_labels_ = torch.where(model.pool_labels_ < 0, model.predict(xt, assign_unknown=True), model.pool_labels_)
    model._calibrate()
    proba = model.novelty_.predict_proba(xt)
    assert torch.equal(proba[:, -1], torch.zeros(len(xt))) and torch.equal(model.predict(xt), proba[:, :-1].argmax(1))
    model.save_pretrained(tmp_path / "pu")
    assert torch.equal(OpenWorldAttribution.from_pretrained(tmp_path / "pu").predict(xt), model.predict(xt))


def test_partial_fit_grows_the_pool_and_finds_a_new_source(fitted, data):
    _, (xt, yt) = data
    model = copy.deepcopy(fitted)
    model.discover(xt[yt < 3], rounds=1)
    before = model.num_classes_
    model.partial_fit(xt[yt == 3], rounds=1)
    assert len(model.pool_) == int((yt <= 3).sum())
    new = model.predict(xt[yt == 3])
    assert model.num_classes_ > before - (before > 3) and (new >= 3).float().mean() > 0.5


def test_save_load_round_trip(fitted, data, tmp_path):
    _, (xt, _) = data
    fitted.save_pretrained(tmp_path / "attr")
    assert not list(tmp_path.glob("attr/*.pkl"))
    loaded = OpenWorldAttribution.from_pretrained(tmp_path / "attr")
    assert torch.equal(loaded.predict(xt), fitted.predict(xt))
    model = copy.copy(fitted)
    model.ood = loaded.ood = "knn"  # the knn references and thresholds travel too
    assert torch.equal(loaded.predict(xt), model.predict(xt))
    assert loaded.class_names_ == fitted.class_names_
    assert len(loaded.train_images_) == len(fitted.train_images_)


def test_bad_input(fitted, data):
    _, (xt, yt) = data
    with pytest.raises(GuardgenError, match="fewer than the 6 clusters"):
        copy.deepcopy(fitted).discover(xt[:5])
    with pytest.raises(GuardgenError, match="at least 2 sources"):
        OpenWorldAttribution(device="cpu").fit(xt[:10], torch.zeros(10))
    with pytest.raises(GuardgenError, match="ood='mahalanobis': must be one of pu, wta"):
        OpenWorldAttribution(ood="mahalanobis", device="cpu").fit(xt[:10], yt[:10])
    with pytest.raises(GuardgenError, match="pu_threshold"):
        OpenWorldAttribution(ood="pu", pu_threshold=1.0, device="cpu").fit(xt[:10], yt[:10])
    with pytest.raises(GuardgenError, match="lr_schedule"):
        OpenWorldAttribution(lr_schedule="step", device="cpu").fit(xt[:10], yt[:10])
    with pytest.raises(GuardgenError, match="trained on"):
        fitted.predict(torch.rand(2, 1, 16, 16))
    with pytest.raises(GuardgenError, match="not an attribution model"):
        OpenWorldAttribution.from_pretrained("/nonexistent")
