"""Saving and loading fitted estimators without pickle's trust in the file, and lean pickles.

:func:`save` writes one file with :func:`torch.save`: the parameters as a JSON string, and the
fitted attributes as plain data (numbers, strings, lists, dicts, tensors) and modules. :func:`load`
reads it with ``torch.load(weights_only=True)``, which rebuilds only plain data, tensors and the
allow-listed module classes (every module class of ``torch.nn`` and of this package, plus those
the caller trusts explicitly): loading never executes code from the file. The estimator class is
taken from an allow-list too.

Pickling (``pickle``, ``joblib``) stays available for everything else: see
:mod:`skdeepcluster._pickling`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import pkgutil
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from skorch.history import History
from torch import Tensor, nn

from ._pickling import loadable_device
from .methods.c2bin import C2BIN
from .methods.drc import DRC
from .methods.lsdc import LSDC
from .methods.scan import SCAN
from .methods.sela import SeLa
from .neighbors import NeighborMiner
from .pretext import AutoEncoder, RotNet, SimCLR

__all__ = ["load", "save"]

#: The file's format tag and version: :func:`load` refuses anything else.
FORMAT = "skdeepcluster"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- save/load


#: The estimators :func:`save` writes and :func:`load` may build, by name: the package's own.
_ESTIMATOR_CLASSES = {
    cls.__name__: cls
    for cls in (SCAN, SeLa, LSDC, C2BIN, DRC, SimCLR, RotNet, AutoEncoder, NeighborMiner)
}


def _is_package_estimator(value: Any) -> bool:
    return _ESTIMATOR_CLASSES.get(type(value).__name__) is type(value)


def _module_classes() -> list[type]:
    """Every ``nn.Module`` class of ``torch.nn`` and of this package: what a file's modules may
    be made of."""
    found: set[type] = set()
    namespaces = [torch.nn]
    for path, prefix in (
        (torch.nn.modules.__path__, "torch.nn.modules."),
        ([os.path.dirname(__file__)], f"{__package__}."),  # this package's modules
    ):
        for info in pkgutil.walk_packages(path, prefix):
            namespaces.append(importlib.import_module(info.name))
    for namespace in namespaces:
        for value in vars(namespace).values():
            if inspect.isclass(value) and issubclass(value, nn.Module):
                found.add(value)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _optimizer_classes() -> dict[str, type]:
    return {
        name: value
        for name, value in vars(torch.optim).items()
        if inspect.isclass(value) and issubclass(value, torch.optim.Optimizer)
    }


def _fitted_attributes(estimator: Any) -> dict[str, Any]:
    params = estimator.get_params(deep=False)
    return {
        key: value
        for key, value in vars(estimator).items()
        if key.endswith("_") and not key.startswith("_") and key not in params
    }


# Parameters: JSON. ----------------------------------------------------------------------


def _params_to_json(value: Any, where: str, modules: list[nn.Module]) -> Any:
    """JSON for a parameter value; modules (a user's backbone) go to ``modules``, referenced by
    index, and are stored beside the JSON as modules."""
    if isinstance(value, np.generic):  # before float: np.float64 is one
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, tuple):
        return {
            "__tuple__": [_params_to_json(v, f"{where}[{i}]", modules) for i, v in enumerate(value)]
        }
    if isinstance(value, list):
        return [_params_to_json(v, f"{where}[{i}]", modules) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _params_to_json(v, f"{where}[{k!r}]", modules) for k, v in value.items()}
    if _is_package_estimator(value):
        return {
            "__estimator__": type(value).__name__,
            "params": _params_to_json(
                value.get_params(deep=False), f"{where}.get_params()", modules
            ),
        }
    if inspect.isclass(value) and value in _optimizer_classes().values():
        return {"__optimizer__": value.__name__}
    if isinstance(value, nn.Module):
        modules.append(value)
        return {"__module__": len(modules) - 1}
    raise ValueError(
        f"cannot save parameter {where}={value!r}: save stores parameters as JSON, which takes "
        "None, numbers, strings, lists, tuples, dicts with string keys, devices, torch.optim "
        "classes, modules and this package's estimators. Set it to one of those (e.g. "
        "set_params(callbacks=None)) before saving, or pickle the estimator instead (a pickle "
        "must come from a trusted source)"
    )


def _params_from_json(value: Any, modules: list[nn.Module]) -> Any:
    if isinstance(value, list):
        return [_params_from_json(v, modules) for v in value]
    if not isinstance(value, dict):
        return value
    if "__device__" in value:
        return torch.device(value["__device__"])
    if "__tuple__" in value:
        return tuple(_params_from_json(v, modules) for v in value["__tuple__"])
    if "__estimator__" in value:
        params = _params_from_json(value["params"], modules)
        return _build_estimator(value["__estimator__"], params)
    if "__optimizer__" in value:
        return _optimizer_classes()[value["__optimizer__"]]
    if "__module__" in value:
        return modules[value["__module__"]]
    return {k: _params_from_json(v, modules) for k, v in value.items()}


def _build_estimator(name: str, params: dict[str, Any]) -> Any:
    if name not in _ESTIMATOR_CLASSES:
        raise ValueError(
            f"the file names estimator class {name!r}; load builds only "
            f"{sorted(_ESTIMATOR_CLASSES)}"
        )
    return _ESTIMATOR_CLASSES[name](**params)


# Fitted attributes: plain data for weights_only. -----------------------------------------


def _smallest_int_dtype(array: np.ndarray) -> np.dtype:
    """The narrowest integer type that holds ``array`` (neighbour indices fit int16/int32)."""
    if not array.size:
        return array.dtype
    low, high = int(array.min()), int(array.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return array.dtype


def _encode(value: Any, where: str) -> Any:
    # numpy scalars first: np.float64 is a float, but the file must hold Python's own
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, Tensor, nn.Module)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OU" and all(isinstance(v, str) for v in value.ravel()):
            # strings (feature_names_in_ after a DataFrame fit): a list, rebuilt as object
            return {"__kind__": "str_array", "items": value.ravel().tolist(), "shape": value.shape}
        if value.dtype.kind not in "biuf":
            raise ValueError(f"cannot save {where}: an array of dtype {value.dtype}")
        stored = value.astype(_smallest_int_dtype(value)) if value.dtype.kind in "iu" else value
        if stored.dtype.kind == "u" and stored.dtype != np.uint8:  # torch's only unsigned type
            stored = value.astype(np.int64)
        return {
            "__kind__": "ndarray",
            "data": torch.from_numpy(np.ascontiguousarray(stored)),
            "dtype": str(value.dtype),
        }
    if isinstance(value, torch.device):
        return {"__kind__": "device", "name": str(value)}
    if isinstance(value, History):
        return {"__kind__": "history", "rows": _encode(list(value), where)}
    if isinstance(value, tuple):
        return {"__kind__": "tuple", "items": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        items = [[_encode(k, where), _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]
        return {"__kind__": "dict", "items": items}
    if _is_package_estimator(value):
        return _encode_estimator(value, where)
    raise ValueError(
        f"cannot save {where}: {type(value).__module__}.{type(value).__qualname__} is not a "
        "number, string, array, tensor, module, container or estimator of this package"
    )


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict) or "__kind__" not in value:
        return value
    kind = value["__kind__"]
    if kind == "ndarray":
        return value["data"].numpy().astype(np.dtype(value["dtype"]), copy=True)
    if kind == "str_array":
        return np.array(value["items"], dtype=object).reshape(value["shape"])
    if kind == "device":
        return torch.device(value["name"])
    if kind == "history":
        return History(_decode(value["rows"]))
    if kind == "tuple":
        return tuple(_decode(v) for v in value["items"])
    if kind == "dict":
        return {_decode(k): _decode(v) for k, v in value["items"]}
    if kind == "estimator":
        return _decode_estimator(value)
    raise ValueError(f"unknown entry kind {kind!r} in the file")


#: What ``torch.load(weights_only=True)`` raises on a file it refuses.
_REFUSED = (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError)

#: Fitted attributes :func:`save` leaves out: the skorch net of the last stage (its module is
#: ``module_``; its optimiser state is only needed to go on training).
_NOT_SAVED = ("net_",)


def _encode_estimator(estimator: Any, where: str) -> dict[str, Any]:
    name = type(estimator).__name__
    attributes = {
        key: _encode(value, f"{where}.{key}")
        for key, value in _fitted_attributes(estimator).items()
        if key not in _NOT_SAVED
    }
    modules: list[nn.Module] = []
    params = _params_to_json(estimator.get_params(deep=False), where, modules)
    return {
        "__kind__": "estimator",
        "class": name,
        "params": json.dumps(params),
        "param_modules": modules,
        "attributes": attributes,
    }


def _decode_estimator(entry: dict[str, Any]) -> Any:
    params = _params_from_json(json.loads(entry["params"]), entry.get("param_modules", []))
    estimator = _build_estimator(entry["class"], params)
    estimator.__dict__.update({k: _decode(v) for k, v in entry["attributes"].items()})
    return estimator


def _move_to(estimator: Any, device: torch.device) -> None:
    """Put every module and tensor attribute of a loaded estimator (and its pretext) on
    ``device``, which becomes its ``device_``."""
    for key, value in _fitted_attributes(estimator).items():
        if isinstance(value, (nn.Module, Tensor)):
            setattr(estimator, key, value.to(device))
        elif hasattr(value, "get_params") and hasattr(value, "device_"):
            _move_to(value, device)
    if hasattr(estimator, "device_"):
        estimator.device_ = device
    # a pretext's backbone_ is a part of its module_: share it again after moving
    module, backbone = getattr(estimator, "module_", None), getattr(estimator, "backbone_", None)
    if module is not None and backbone is not None and hasattr(module, "backbone"):
        estimator.backbone_ = module.backbone


def save(estimator: Any, path: str | os.PathLike) -> None:
    """Save an estimator of this package, fitted or not, to ``path`` in a format that needs no
    pickle to load.

    The file holds the parameters as JSON, the fitted attributes as plain data and tensors, and
    the networks as modules of ``torch.nn`` and this package's classes; it is about the size of
    the weights. The skorch net of the last stage (``net_``) and its optimiser state are not
    saved: ``module_`` holds the trained weights and ``history_`` the training history.

    Parameters
    ----------
    estimator : estimator of this package
        E.g. a fitted ``SCAN``, or a fitted ``SimCLR`` pretext.
    path : str or path-like
        The file to write (conventionally ``*.skdc``).

    Raises
    ------
    ValueError
        When a parameter is not JSON (a list of callbacks, a custom object): the message says
        which, and what is accepted.
    TypeError
        When ``estimator`` is not one of this package's estimators.

    See Also
    --------
    load : Read the file back.
    """
    if not _is_package_estimator(estimator):
        raise TypeError(
            f"save takes an estimator of this package ({sorted(_ESTIMATOR_CLASSES)}), "
            f"got {type(estimator).__qualname__}"
        )
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "estimator": _encode_estimator(estimator, type(estimator).__name__),
    }
    torch.save(payload, path)


def _refusal_reason(error: Exception) -> str:
    """The line of ``torch.load``'s refusal that names what it refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "error:" in line]
    return (named or lines or [type(error).__name__])[0][:400]


def load(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    trusted_modules: Iterable[type] = (),
) -> Any:
    """Load an estimator written by :func:`save`, without executing code from the file.

    The file is read with ``torch.load(weights_only=True)``: only plain data, tensors and the
    allow-listed module classes (``torch.nn``'s and this package's) are rebuilt, and the
    estimator class must be one of this package's.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    device : str, torch.device or None, default=None
        Where the loaded model lives (it also becomes the ``device`` parameter). None: where it
        was fitted when this machine has that device, else the CPU (with a warning).
    trusted_modules : iterable of nn.Module classes, default=()
        Further module classes the file may contain, for a model built on your own backbone
        module. Trust only classes you wrote or know.

    Returns
    -------
    estimator
        The estimator as saved: the same parameters, and the same predictions when fitted.

    Raises
    ------
    ValueError
        When the file is not a skdeepcluster file of a known version, names an estimator class
        outside the package, or contains a module class that is not allow-listed.
    """
    if not hasattr(torch.serialization, "safe_globals"):
        raise RuntimeError(
            f"load needs torch >= 2.5 (torch.serialization.safe_globals); this is torch "
            f"{torch.__version__}. Upgrade torch, or pickle the estimator instead"
        )
    allowed = [*_module_classes(), *trusted_modules]
    try:
        with torch.serialization.safe_globals(allowed):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except _REFUSED as error:
        raise ValueError(
            f"{os.fspath(path)} cannot be loaded safely: {_refusal_reason(error)} "
            "Only files written by skdeepcluster.save load; a model on your own module "
            "classes needs them in trusted_modules"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a file written by skdeepcluster.save")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has format version {payload.get('version')}; this skdeepcluster "
            f"reads version {FORMAT_VERSION}"
        )
    estimator = _decode(payload["estimator"])
    if hasattr(estimator, "device_"):
        if device is None:
            target = loadable_device(estimator.device_, type(estimator).__name__)
        else:
            target = torch.device(device)
            estimator.set_params(device=device)
        _move_to(estimator, target)
    elif device is not None:
        estimator.set_params(device=device)
    return estimator
