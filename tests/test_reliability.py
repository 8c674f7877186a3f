"""Issue 14, reliability: faults (divergence, collapse, Ctrl-C), callbacks and bad data.

Each test fails at e6dd4a8, where the finding it covers was found by the reliability probe
(``../shared/reviews/reliability-probe.md``).
"""

import os
import signal
import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback, EarlyStopping

import skdeepcluster
from skdeepcluster import DRC, SCAN, SeLa, SimCLR
from skdeepcluster import _training as training
from skdeepcluster._training import TrainingDivergedError


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (3, 6))
    X = np.concatenate([c + rng.normal(0, 1, (40, 6)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(3), 40)


def tiny_simclr(**kwargs):
    return SimCLR(**{"max_epochs": 2, "batch_size": 32, "projection_dim": 8, **kwargs})


class StageRecorder(Callback):
    """Records the stage of every epoch end in a class-level list (callbacks are deep-copied
    into each stage, so an instance attribute would be lost with the copy)."""

    epochs: list = []

    def on_epoch_end(self, net, **kwargs):
        StageRecorder.epochs.append(getattr(net, "stage", None))


class InterruptInStage(Callback):
    """Presses Ctrl-C (sends this process SIGINT) at the first epoch end of one stage."""

    def __init__(self, stage):
        self.stage = stage

    def on_epoch_end(self, net, **kwargs):
        StageRecorder.epochs.append(net.stage)
        if net.stage == self.stage:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises KeyboardInterrupt here, long before 5 s


@pytest.fixture
def recorded():
    StageRecorder.epochs = []
    yield StageRecorder.epochs
    StageRecorder.epochs = []


# ------------------------------------------------------------------------------------- callbacks


def test_user_callbacks_reach_the_internal_pretext(blobs, recorded):
    """At e6dd4a8 the method's callbacks never reached the pretext it fitted."""
    SCAN(
        n_clusters=3,
        pretext=tiny_simclr(),
        max_epochs=1,
        self_label_epochs=1,
        n_neighbors=3,
        batch_size=32,
        callbacks=[StageRecorder()],
        random_state=0,
    ).fit(blobs[0])
    assert recorded, "no epoch was recorded"
    stages = list(dict.fromkeys(recorded))  # in order of first epoch
    assert stages == [
        "SimCLR pretext",
        "SCAN manifold_start",
        "SCAN clustering",
        "SCAN self_labelling",
    ]
    assert recorded.count("SimCLR pretext") == 2 and recorded.count("SCAN clustering") == 1


def test_a_pretext_with_callbacks_of_its_own_keeps_them(blobs, recorded):
    SCAN(
        n_clusters=3,
        pretext=tiny_simclr(callbacks=[StageRecorder()]),
        max_epochs=1,
        self_label_epochs=1,
        n_neighbors=3,
        batch_size=32,
        head_init="random",
        random_state=0,
    ).fit(blobs[0])
    assert recorded == ["SimCLR pretext"] * 2


# ---------------------------------------------------------------------------------------- Ctrl-C


@pytest.fixture
def interactive_sigint():
    """Python's own Ctrl-C handler, as in a terminal: a shell that starts the tests in the
    background (``pytest &``) hands them SIGINT ignored, and then no Ctrl-C could arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_pretext_stops_the_whole_fit(blobs, recorded, interactive_sigint):
    """At e6dd4a8 skorch swallowed the KeyboardInterrupt and SCAN went on to cluster."""
    model = SCAN(
        n_clusters=3,
        pretext=tiny_simclr(),
        max_epochs=1,
        n_neighbors=3,
        batch_size=32,
        callbacks=[InterruptInStage("SimCLR pretext")],
    )
    with pytest.raises(KeyboardInterrupt, match=r"SimCLR pretext interrupted after 1 epoch"):
        model.fit(blobs[0])
    assert recorded == ["SimCLR pretext"]  # no second pretext epoch, no clustering stage
    assert not hasattr(model, "labels_")


def test_ctrl_c_in_a_later_stage_reaches_the_caller(blobs, recorded, interactive_sigint):
    model = SCAN(
        n_clusters=3,
        pretext=None,
        max_epochs=3,
        self_label_epochs=2,
        n_neighbors=3,
        batch_size=32,
        callbacks=[InterruptInStage("SCAN clustering")],
    )
    with pytest.raises(KeyboardInterrupt, match="SCAN clustering interrupted after 1 epoch"):
        model.fit(blobs[0])
    assert "SCAN self_labelling" not in recorded and recorded, recorded


def test_early_stopping_still_ends_only_its_stage(blobs, recorded):
    """skorch's EarlyStopping stops a stage by raising KeyboardInterrupt: that is not Ctrl-C,
    and the fit must go on to its next stage."""
    model = SCAN(
        n_clusters=3,
        pretext=None,
        max_epochs=30,
        self_label_epochs=1,
        confidence_threshold=0.0,
        n_neighbors=3,
        batch_size=32,
        head_init="random",
        callbacks=[
            StageRecorder(),
            EarlyStopping(monitor="train_loss", patience=1, threshold=1e9, threshold_mode="abs"),
        ],
    ).fit(blobs[0])
    assert recorded.count("SCAN clustering") == 2  # stopped at the first epoch that missed
    assert recorded[-1] == "SCAN self_labelling"
    assert hasattr(model, "labels_")


# ------------------------------------------------------------------------------------ divergence


def test_a_diverged_run_stops_naming_stage_and_epoch(blobs):
    """At e6dd4a8 SeLa(lr=1e6) ended with NaN probabilities and every label 0."""
    model = SeLa(n_clusters=3, pretext=None, max_epochs=4, lr=1e6, batch_size=32, random_state=0)
    with pytest.raises(
        TrainingDivergedError, match=r"SeLa \w+ diverged: .* at epoch \d+ of \d+\. Lower lr"
    ):
        model.fit(blobs[0])
    assert not hasattr(model, "labels_")


def test_nan_input_is_refused_and_divergence_is_a_floating_point_error(blobs):
    X = blobs[0].copy()
    X[0, 0] = np.nan  # rejected at input: the check is in _validate_input
    with pytest.raises(ValueError, match="NaN"):
        DRC(n_clusters=3, pretext=None, max_epochs=1).fit(X)
    assert issubclass(TrainingDivergedError, FloatingPointError)
    assert skdeepcluster.TrainingDivergedError is TrainingDivergedError  # public name


# -------------------------------------------------------------------------------------- collapse


def test_a_collapse_is_reported_with_the_cluster_sizes(blobs):
    """At e6dd4a8 SCAN gave no warning when one cluster took everything."""
    X = blobs[0]
    model = SCAN(
        n_clusters=3,
        pretext=None,
        max_epochs=2,
        self_label_epochs=0,
        entropy_weight=0.0,  # nothing keeps the clusters apart
        n_neighbors=3,
        batch_size=32,
        head_init="random",
        random_state=0,
    )
    # a constant feature vector for all but one row: any network puts them in one cluster
    X_collapsed = np.repeat(X[:1], len(X), axis=0)
    X_collapsed[-1] += 5
    with pytest.warns(UserWarning, match=r"SCAN collapsed: the 120 training samples .* largest"):
        model.fit(X_collapsed)
    assert model.cluster_sizes_.sum() == len(X)
    assert model.cluster_sizes_.shape == (3,)
    assert model.cluster_sizes_.max() >= 0.9 * len(X)


def test_a_healthy_fit_reports_its_sizes_without_a_warning(blobs):
    X, _ = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = SCAN(n_clusters=3, pretext=None, max_epochs=3, n_neighbors=5, random_state=0)
        model.fit(X)
    np.testing.assert_array_equal(model.cluster_sizes_, np.bincount(model.labels_, minlength=3))
    assert model.n_clusters_used_ == 3


# ------------------------------------------------------------------------------ long silent fits


class TenSecondsPerCall:
    """A clock for skdeepcluster._training that advances 10 s at every reading."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        self.now += 10.0
        return self.now


def long_fit_warnings(record):
    return [w for w in record if "will take about" in str(w.message)]


def test_a_long_silent_stage_warns_with_its_estimate(blobs, monkeypatch):
    """At e6dd4a8 a fit that would run for hours on the CPU said nothing at verbose=0."""
    monkeypatch.setattr(training, "time", TenSecondsPerCall())
    monkeypatch.setattr(training, "LONG_STAGE_SECONDS", 100.0)
    model = SCAN(
        n_clusters=3,
        pretext=None,
        head_init="random",
        max_epochs=3,
        self_label_epochs=0,
        n_neighbors=3,
        batch_size=32,
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(blobs[0])
    found = long_fit_warnings(record)
    assert len(found) == 1, [str(w.message) for w in record]
    # 10 s for the first batch, 4 batches an epoch (120 rows of 32), 3 epochs: 120 s
    message = str(found[0].message)
    assert message.startswith("SCAN clustering will take")
    assert "about 2 min on the CPU" in message and "device='cuda'" in message


def test_the_long_fit_warning_comes_once_per_fit_and_only_when_silent(blobs, monkeypatch):
    monkeypatch.setattr(training, "LONG_STAGE_SECONDS", 0.0)  # every stage is "long"
    params = dict(
        n_clusters=3, pretext=tiny_simclr(), max_epochs=1, self_label_epochs=1, n_neighbors=3
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        SCAN(**params, batch_size=32).fit(blobs[0])  # pretext + 3 stages of its own
    assert len(long_fit_warnings(record)) == 1
    assert str(long_fit_warnings(record)[0].message).startswith("SimCLR pretext")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        SCAN(**params, batch_size=32, verbose=1).fit(blobs[0])  # the progress bars show it
    assert record is not None and not long_fit_warnings(record)
    monkeypatch.setattr(training, "LONG_STAGE_SECONDS", 1e9)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        SCAN(**params, batch_size=32).fit(blobs[0])
    assert not long_fit_warnings(record)


# ---------------------------------------------------------------------------- sklearn conveniences


@pytest.mark.parametrize("cls", [SCAN, SeLa, DRC])
def test_transform_gives_the_soft_assignments(cls, blobs):
    """At e6dd4a8 the clustering estimators had no transform."""
    X = blobs[0]
    model = cls(n_clusters=3, pretext=None, max_epochs=1, batch_size=32, random_state=0).fit(X)
    out = model.transform(X[:7])
    assert out.shape == (7, 3)
    np.testing.assert_array_equal(out, model.predict_proba(X[:7]))
    np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)


def test_pretext_feature_names_and_pandas_output_in_a_pipeline(blobs):
    """At e6dd4a8 set_output(transform="pandas") raised: no get_feature_names_out."""
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = blobs[0]
    pipe = make_pipeline(StandardScaler(), tiny_simclr(random_state=0))
    out = pipe.set_output(transform="pandas").fit_transform(X)
    simclr = pipe[-1]
    width = simclr.backbone_.out_features
    assert isinstance(out, pd.DataFrame) and out.shape == (len(X), width)
    assert list(out.columns) == [f"simclr{i}" for i in range(width)]
    np.testing.assert_array_equal(simclr.get_feature_names_out(), out.columns)
    with pytest.raises(NotFittedError):
        SimCLR().get_feature_names_out()


# ----------------------------------------------------------------------------------- constant X


def test_tsne_of_identical_rows_is_all_zeros():
    """scikit-learn's Barnes-Hut t-SNE crashed the process (segmentation fault) on identical
    rows, which the manifold start of any method fitted on a constant X reached."""
    import torch

    from skdeepcluster.neighbors import tsne_embedding

    embedding = tsne_embedding(torch.ones(20, 5), random_state=0)
    assert embedding.shape == (20, 2) and not embedding.any()
    varied = tsne_embedding(torch.arange(40.0).reshape(20, 2), random_state=0)
    assert np.ptp(varied, axis=0).min() > 0  # other data is embedded as before


@pytest.mark.parametrize("cls", [SCAN, SeLa, DRC])
def test_a_constant_x_ends_with_a_collapse_warning_not_a_crash(cls):
    X = np.ones((60, 5), np.float32)
    with pytest.warns(UserWarning, match=rf"{cls.__name__} collapsed: .* 1 of 3 clusters"):
        model = cls(n_clusters=3, pretext=None, max_epochs=1, batch_size=32, random_state=0)
        model.fit(X)
    assert sorted(model.cluster_sizes_) == [0, 0, 60]


def test_a_non_finite_loss_with_finite_weights_is_caught():
    """The epoch's train_loss is written by a callback after the net's own epoch hook, so the
    check read None and only caught non-finite weights."""
    import torch
    from torch import nn

    from skdeepcluster._training import DeepClusterNet, DeviceData

    class InfiniteLoss:  # zero gradient: the weights stay finite
        def loss(self, module, data, idx):
            return {"loss": module(data[idx]).sum() * 0 + float("inf")}

    X = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    net = DeepClusterNet(
        nn.Linear(3, 2),
        objective=InfiniteLoss(),
        data=DeviceData(X, torch.device("cpu")),
        max_epochs=3,
        batch_size=8,
        optimizer=torch.optim.SGD,
        lr=0.1,
        stage="a stage",
    )
    with pytest.raises(TrainingDivergedError, match=r"a stage diverged: the training loss is inf"):
        net.fit_on_data()
    assert len(net.history) == 1


def test_set_output_pandas_on_a_clustering_estimator_and_its_pipeline(blobs):
    """Once the methods had transform, Pipeline.set_output raised: no set_output on them."""
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = blobs[0]
    pipe = make_pipeline(
        StandardScaler(), SCAN(n_clusters=3, pretext=None, max_epochs=1, n_neighbors=3)
    ).set_output(transform="pandas")
    out = pipe.fit(X).transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["scan0", "scan1", "scan2"]
    np.testing.assert_allclose(out.to_numpy(), pipe[-1].predict_proba(pipe[0].transform(X)))
