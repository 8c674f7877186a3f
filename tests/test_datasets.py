"""Tests for skdeepcluster.datasets."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from skdeepcluster import datasets
from skdeepcluster.datasets import load_digits_images, load_mnist_test, read_idx

TYPE_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray, dtype: str) -> bytes:
    """Encode ``array`` as IDX, written independently of the reader."""
    header = struct.pack(">BBBB", 0, 0, TYPE_CODES[dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, dtype: str, compress: bool) -> Path:
    data = idx_bytes(array, dtype)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("u1", (7,)),
        ("u1", (3, 4, 5)),
        (">i4", (6,)),
        (">i4", (2, 3, 4)),
        (">f8", (2, 2)),
        ("i1", (5,)),
        (">i2", (3, 1)),
        (">f4", (1, 2, 1, 2)),
    ],
)
def test_read_idx_round_trip(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(0)
    if dtype.endswith(("f4", "f8")):
        array = rng.normal(size=shape)
    else:
        info = np.iinfo(np.dtype(dtype))
        array = rng.integers(info.min, info.max, size=shape, endpoint=True)
    array = array.astype(dtype)
    # A misleading name: compression is detected from the content.
    out = read_idx(write_idx(tmp_path / "array.idx", array, dtype, compress))
    assert out.shape == shape
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_accepts_str_path(tmp_path):
    array = np.arange(4, dtype="u1")
    path = write_idx(tmp_path / "a.gz", array, "u1", compress=True)
    np.testing.assert_array_equal(read_idx(str(path)), array)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_read_idx_truncated_data(tmp_path, compress):
    data = idx_bytes(np.arange(24, dtype=">i4").reshape(2, 3, 4), ">i4")[:-5]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype="u1") % 7, "u1"))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 0), "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 0), "type code"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "trailing"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
)
def test_read_idx_bad_header(tmp_path, content, match):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# --- MNIST -----------------------------------------------------------------


def write_fake_mnist(folder: Path, n: int = 5) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 28 * 28).reshape(n, 28, 28) % 256
    labels = np.arange(n) % 10
    write_idx(folder / MNIST_FILES[0], images, "u1", compress=True)
    write_idx(folder / MNIST_FILES[1], labels, "u1", compress=True)
    return labels


@pytest.fixture(scope="module")
def mnist():
    try:
        return load_mnist_test()
    except FileNotFoundError as exc:
        pytest.skip(f"MNIST test files not available: {exc}")


def test_load_mnist_test(mnist):
    X, y = mnist
    assert X.shape == (10000, 28, 28)
    assert X.dtype == np.uint8
    assert y.shape == (10000,)
    assert y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert X.max() == 255 and X.min() == 0


def test_mnist_found_relative_to_repository(monkeypatch, tmp_path):
    # No env var, unrelated cwd: only <repo root>/../shared/data/mnist can work.
    repo_candidate = datasets._repo_root().parent / "shared" / "data" / "mnist"
    if not (repo_candidate / MNIST_FILES[0]).is_file():
        pytest.skip(f"no MNIST files at {repo_candidate}")
    monkeypatch.delenv(datasets.MNIST_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    bunch = load_mnist_test(return_X_y=False)
    assert bunch.data_home == repo_candidate
    assert bunch.images.shape == (10000, 28, 28)
    assert bunch.data.shape == (10000, 784)
    assert bunch.target.shape == (10000,)


@pytest.mark.parametrize("where", ["cwd/shared", "cwd/../shared"])
def test_mnist_found_relative_to_cwd(monkeypatch, tmp_path, where):
    monkeypatch.delenv(datasets.MNIST_ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "_repo_root", lambda: tmp_path / "nowhere" / "repo")
    labels = write_fake_mnist(tmp_path / "shared" / "data" / "mnist")
    cwd = tmp_path if where == "cwd/shared" else tmp_path / "repo"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    X, y = load_mnist_test()
    assert X.shape == (5, 28, 28)
    np.testing.assert_array_equal(y, labels)


def test_mnist_env_var_takes_precedence(monkeypatch, tmp_path):
    labels = write_fake_mnist(tmp_path / "fake", n=3)
    monkeypatch.setenv(datasets.MNIST_ENV_VAR, str(tmp_path / "fake"))
    X, y = load_mnist_test()
    assert X.shape == (3, 28, 28)
    np.testing.assert_array_equal(y, labels)
    # data_home wins over the env var.
    write_fake_mnist(tmp_path / "other", n=2)
    assert load_mnist_test(tmp_path / "other")[0].shape == (2, 28, 28)


def test_mnist_not_found_lists_places(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.MNIST_ENV_VAR, str(tmp_path / "env_dir"))
    monkeypatch.setattr(datasets, "_repo_root", lambda: tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_test()
    message = str(info.value)
    for place in [
        tmp_path / "env_dir",
        tmp_path / "shared" / "data" / "mnist",
        tmp_path.parent / "shared" / "data" / "mnist",
    ]:
        assert message.count(str(place) + "\n") == 1
    # An explicit data_home is the only place tried.
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        load_mnist_test(data_home=tmp_path / "missing_dir")


def test_mnist_inconsistent_files(tmp_path):
    folder = tmp_path / "bad"
    write_fake_mnist(folder, n=4)
    write_idx(folder / MNIST_FILES[1], np.zeros(3), "u1", compress=True)
    with pytest.raises(ValueError, match="labels"):
        load_mnist_test(folder)


# --- digits ----------------------------------------------------------------


def test_load_digits_images():
    X, y = load_digits_images()
    assert X.shape == (1797, 8, 8)
    assert X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (1797,)
    assert set(np.unique(y)) == set(range(10))
