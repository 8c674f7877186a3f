"""The estimators' API: pipelines and grid search, image input, user backbones, pickling,
reproducibility, input validation, warnings, callbacks and history."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from skorch.callbacks import Callback
from skorch.history import History
from torch import nn

from skdeepcluster import SCAN, NeighborMiner, SimCLR
from skdeepcluster._training import IndexBatches, _IndexRange, batches_per_epoch
from skdeepcluster.base import AUTO_MAX_EPOCHS, resolve_max_epochs
from skdeepcluster.datasets import load_digits_images, load_mnist_test
from skdeepcluster.metrics import acc_scorer


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(120, n_features=6, centers=3, cluster_std=1.0, random_state=1)
    return X.astype(np.float32), y


def tiny_simclr(**kwargs):
    params = dict(max_epochs=1, batch_size=32, projection_dim=8, random_state=0)
    return SimCLR(**{**params, **kwargs})


def tiny_scan(**kwargs):
    params = dict(
        n_clusters=3,
        pretext=tiny_simclr(),
        max_epochs=1,
        self_label_epochs=1,
        confidence_threshold=0.0,
        n_neighbors=3,
        n_heads=2,
        batch_size=32,
        random_state=0,
    )
    return SCAN(**{**params, **kwargs})


@pytest.fixture(scope="module")
def digits64():
    X, y = load_digits_images()
    return X[:64], y[:64]


@pytest.fixture(scope="module")
def uint8_images():
    """64 uint8 (n, 28, 28) images: MNIST when its files are there, else digits scaled up."""
    try:
        X, _ = load_mnist_test()
        return X[:64]
    except FileNotFoundError:
        X, _ = load_digits_images()
        big = np.kron(X[:64], np.ones((3, 3), dtype=np.float32))  # 24 x 24
        return np.pad((big * 255).astype(np.uint8), ((0, 0), (2, 2), (2, 2)))


# ----------------------------------------------------------------------------- pipelines


def test_pipeline_and_grid_search(blobs):
    X, y = blobs
    pipe = make_pipeline(
        SimCLR(max_epochs=2, batch_size=32, projection_dim=8, random_state=0),
        NeighborMiner(n_neighbors=5),
        SCAN(
            n_clusters=3,
            pretext=None,
            max_epochs=5,
            head_lr=1e-2,
            self_label_epochs=1,
            confidence_threshold=0.5,
            n_neighbors=5,
            n_heads=2,
            batch_size=32,
            random_state=0,
        ),
    )
    search = GridSearchCV(pipe, {"scan__entropy_weight": [2.0, 5.0]}, scoring=acc_scorer, cv=2)
    search.fit(X, y)
    assert 1 / 3 <= search.best_score_ <= 1.0
    assert search.best_params_["scan__entropy_weight"] in (2.0, 5.0)
    best = search.best_estimator_
    # SCAN used the neighbours the miner put on its input, not neighbours of its own
    np.testing.assert_array_equal(best[-1].neighbors_, best[1].neighbors_)
    assert best[-1].pretext_ is None
    assert best.predict(X).shape == (len(X),)


def test_scan_on_features_directly(blobs):
    X, _ = blobs
    scan = tiny_scan(pretext=None).fit(X)
    assert scan.pretext_ is None
    assert scan.predict_proba(X).shape == (len(X), 3)


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("shape", ["n_h_w", "n_c_h_w"])
def test_scan_on_small_images(digits64, shape):
    X = digits64[0] if shape == "n_h_w" else digits64[0][:, None]
    scan = tiny_scan().fit(X)
    assert scan.input_shape_ == (1, 8, 8)
    proba = scan.predict_proba(X)
    assert proba.shape == (64, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # (n, h, w) and (n, 1, h, w) are the same data
    np.testing.assert_array_equal(scan.predict(digits64[0]), scan.predict(digits64[0][:, None]))


def test_scan_on_uint8_images(uint8_images):
    X = uint8_images
    assert X.dtype == np.uint8 and X.shape == (64, 28, 28)
    scan = tiny_scan().fit(X)
    assert scan.labels_.shape == (64,)
    np.testing.assert_array_equal(scan.predict(X), scan.labels_)
    # uint8 pixels are read as [0, 1]: the same images as floats give the same clusters
    np.testing.assert_allclose(
        scan.predict_proba(X), scan.predict_proba(X / np.float32(255)), atol=1e-5
    )


def test_user_backbone_is_used_and_not_modified(digits64):
    X = digits64[0]
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    simclr = tiny_simclr(backbone=backbone).fit(X)
    assert simclr.transform(X).shape == (64, 32)  # the user's width, so their network was used
    scan = tiny_scan(pretext=tiny_simclr(backbone=backbone)).fit(X)
    assert scan.predict(X).shape == (64,)
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert backbone.training


# ----------------------------------------------------------------------------- pickling


def test_pickled_scan_predicts_the_same(blobs):
    X, _ = blobs
    scan = tiny_scan().fit(X)
    loaded = pickle.loads(pickle.dumps(scan))
    np.testing.assert_array_equal(loaded.predict_proba(X), scan.predict_proba(X))
    np.testing.assert_array_equal(loaded.labels_, scan.labels_)


def test_pickled_simclr_transforms_the_same(blobs):
    X, _ = blobs
    simclr = tiny_simclr().fit(X)
    loaded = pickle.loads(pickle.dumps(simclr))
    np.testing.assert_array_equal(loaded.transform(X), simclr.transform(X))
    assert loaded.net_.data is None  # the training data is not in the pickle


# ----------------------------------------------------------------------------- reproducibility


def test_same_random_state_same_results(blobs):
    X, _ = blobs
    first, second = tiny_scan(random_state=3).fit(X), tiny_scan(random_state=3).fit(X)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    np.testing.assert_array_equal(
        tiny_simclr(random_state=3).fit(X).transform(X),
        tiny_simclr(random_state=3).fit(X).transform(X),
    )


def test_fit_leaves_global_random_state_alone(blobs):
    X, _ = blobs
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    tiny_scan().fit(X)
    tiny_simclr().fit_transform(X)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1])


# ----------------------------------------------------------------------------- validation


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


BAD_INPUTS = [
    ("nan", lambda X: _with(X, (0, 0), np.nan), "NaN"),
    ("inf", lambda X: _with(X, (1, 2), np.inf), "infinity"),
    ("1-D", lambda X: X[:, 0], "X must be 2-D"),
    ("5-D", lambda X: X.reshape(len(X), 1, 1, 2, 3), "X must be 2-D"),
    ("1 sample", lambda X: X[:1], "minimum of 2 is required"),
]


@pytest.mark.parametrize("make_estimator", [tiny_scan, tiny_simclr], ids=["SCAN", "SimCLR"])
@pytest.mark.parametrize(
    ("make_X", "match"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_X_is_refused(blobs, make_estimator, make_X, match):
    with pytest.raises(ValueError, match=match):
        make_estimator().fit(make_X(blobs[0]))


OF_SCAN = "parameter of SCAN must be"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(n_clusters=1), r"'n_clusters' " + OF_SCAN + r" an int in the range \[2, inf\)"),
        (dict(n_clusters=0), r"'n_clusters' " + OF_SCAN + r" an int in the range \[2, inf\)"),
        (dict(n_clusters=121), r"n_clusters=121 must not exceed the number of samples \(120\)"),
        (
            dict(n_neighbors=120),
            r"n_neighbors=120 must be smaller than the number of samples \(120\)",
        ),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (
            dict(pretext="sift"),
            r"'pretext' " + OF_SCAN + r" a str among \{(?=[^}]*'rotnet')(?=[^}]*'simclr')",
        ),
        (dict(confidence_threshold=1.5), r"'confidence_threshold' " + OF_SCAN + " a float in"),
        (
            dict(self_label_lr=0.0),
            r"'self_label_lr' " + OF_SCAN + r" a float in the range \(0.0, inf\)",
        ),
        (dict(augment=123), "'augment' " + OF_SCAN + " a callable or None"),
        (dict(max_epochs="many"), "'max_epochs' " + OF_SCAN + " .*'auto'"),
    ],
)
def test_bad_scan_parameters_are_refused(blobs, params, match):
    with pytest.raises(ValueError, match=match):
        tiny_scan(**params).fit(blobs[0])


@pytest.mark.parametrize(
    "n_samples, batch_size, expected",
    [
        (1797, 256, 215),  # digits: 7 batches per epoch (5 rows join the last) -> ceil(1500 / 7)
        (10_000, 256, 60),  # MNIST-test: 39 batches per epoch -> the 60-epoch floor
        (100, 256, 1500),  # one batch per epoch
        (129, 64, 750),  # a last batch of one sample joins the previous: 2 batches per epoch
        (160, 64, 500),  # a remainder of half a batch is a batch of its own: 3 per epoch
    ],
)
def test_auto_epochs_give_enough_steps(n_samples, batch_size, expected):
    assert resolve_max_epochs("auto", n_samples, batch_size, 60, 1500, 10**6) == expected
    assert resolve_max_epochs(7, n_samples, batch_size, 60, 1500) == 7


@pytest.mark.parametrize(
    "n_samples, expected",
    [(300, AUTO_MAX_EPOCHS), (100, AUTO_MAX_EPOCHS), (1797, 215), (10_000, 60), (50_000, 60)],
)
def test_auto_epochs_stop_short_of_thousands_on_small_data(n_samples, expected):
    """At e6dd4a8 SimCLR's "auto" trained 750 epochs on 300 samples (1,500 on main before this
    cap): the step floor now takes at most AUTO_MAX_EPOCHS epochs; the epoch floor still holds."""
    assert resolve_max_epochs("auto", n_samples, 256, 60, 1500) == expected
    assert resolve_max_epochs("auto", 300, 256, 60, 1500, max_auto_epochs=30) == 60


def test_simclr_auto_epochs_on_300_samples(monkeypatch):
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # no need to train: n_epochs_ is resolved before
        raise Stop

    monkeypatch.setattr(SimCLR, "_train", stop)
    model = SimCLR()
    with pytest.raises(Stop):
        model.fit(X)
    assert model.n_epochs_ == AUTO_MAX_EPOCHS <= 250


@pytest.mark.parametrize(
    ("n", "batch_size"), [(129, 64), (130, 64), (10, 64), (7, 3), (1797, 256), (160, 64)]
)
def test_batches_per_epoch_counts_what_the_loop_yields(n, batch_size):
    batches = IndexBatches(_IndexRange(n), batch_size)
    assert batches_per_epoch(n, batch_size) == len(batches) == len(list(batches))


@pytest.mark.parametrize(("n", "batch_size"), [(1797, 256), (129, 64), (160, 64), (10, 64), (7, 3)])
def test_every_batch_is_at_least_half_full_and_every_sample_is_seen(n, batch_size):
    """Per-batch statistics (batch norm, entropy of the mean assignment, column contrasts)
    need full batches: digits used to train on a last batch of 5 rows every epoch."""
    batches = [idx for idx, _ in IndexBatches(_IndexRange(n), batch_size)]
    size = min(batch_size, n)
    assert all(2 * len(idx) >= size for idx in batches)
    assert all(len(idx) < 2 * size for idx in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


def test_simclr_auto_epochs_are_trained(blobs, monkeypatch):
    monkeypatch.setattr(SimCLR, "_auto_epochs", (2, 12))
    model = tiny_simclr(max_epochs="auto", batch_size=40).fit(blobs[0])  # 3 batches per epoch
    assert model.n_epochs_ == 4 == len(model.history_)


def test_bad_simclr_parameters_are_refused(blobs):
    with pytest.raises(ValueError, match="'max_epochs' parameter of SimCLR must be"):
        tiny_simclr(max_epochs="many").fit(blobs[0])
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tiny_simclr(device="tpu").fit(blobs[0])
    with pytest.raises(ValueError, match="'temperature' parameter of SimCLR must be a float"):
        tiny_simclr(temperature=0).fit(blobs[0])
    with pytest.raises(ValueError, match=r"'backbone' parameter of SimCLR must be an instance"):
        tiny_simclr(backbone="resnet").fit(blobs[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("make_estimator", [tiny_scan, tiny_simclr], ids=["SCAN", "SimCLR"])
def test_cuda_without_cuda_is_refused(blobs, make_estimator):
    with pytest.raises(ValueError, match="CUDA is not available"):
        make_estimator(device="cuda").fit(blobs[0])


def test_predict_checks_the_input_against_fit(blobs, digits64):
    X, _ = blobs
    scan = tiny_scan(pretext=None).fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but SCAN is expecting 6"):
        scan.predict(X[:, :5])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        scan.predict(X[0])
    with pytest.raises(ValueError, match="NaN"):
        scan.predict(_with(X, (0, 0), np.nan))
    images = tiny_scan().fit(digits64[0])
    with pytest.raises(ValueError, match=r"sample shape \(1, 4, 16\).*fitted on \(1, 8, 8\)"):
        images.predict(digits64[0].reshape(64, 4, 16))


# ----------------------------------------------------------------------------- warnings


def test_warns_when_no_sample_is_confident(blobs):
    scan = tiny_scan(confidence_threshold=1.0)
    with pytest.warns(UserWarning, match="self-labelling"):
        scan.fit(blobs[0])
    assert scan.n_confident_ == 0
    assert "self_labelling" not in scan.histories_
    assert set(scan.history_[:, "stage"]) == {"manifold_start", "clustering"}
    assert scan.labels_.shape == (len(blobs[0]),)  # the clustering step's result is kept


# ----------------------------------------------------------------------------- callbacks, history


class EpochCounter(Callback):
    """Counts epochs in a class attribute: the estimators train with copies of their callbacks."""

    epochs = 0

    def on_epoch_end(self, net, **kwargs):
        type(self).epochs += 1


def test_callbacks_are_used_and_history_is_kept(blobs):
    X, _ = blobs
    EpochCounter.epochs = 0
    counter = EpochCounter()
    simclr = tiny_simclr(max_epochs=3, callbacks=[counter]).fit(X)
    assert EpochCounter.epochs == 3
    assert isinstance(simclr.history_, History)
    assert len(simclr.history_) == 3
    assert {"epoch", "train_loss", "dur"} <= set(simclr.history_[-1])
    assert all(np.isfinite(simclr.history_[:, "train_loss"]))

    EpochCounter.epochs = 0
    scan = tiny_scan(
        pretext=None,
        head_init="random",  # no manifold start: two stages
        max_epochs=4,
        self_label_epochs=2,
        callbacks=[("count", counter)],
    ).fit(X)
    assert EpochCounter.epochs == 4 + 2  # clustering and self-labelling both use them
    assert set(scan.histories_) == {"clustering", "self_labelling"}
    clustering, self_labelling = scan.histories_["clustering"], scan.histories_["self_labelling"]
    assert len(clustering) == 4 and len(self_labelling) == 2
    # history_: every epoch of both stages, in order, each tagged with its stage
    assert isinstance(scan.history_, History)
    assert scan.history_[:, "stage"] == ["clustering"] * 4 + ["self_labelling"] * 2
    assert (
        scan.history_[:, "train_loss"]
        == clustering[:, "train_loss"] + self_labelling[:, "train_loss"]
    )
    assert {"train_loss", "consistency", "entropy"} <= set(clustering[-1])
    assert "confident" in self_labelling[-1]
    assert all(0 <= e <= np.log(3) + 1e-6 for e in clustering[:, "entropy"])
    assert all(c == 1.0 for c in self_labelling[:, "confident"])  # threshold 0: all confident
    assert counter.epochs == 6 and vars(counter) == {}  # the user's instance was not modified


def test_callbacks_reach_the_manifold_start_too(blobs):
    EpochCounter.epochs = 0
    scan = tiny_scan(
        pretext=None, max_epochs=4, self_label_epochs=2, callbacks=[("count", EpochCounter())]
    ).fit(blobs[0])
    start = scan.histories_["manifold_start"]
    assert len(start) >= 5
    assert EpochCounter.epochs == len(start) + 4 + 2
    assert scan.history_[:, "stage"][: len(start)] == ["manifold_start"] * len(start)
