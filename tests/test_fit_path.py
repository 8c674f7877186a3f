"""The shared fit path: pretext building, devices, seeds, end of fit, stages and their history.

Several tests here fail on main at e6dd4a8 (review B1, B4, B5, B7): each says which.
"""

import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.history import History

from skdeepcluster import C2BIN, DRC, LSDC, SCAN, RotNet, SeLa, SimCLR
from skdeepcluster._training import DeepClusterNet
from skdeepcluster.methods import _base as methods_base
from skdeepcluster.metrics import acc_scorer
from skdeepcluster.pretext import fit_pretext, pretext_backbone


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(96, n_features=6, centers=3, cluster_std=1.0, random_state=3)
    return X.astype(np.float32), y


def tiny_simclr(**kwargs):
    return SimCLR(**{"max_epochs": 1, "batch_size": 32, "projection_dim": 8, **kwargs})


def tiny(cls, **kwargs):
    """A one-epoch configuration of each clustering method on 3 clusters."""
    common = dict(n_clusters=3, batch_size=32, random_state=0)
    own = {
        SCAN: dict(
            max_epochs=1, self_label_epochs=1, n_neighbors=3, n_heads=2, confidence_threshold=0.0
        ),
        SeLa: dict(max_epochs=2, n_heads=2),
        LSDC: dict(max_epochs=1),
        C2BIN: dict(max_epochs=1, head_sizes=[3, 6], hidden_dim=16, projection_dim=8),
        DRC: dict(max_epochs=1),
    }[cls]
    return cls(**{**common, **own, **kwargs})


METHODS = [SCAN, SeLa, LSDC, C2BIN, DRC]


# ----------------------------------------------------------------------------- the pretext builder


@pytest.mark.parametrize("cls", [SeLa, C2BIN, DRC])
@pytest.mark.parametrize(("shape", "uses_simclr"), [((40, 6), False), ((40, 8, 8), True)])
def test_auto_pretext_is_simclr_for_images_only(one_epoch_pretexts, cls, shape, uses_simclr):
    assert cls().pretext == "auto"  # the default
    X = np.random.default_rng(0).random(shape, dtype=np.float32)
    model = tiny(cls, pretext="auto", batch_size=16).fit(X)
    assert isinstance(model.pretext_, SimCLR) == uses_simclr
    assert (model.pretext_ is None) != uses_simclr
    # after the pretext: k-means heads; DRC's manifold start measured better on MNIST-test
    expected_with_pretext = "manifold" if cls is DRC else "kmeans"
    assert model.head_init_ == (expected_with_pretext if uses_simclr else "manifold")


def test_user_pretext_gets_the_methods_seed_and_device(blobs):
    """B7: a user pretext left unseeded used to train unseeded (random_state=None), so
    SCAN(pretext=SimCLR(), random_state=0) was not repeatable. B1: it also kept its own
    device. Fails on e6dd4a8 (the clone kept random_state=None and device 'cpu')."""
    device = torch.device("cpu")  # an object, so "got the method's device" can be told apart
    X, _ = blobs
    first = tiny(SCAN, pretext=tiny_simclr(), device=device).fit(X)
    again = tiny(SCAN, pretext=tiny_simclr(), device=device).fit(X)
    assert first.pretext_.random_state == again.pretext_.random_state is not None
    assert first.pretext_.device is device
    for a, b in zip(first.pretext_.backbone_.parameters(), again.pretext_.backbone_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(first.labels_, again.labels_)


def test_user_settings_of_the_pretext_are_kept_and_the_object_is_not_touched(blobs):
    X, _ = blobs
    given = tiny_simclr(random_state=7, verbose=0)
    fitted = fit_pretext(given, X, device="cpu", random_state=123, verbose=1)
    assert fitted is not given and not hasattr(given, "backbone_")
    assert fitted.random_state == 7  # set by the user: kept
    assert fitted.verbose == 1  # left at its default: the method's
    assert given.get_params()["random_state"] == 7 and given.verbose == 0


def test_named_pretext_is_built_with_the_methods_settings(blobs, one_epoch_pretexts):
    fitted = fit_pretext("simclr", blobs[0], device="cpu", random_state=5, verbose=0)
    assert isinstance(fitted, SimCLR) and fitted.random_state == 5 and fitted.device == "cpu"


def test_the_pretext_backbone_is_moved_to_the_methods_device(blobs):
    """B1: the backbone copy is moved to the method's device before anything runs on it."""
    pretext = tiny_simclr(random_state=0).fit(blobs[0])
    moved_to = []
    backbone = pretext.backbone_
    original_to = type(backbone).to

    def spy(self, *args, **kwargs):
        moved_to.append(args[0] if args else kwargs.get("device"))
        return original_to(self, *args, **kwargs)

    type(backbone).to = spy
    try:
        copy = pretext_backbone(pretext, torch.device("cpu"))
    finally:
        type(backbone).to = original_to
    assert moved_to == [torch.device("cpu")]
    assert copy is not pretext.backbone_


def test_pretext_without_a_backbone_is_refused(blobs):
    class NoBackbone(SimCLR):
        def fit(self, X, y=None):
            return self

    with pytest.raises(ValueError, match="has no backbone_ module"):
        tiny(SCAN, pretext=NoBackbone()).fit(blobs[0])


@pytest.mark.parametrize("cls", METHODS)
def test_pretext_params_reach_a_named_pretext(cls, blobs):
    """``pretext__<param>`` with a named pretext: the name becomes that pretext, configured."""
    method = clone(tiny(cls, pretext="simclr")).set_params(
        pretext__max_epochs=1, pretext__batch_size=32, pretext__projection_dim=4
    )
    assert isinstance(method.pretext, SimCLR)
    assert (method.pretext.max_epochs, method.pretext.projection_dim) == (1, 4)
    method.fit(blobs[0])
    assert method.pretext_.projection_dim == 4 and method.pretext_.random_state is not None


def test_pretext_params_in_a_grid_search(blobs):
    X, y = blobs
    search = GridSearchCV(
        tiny(SCAN, pretext="simclr", self_label_epochs=0),
        {"pretext__max_epochs": [1, 2], "pretext__batch_size": [32]},
        scoring=acc_scorer,
        cv=2,
    ).fit(X, y)
    assert search.best_estimator_.pretext_.n_epochs_ == search.best_params_["pretext__max_epochs"]


def test_pretext_params_need_a_named_pretext():
    with pytest.raises(ValueError, match="'auto' names no pretext"):
        SeLa(pretext="auto").set_params(pretext__max_epochs=1)


# ----------------------------------------------------------------------------- devices


def _spy_devices(monkeypatch):
    """Record, at every training step, the devices of the module's parameters and buffers, of the
    training data and of every tensor the objective holds, beside the net's device."""
    seen = []
    step = DeepClusterNet.train_step_single

    def spy(self, batch, **fit_params):
        tensors = [*self.module_.parameters(), *self.module_.buffers(), self.data.tensor, batch[0]]
        held = vars(self.objective).values()
        tensors += [v for v in held if isinstance(v, torch.Tensor)]
        # a momentum target (C2BIN's follower) lives in the objective too
        tensors += [p for v in held if hasattr(v, "network") for p in v.network.parameters()]
        seen.append((torch.device(self.device), {t.device for t in tensors}))
        return step(self, batch, **fit_params)

    monkeypatch.setattr(DeepClusterNet, "train_step_single", spy)
    return seen


@pytest.mark.parametrize("cls", METHODS)
def test_every_tensor_and_parameter_of_a_fit_is_on_the_estimators_device(cls, blobs, monkeypatch):
    """CI has no GPU: on CUDA the same test checks the CUDA placement."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seen = _spy_devices(monkeypatch)
    model = tiny(cls, pretext=tiny_simclr(), device=device).fit(blobs[0])
    assert len(seen) > 0
    for net_device, devices in seen:
        assert net_device == model.device_
        assert {d.type for d in devices} == {model.device_.type}
    assert {p.device.type for p in model.module_.parameters()} == {model.device_.type}


# ----------------------------------------------------------------------------- input checks


def test_scan_without_pretext_refuses_images():
    """B4: pretext=None on images used to fail deep in mining with a size mismatch."""
    X = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"pretext=None means X holds feature vectors"):
        tiny(SCAN, pretext=None).fit(X)


@pytest.mark.parametrize("cls", METHODS)
def test_no_feature_name_warning_after_a_dataframe_fit(cls, blobs):
    """B5: labels_ was computed with predict on the validated array, which warned "X does not
    have valid feature names" after every DataFrame fit (SCAN and LSDC on e6dd4a8)."""
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(blobs[0], columns=[f"f{i}" for i in range(blobs[0].shape[1])])
    model = tiny(cls, pretext=tiny_simclr())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names.*")
        model.fit(X)
        np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert list(model.feature_names_in_) == list(X.columns)


# ----------------------------------------------------------------------------- end of fit


@pytest.mark.parametrize("cls", METHODS)
def test_end_of_fit_is_the_same_for_every_method(cls, blobs):
    X, _ = blobs
    model = tiny(cls, pretext=tiny_simclr()).fit(X)
    # the data is released by every net, the model is kept
    assert model.net_.data is None and model.net_.objective is None
    assert isinstance(model.module_, torch.nn.Module)
    # history_: a History of every own epoch, tagged with its stage; histories_ one per stage
    assert isinstance(model.history_, History) and len(model.history_) > 0
    stages = [s for s in model.histories_ if s != "pretext"]
    assert model.history_[:, "stage"] == [s for s in stages for _ in model.histories_[s]]
    assert isinstance(model.histories_["pretext"], History)
    assert model.histories_["pretext"] is model.pretext_.history_
    # labels_: the predictions of the kept head on the training data
    np.testing.assert_array_equal(model.labels_, model.predict(X))


def test_single_stage_estimators_have_one_history(blobs):
    simclr = tiny_simclr().fit(blobs[0])
    assert set(simclr.histories_) == {"pretext"}
    assert simclr.history_[:, "train_loss"] == simclr.histories_["pretext"][:, "train_loss"]


@pytest.mark.parametrize("cls", [SCAN, SeLa, LSDC, C2BIN, DRC, SimCLR, RotNet])
def test_max_epochs_auto_on_every_estimator(cls):
    assert cls().get_params()["max_epochs"] == "auto"


def test_verbose_shows_one_named_progress_bar_per_stage(blobs, capsys):
    """verbose=1: a tqdm bar per stage on stderr, named after the estimator and stage."""
    tiny(SCAN, pretext=tiny_simclr(), verbose=1).fit(blobs[0])
    err = capsys.readouterr().err
    for name in ("SimCLR pretext", "SCAN clustering", "SCAN self_labelling"):
        assert re.search(rf"{name}: 100%.*1/1 \[", err), name
    assert "epoch/s" in err or "s/epoch" in err


def test_methods_pass_their_stage_through_train(monkeypatch, blobs):
    """Every method trains through DeepEstimatorMixin._train (one place builds the nets)."""
    calls = []
    train = methods_base.DeepEstimatorMixin._train

    def spy(self, stage, *args, **kwargs):
        calls.append((type(self).__name__, stage))
        return train(self, stage, *args, **kwargs)

    monkeypatch.setattr(methods_base.DeepEstimatorMixin, "_train", spy)
    for cls in METHODS:
        tiny(cls, pretext=tiny_simclr()).fit(blobs[0])
    assert ("SimCLR", "pretext") in calls
    assert {c for c in calls if c[0] != "SimCLR"} == {
        ("SCAN", "manifold_start"),
        ("SCAN", "clustering"),
        ("SCAN", "self_labelling"),
        ("SeLa", "manifold_start"),  # vectors: the manifold start
        ("SeLa", "clustering"),
        ("LSDC", "manifold_start"),
        ("LSDC", "clustering"),
        ("C2BIN", "manifold_start"),
        ("C2BIN", "clustering"),
        ("DRC", "manifold_start"),
        ("DRC", "clustering"),
    }


# ----------------------------------------------------------------------------- the optimiser


@pytest.mark.filterwarnings("ignore")  # one-epoch fits collapse or stop Sinkhorn early
@pytest.mark.parametrize("cls", [*METHODS, SimCLR])
@pytest.mark.parametrize(
    ("name", "expected", "momentum"),
    [
        ("adamw", torch.optim.AdamW, None),
        ("adam", torch.optim.Adam, None),
        ("sgd", torch.optim.SGD, 0.9),
    ],
)
def test_optimizer_names_build_the_papers_optimisers(cls, name, expected, momentum, blobs):
    """``optimizer`` reaches every training stage: "adam" is SCAN's, C2BIN's and DRC's paper
    optimiser, "sgd" (momentum 0.9) SeLa's and LSD-C's."""
    estimator = tiny_simclr if cls is SimCLR else lambda **kw: tiny(cls, pretext=None, **kw)
    fitted = estimator(optimizer=name, weight_decay=0.25, lr=0.125).fit(blobs[0])
    optimizer = fitted.net_.optimizer_
    assert type(optimizer) is expected
    group = optimizer.param_groups[-1]
    assert group["weight_decay"] == 0.25 and group["lr"] <= 0.125
    assert group.get("momentum") == momentum if momentum is not None else "momentum" not in group


def test_optimizer_accepts_a_factory(blobs):
    import functools

    factory = functools.partial(torch.optim.SGD, momentum=0.5, nesterov=True)
    fitted = tiny(SeLa, pretext=None, optimizer=factory).fit(blobs[0])
    group = fitted.net_.optimizer_.param_groups[0]
    assert type(fitted.net_.optimizer_) is torch.optim.SGD
    assert group["momentum"] == 0.5 and group["nesterov"] is True


def test_unknown_optimizer_names_the_accepted_ones(blobs):
    with pytest.raises(ValueError, match=r"optimizer.*'adam'.*'adamw'.*'sgd'|optimizer.*sgd"):
        tiny(LSDC, pretext=None, optimizer="lbfgs").fit(blobs[0])


# ----------------------------------------------------------------------------- docstrings


@pytest.mark.parametrize("cls", METHODS)
def test_every_fitted_attribute_is_documented_and_no_placeholder_is_left(cls, blobs):
    """The shared docstring entries are filled in, and each public fitted attribute (``name_``)
    has an entry in the class docstring."""
    doc = cls.__doc__
    assert "{" + "shared_parameters}" not in doc and "_attributes}" not in doc
    fitted = tiny(cls, pretext=None).fit(blobs[0])
    attributes = [a for a in vars(fitted) if a.endswith("_") and not a.startswith("_")]
    assert {"labels_", "module_", "history_", "histories_", "pretext_"} <= set(attributes)
    missing = [a for a in attributes if f"\n    {a} :" not in doc]
    assert missing == []


# ----------------------------------------------------------------------------- what every user does


@pytest.mark.parametrize("cls", METHODS)
def test_repeatable_picklable_and_grid_searchable(cls, blobs):
    """Same ``random_state``, same labels; a pickled model predicts the same probabilities; a
    Pipeline in GridSearchCV scored by ``acc_scorer`` refits the best setting."""
    X, y = blobs
    quick = dict(pretext=None)  # SCAN's and LSDC's default SimCLR pretext would train for minutes
    first, again = tiny(cls, **quick).fit(X), tiny(cls, **quick).fit(X)
    np.testing.assert_array_equal(first.labels_, again.labels_)
    loaded = pickle.loads(pickle.dumps(first))
    np.testing.assert_allclose(loaded.predict_proba(X), first.predict_proba(X), rtol=0, atol=0)
    assert loaded.predict_proba(X).shape == (len(X), 3)
    step = cls.__name__.lower()
    search = GridSearchCV(
        make_pipeline(StandardScaler(), tiny(cls, **quick)),
        {f"{step}__batch_size": [24, 32]},
        scoring=acc_scorer,
        cv=2,
    ).fit(X, y)
    assert search.best_params_[f"{step}__batch_size"] in (24, 32)
    assert 0.0 <= search.best_score_ <= 1.0
    assert search.best_estimator_.predict(X).shape == (len(X),)


# ----------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("cls", [*METHODS, SimCLR])
def test_constant_features_are_reported_by_column(cls):
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    X[:, [1, 3]] = 7.0
    estimator = tiny_simclr() if cls is SimCLR else tiny(cls, pretext=None)
    with pytest.warns(UserWarning, match=r"2 constant feature\(s\) of 5 \(columns 1, 3\)"):
        estimator.fit(X)


def test_no_constant_feature_warning_without_one():
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*constant feature")
        tiny(DRC, pretext=None).fit(X)


def test_constant_features_are_reported_once_with_a_pretext(one_epoch_pretexts):
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    X[:, 2] = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny(DRC, pretext="simclr").fit(X)
    assert sum("constant feature" in str(w.message) for w in caught) == 1
