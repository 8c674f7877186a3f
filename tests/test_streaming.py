"""Data larger than the device: a memmap stays on disk, batches stream from host memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import skdeepcluster as sk
from skdeepcluster._training import DeviceData, device_data_budget


@pytest.fixture
def digits_memmap(tmp_path):
    """The first 160 digits as a read-only float32 memmap, and as an array."""
    X = load_digits().data[:160].astype(np.float32)
    path = tmp_path / "digits.f32"
    writer = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    writer[:] = X
    writer.flush()
    return np.memmap(path, dtype=np.float32, mode="r", shape=X.shape), X


def tiny_scan(**kwargs):
    params = dict(n_clusters=3, pretext=None, max_epochs=2, batch_size=32, n_neighbors=5)
    return sk.SCAN(**{**params, "random_state": 0, **kwargs})


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_streamed_batches_equal_resident_batches(dtype):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(50, 1, 4, 4)).astype(dtype)
    resident = DeviceData(X, torch.device("cpu"))
    with sk.config_context(device_data_bytes=X.nbytes - 1):
        streamed = DeviceData(X, torch.device("cpu"))
    assert resident.resident and not streamed.resident
    idx = torch.tensor([7, 0, 49, 7, 13])
    torch.testing.assert_close(streamed[idx], resident[idx], rtol=0, atol=0)
    assert streamed[idx].dtype == torch.float32
    assert len(streamed) == 50 and streamed.is_image
    torch.testing.assert_close(streamed.as_float(), resident.as_float(), rtol=0, atol=0)


def test_a_memmap_fit_over_the_budget_streams_and_equals_the_resident_fit(digits_memmap):
    memmap, X = digits_memmap
    resident = tiny_scan().fit(X)
    with sk.config_context(device_data_bytes=X.nbytes // 4):
        streamed = tiny_scan().fit(memmap)
    assert streamed.streamed_ and not resident.streamed_
    np.testing.assert_array_equal(streamed.labels_, resident.labels_)
    np.testing.assert_array_equal(streamed.predict(memmap), resident.predict(X))


def test_a_read_only_memmap_is_read_in_place(digits_memmap):
    memmap, _ = digits_memmap
    checked = tiny_scan()._validate_input(memmap, reset=True)
    assert np.shares_memory(checked, memmap) and not checked.flags.writeable  # not a copy


def test_the_budget_is_unlimited_on_the_cpu_unless_set():
    assert sk.get_config()["device_data_bytes"] is None
    assert device_data_budget(torch.device("cpu")) == float("inf")
    with sk.config_context(device_data_bytes=123):
        assert device_data_budget(torch.device("cpu")) == 123
        assert sk.get_config()["device_data_bytes"] == 123
    assert sk.get_config()["device_data_bytes"] is None


@pytest.mark.parametrize("value", [-1, 2.5, "1GB"])
def test_set_config_refuses_a_bad_budget(value):
    with pytest.raises(ValueError, match="device_data_bytes must be a non-negative integer"):
        sk.set_config(device_data_bytes=value)
    assert sk.get_config()["device_data_bytes"] is None
