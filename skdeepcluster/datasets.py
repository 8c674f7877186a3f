"""Offline image datasets for tests and benchmarks.

Nothing is downloaded: MNIST (test set) is read from local IDX files and the
8x8 digits come with scikit-learn.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

__all__ = ["load_digits_images", "load_mnist_test", "read_idx"]

#: IDX type codes (third byte of the magic number); all data is big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

MNIST_ENV_VAR = "SKDEEPCLUSTER_MNIST"
_MNIST_IMAGES = "t10k-images-idx3-ubyte"
_MNIST_LABELS = "t10k-labels-idx1-ubyte"
_MNIST_RELATIVE = Path("shared", "data", "mnist")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an array stored in the IDX format (as used for MNIST).

    The file may be gzip-compressed (detected from its content, not its
    name). An IDX file starts with a 4-byte magic number: two zero bytes, a
    type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64) and the number of dimensions ``ndim``.
    Then come ``ndim`` big-endian uint32 sizes, then the data, big-endian, in
    row-major order.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.

    Returns
    -------
    numpy.ndarray
        Array of shape given by the header and the dtype given by the type
        code, in native byte order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not valid IDX: bad magic number, unknown type code,
        truncated header, corrupt gzip stream, or a data size that does not
        match the header (truncated file or trailing bytes).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc}).") from exc

    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes).")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic number {raw[:4].hex()} does not start with 0000)."
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}.")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions.")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, {header_size} needed "
            f"for {ndim} dimensions)."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {kind}: header shape {shape} of {dtype.name} needs "
            f"{expected} bytes, found {actual}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    # Native byte order and a writable array that owns its memory.
    return data.astype(dtype.newbyteorder("="))


def _repo_root() -> Path:
    """Root of the source checkout when the package is installed editable."""
    return Path(__file__).resolve().parent.parent


def _mnist_candidate_dirs(data_home: str | os.PathLike[str] | None) -> list[Path]:
    """Folders to look for the MNIST test files in, in order of preference."""
    if data_home is not None:
        # An explicit argument is authoritative: never silently use other data.
        return [Path(data_home)]
    candidates = []
    env = os.environ.get(MNIST_ENV_VAR)
    if env:
        candidates.append(Path(env))
    candidates.append(_repo_root().parent / _MNIST_RELATIVE)
    cwd = Path.cwd()
    candidates.append(cwd.parent / _MNIST_RELATIVE)
    candidates.append(cwd / _MNIST_RELATIVE)
    # Drop repeats (e.g. when the cwd is the repository root), keeping order.
    return list(dict.fromkeys(candidates))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist_test(
    data_home: str | os.PathLike[str] | None = None, *, return_X_y: bool = True
) -> tuple[np.ndarray, np.ndarray] | Bunch:
    """Load the MNIST test set (10,000 digits, 28x28) from local IDX files.

    The folder must contain ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte.gz`` (uncompressed files without ``.gz`` work
    too). It is looked up in this order, the first folder holding both files
    wins:

    1. ``data_home``, if given (then no other place is tried);
    2. the folder in the environment variable ``SKDEEPCLUSTER_MNIST``;
    3. ``<repository root>/../shared/data/mnist``, the repository root being
       the parent of the package folder (editable installs and checkouts);
    4. ``../shared/data/mnist`` and ``./shared/data/mnist`` relative to the
       current working directory.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Folder holding the two IDX files.
    return_X_y : bool, default=True
        If True return ``(X, y)``, else a :class:`~sklearn.utils.Bunch`.

    Returns
    -------
    (X, y) : tuple of numpy.ndarray
        ``X`` uint8 of shape (n_samples, 28, 28) with pixel values 0-255 and
        ``y`` int64 of shape (n_samples,) with labels 0-9; ``n_samples`` is
        10,000 for the original files.
    data : sklearn.utils.Bunch
        If ``return_X_y`` is False: ``images`` (the ``X`` above), ``data``
        (``images`` flattened to (n_samples, 784)), ``target`` (``y``) and
        ``data_home`` (the folder used).

    Raises
    ------
    FileNotFoundError
        If no candidate folder holds both files; the message lists the
        places tried.
    ValueError
        If the files are not valid IDX or their shapes do not fit together.
    """
    tried = _mnist_candidate_dirs(data_home)
    for folder in tried:
        images_path = _find_idx(folder, _MNIST_IMAGES)
        labels_path = _find_idx(folder, _MNIST_LABELS)
        if images_path is not None and labels_path is not None:
            break
    else:
        places = "\n".join(f"  - {p}" for p in tried)
        raise FileNotFoundError(
            f"MNIST test files ({_MNIST_IMAGES}[.gz], {_MNIST_LABELS}[.gz]) not found. "
            f"Places tried:\n{places}\n"
            f"Pass data_home=... or set the {MNIST_ENV_VAR} environment variable."
        )

    X = read_idx(images_path)
    y = read_idx(labels_path)
    if X.dtype != np.uint8 or X.ndim != 3 or X.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (n, 28, 28), "
            f"got {X.dtype} of shape {X.shape}."
        )
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {X.shape[0]} labels, got an array of shape {y.shape}."
        )
    y = y.astype(np.int64)
    if return_X_y:
        return X, y
    return Bunch(images=X, data=X.reshape(X.shape[0], -1), target=y, data_home=folder)


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's 8x8 digits as images scaled to [0, 1].

    Returns
    -------
    X : numpy.ndarray of shape (1797, 8, 8), dtype float32
        Pixel intensities (originally integers 0-16) divided by 16.
    y : numpy.ndarray of shape (1797,), dtype int64
        Digit labels 0-9.
    """
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return X, y
