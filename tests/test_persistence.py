"""Issue 14, persistence: lean pickles, CUDA-trained models on a CPU machine, save/load.

At e6dd4a8 a fitted SCAN pickled to about 8x its weights (skorch's net_ pickled the module again
with its optimiser state), unpickling a CUDA model failed without CUDA, and there was no format
that loads without trusting the file.
"""

import io
import json
import pickle
import zipfile

import joblib
import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

import skdeepcluster
from skdeepcluster import C2BIN, DRC, LSDC, SCAN, AutoEncoder, RotNet, SeLa, SimCLR
from skdeepcluster.persistence import FORMAT_VERSION


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (3, 6))
    X = np.concatenate([c + rng.normal(0, 1, (30, 6)) for c in centres]).astype(np.float32)
    return X


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((48, 1, 8, 8), dtype=np.float32)


def tiny_simclr(**kwargs):
    return SimCLR(**{"max_epochs": 1, "batch_size": 32, "projection_dim": 8, **kwargs})


TINY = {
    SCAN: dict(max_epochs=1, self_label_epochs=1, n_neighbors=3, confidence_threshold=0.0),
    SeLa: dict(max_epochs=2, n_heads=2),
    LSDC: dict(max_epochs=1),
    C2BIN: dict(max_epochs=1, head_sizes=[3, 6], hidden_dim=16, projection_dim=8),
    DRC: dict(max_epochs=1),
}


def fitted(cls, X, **kwargs):
    params = dict(n_clusters=3, batch_size=32, random_state=0, pretext=tiny_simclr())
    return cls(**{**params, **TINY[cls], **kwargs}).fit(X)


def weight_bytes(estimator):
    """Bytes of every distinct tensor of the estimator's modules (its pretext's included)."""
    seen = {}
    for owner in (estimator, getattr(estimator, "pretext_", None)):
        for value in vars(owner).values() if owner is not None else ():
            if isinstance(value, nn.Module):
                for tensor in value.state_dict(keep_vars=True).values():
                    seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    assert seen, "no module found"
    return sum(seen.values())


def same_predictions(a, b, X):
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=0)


# --------------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("cls", list(TINY))
def test_a_pickle_holds_each_weight_once(cls, blobs):
    model = fitted(cls, blobs)
    blob = pickle.dumps(model)
    assert len(blob) <= 1.5 * weight_bytes(model), (len(blob), weight_bytes(model))
    again = pickle.loads(blob)
    same_predictions(model, again, blobs)
    assert not hasattr(again.net_, "optimizer_")  # no optimiser state in the pickle
    assert len(again.history_) == len(model.history_)


def test_joblib_round_trip_keeps_the_pretext_working(blobs):
    model = fitted(SCAN, blobs)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    again = joblib.load(buffer)
    np.testing.assert_array_equal(model.pretext_.transform(blobs), again.pretext_.transform(blobs))
    # the pretext's backbone_ is still the backbone inside its module_, not a copy
    assert again.pretext_.backbone_ is again.pretext_.module_.backbone


def test_a_cuda_model_unpickles_on_the_cpu_with_a_warning(blobs, monkeypatch):
    """The fitted device is not on this machine: the model loads on the CPU and predicts."""
    model = fitted(SeLa, blobs)
    model.device_ = torch.device("cuda:0")  # as fitted on a GPU machine
    blob = pickle.dumps(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match=r"trained on cuda:0, which this machine does not have"):
        again = pickle.loads(blob)
    assert again.device_ == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in again.module_.parameters())
    model.device_ = torch.device("cpu")
    same_predictions(model, again, blobs)


# ------------------------------------------------------------------------------- save/load


@pytest.mark.parametrize("cls", list(TINY))
def test_save_load_round_trip_is_identical_and_small(cls, blobs, tmp_path):
    model = fitted(cls, blobs)
    path = tmp_path / "model.skdc"
    skdeepcluster.save(model, path)
    assert path.stat().st_size <= 1.5 * weight_bytes(model)
    loaded = skdeepcluster.load(path)
    assert type(loaded) is cls
    assert loaded.get_params(deep=False).keys() == model.get_params(deep=False).keys()
    assert repr(loaded) == repr(model)
    same_predictions(model, loaded, blobs)
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    assert loaded.labels_.dtype == model.labels_.dtype
    assert len(loaded.history_) == len(model.history_)


@pytest.mark.parametrize("cls", [SimCLR, RotNet, AutoEncoder])
def test_save_load_of_a_pretext_transforms_identically(cls, images, tmp_path):
    X = images.reshape(len(images), -1) if cls is AutoEncoder else images  # vectors only
    model = cls(max_epochs=1, batch_size=16, random_state=0).fit(X)
    skdeepcluster.save(model, tmp_path / "pretext.skdc")
    loaded = skdeepcluster.load(tmp_path / "pretext.skdc")
    np.testing.assert_array_equal(model.transform(X), loaded.transform(X))


def test_an_unfitted_estimator_keeps_its_nested_parameters(tmp_path):
    model = SCAN(n_clusters=4, pretext=SimCLR(max_epochs=3, device=torch.device("cpu")))
    skdeepcluster.save(model, tmp_path / "unfitted.skdc")
    loaded = skdeepcluster.load(tmp_path / "unfitted.skdc")
    assert isinstance(loaded.pretext, SimCLR)
    assert loaded.pretext.max_epochs == 3 and loaded.pretext.device == torch.device("cpu")
    assert not hasattr(loaded, "labels_")


def test_load_onto_a_device_moves_the_model(blobs, tmp_path):
    model = fitted(DRC, blobs)
    skdeepcluster.save(model, tmp_path / "m.skdc")
    loaded = skdeepcluster.load(tmp_path / "m.skdc", device="cpu")
    assert loaded.device == "cpu" and loaded.device_ == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in loaded.module_.parameters())


def test_a_cuda_saved_model_loads_on_the_cpu(blobs, tmp_path, monkeypatch):
    model = fitted(SCAN, blobs)
    model.device_ = torch.device("cuda")
    skdeepcluster.save(model, tmp_path / "m.skdc")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="does not have: it is loaded on the CPU"):
        loaded = skdeepcluster.load(tmp_path / "m.skdc")
    assert loaded.device_ == torch.device("cpu")
    model.device_ = torch.device("cpu")
    same_predictions(model, loaded, blobs)


def test_parameters_are_stored_as_json(blobs, tmp_path):
    model = fitted(SeLa, blobs)
    path = tmp_path / "m.skdc"
    skdeepcluster.save(model, path)
    with zipfile.ZipFile(path) as archive:  # torch.save writes a zip archive
        assert any(name.endswith("data.pkl") for name in archive.namelist())
    with torch.serialization.safe_globals(skdeepcluster.persistence._module_classes()):
        payload = torch.load(path, weights_only=True, map_location="cpu")
    assert payload["version"] == FORMAT_VERSION
    params = json.loads(payload["estimator"]["params"])
    assert params["n_clusters"] == 3 and params["pretext"]["__estimator__"] == "SimCLR"


class Recorder(Callback):
    pass


def test_a_parameter_that_is_not_json_is_refused_clearly(blobs, tmp_path):
    model = SCAN(callbacks=[Recorder()])
    with pytest.raises(ValueError, match=r"cannot save parameter SCAN\[.callbacks.\]\[0\]=.*JSON"):
        skdeepcluster.save(model, tmp_path / "m.skdc")
    with pytest.raises(TypeError, match="save takes an estimator of this package"):
        skdeepcluster.save(object(), tmp_path / "m.skdc")


class Payload:
    """Unpickling this runs code: the safe loader must refuse it."""

    def __reduce__(self):
        return (print, ("code from the file ran",))


def test_load_never_runs_code_from_the_file(tmp_path, capsys):
    path = tmp_path / "evil.skdc"
    torch.save({"format": "skdeepcluster", "version": FORMAT_VERSION, "estimator": Payload()}, path)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        skdeepcluster.load(path)
    assert "code from the file ran" not in capsys.readouterr().out


def test_load_refuses_unknown_classes_and_files(tmp_path):
    path = tmp_path / "m.skdc"
    entry = {"__kind__": "estimator", "class": "KMeans", "params": "{}", "attributes": {}}
    torch.save({"format": "skdeepcluster", "version": FORMAT_VERSION, "estimator": entry}, path)
    with pytest.raises(ValueError, match="estimator class 'KMeans'; load builds only"):
        skdeepcluster.load(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"not a file written by skdeepcluster\.save"):
        skdeepcluster.load(path)
    torch.save({"format": "skdeepcluster", "version": 99, "estimator": None}, path)
    with pytest.raises(ValueError, match="format version 99"):
        skdeepcluster.load(path)


class OwnBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(6, 16)
        self.out_features = 16

    def forward(self, x):
        return torch.relu(self.layer(x))


def test_a_model_on_a_user_module_loads_only_when_trusted(blobs, tmp_path):
    model = SeLa(
        n_clusters=3, pretext=None, backbone=OwnBody(), max_epochs=2, batch_size=32, random_state=0
    )
    skdeepcluster.save(model.fit(blobs), tmp_path / "m.skdc")
    with pytest.raises(ValueError, match=r"cannot be loaded safely: .*OwnBody.*trusted_modules"):
        skdeepcluster.load(tmp_path / "m.skdc")
    loaded = skdeepcluster.load(tmp_path / "m.skdc", trusted_modules=[OwnBody])
    assert isinstance(loaded.backbone, OwnBody)
    same_predictions(model, loaded, blobs)


# ------------------------------------------------------------ review findings (this code)


def test_save_load_after_a_dataframe_fit_keeps_the_feature_names(blobs, tmp_path):
    """feature_names_in_ (an object array of str) made save refuse the estimator."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(blobs, columns=[f"f{i}" for i in range(blobs.shape[1])])
    model = SeLa(n_clusters=3, pretext=None, max_epochs=1, batch_size=32, random_state=0)
    model.fit(frame)
    skdeepcluster.save(model, tmp_path / "m.skdc")
    loaded = skdeepcluster.load(tmp_path / "m.skdc")
    np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)
    assert loaded.feature_names_in_.dtype == object
    same_predictions(model, loaded, frame)


def test_a_fit_with_progress_bars_or_callback_classes_pickles(blobs):
    """verbose=1 left a tqdm bar (an open stream) in the net's callbacks, and a callback given
    as a class broke the lean pickle: both made the fitted estimator unpicklable."""
    from skorch.callbacks import EpochTimer

    model = SeLa(
        n_clusters=3,
        pretext=None,
        max_epochs=1,
        batch_size=32,
        random_state=0,
        verbose=1,
        callbacks=[EpochTimer],
    ).fit(blobs)
    again = pickle.loads(pickle.dumps(model))
    same_predictions(model, again, blobs)
    # the net's own parameters survive (only its module, criterion and optimiser are dropped)
    assert again.net_.optimizer__weight_decay == model.weight_decay


def test_load_on_a_torch_without_safe_globals_says_so(blobs, tmp_path, monkeypatch):
    model = SeLa(n_clusters=3, pretext=None, max_epochs=1, batch_size=32).fit(blobs)
    skdeepcluster.save(model, tmp_path / "m.skdc")
    monkeypatch.delattr(torch.serialization, "safe_globals")
    with pytest.raises(RuntimeError, match=r"load needs torch >= 2\.5"):
        skdeepcluster.load(tmp_path / "m.skdc")
