"""Lean pickles of fitted estimators: each weight once, and loadable on a machine without the
device they were fitted on.

:class:`LeanPickleMixin` (a base of every estimator) writes every module and tensor attribute in
one ``torch.save`` blob and drops the skorch net's training state; the safe, pickle-free format
is :mod:`skdeepcluster.persistence` (``save`` / ``load``), which uses :func:`loadable_device` too.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch
from torch import Tensor, nn

# ------------------------------------------------------------------------------ devices


def loadable_device(device: torch.device, owner: str) -> torch.device:
    """``device`` when this machine has it, else the CPU with a warning (a CUDA model on a
    CPU-only machine)."""
    device = torch.device(device)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        warnings.warn(
            f"{owner} was trained on {device}, which this machine does not have: it is loaded on "
            "the CPU. Predictions work as before; set_params(device='cpu') before refitting here.",
            UserWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return device


# -------------------------------------------------------------------------- lean pickles

#: skorch's attributes that hold the module, criterion and optimiser (and their state).
_NET_TRAINING_STATE = ("module", "criterion", "optimizer")


def lean_net(net: Any) -> Any:
    """A copy of a fitted skorch net without its module, criterion and optimiser: what stays is
    its history, parameters and (emptied of torch state) callbacks.

    The weights are the estimator's ``module_`` already, and the optimiser state (twice the
    weights for Adam) is only needed to go on training, which the estimators never do.
    """
    lean = object.__new__(type(net))
    dropped = {f"{prefix}_" for prefix in _NET_TRAINING_STATE}  # not "optimizer__lr" & co
    lean.__dict__ = {key: value for key, value in net.__dict__.items() if key not in dropped}
    if isinstance(lean.__dict__.get("module"), nn.Module):
        lean.module = None  # the instance the net was built on: it is ``module_``
    lean.initialized_ = False
    # the fitted callbacks are in both lists: the ``callbacks`` parameter holds the instances
    # that ``callbacks_`` names (an LR scheduler's optimiser included)
    for key in ("callbacks", "callbacks_"):
        if lean.__dict__.get(key):
            lean.__dict__[key] = [_callback_without_torch_state(cb) for cb in lean.__dict__[key]]
    return lean


def _callback_without_torch_state(entry: Any) -> Any:
    """A ``callbacks`` entry (a callback or a ``(name, callback)`` pair) without torch state."""
    if isinstance(entry, tuple) and len(entry) == 2:
        return entry[0], _without_torch_state(entry[1])
    return _without_torch_state(entry)


def _holds_torch_state(value: Any) -> bool:
    torch_state = (Tensor, nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    if isinstance(value, torch_state):
        return True
    if isinstance(value, dict):
        return any(_holds_torch_state(v) for v in value.values())
    return False


def _without_torch_state(callback: Any) -> Any:
    """A shallow copy of a fitted callback without the attributes that reference the optimiser,
    module or tensors (an LR scheduler's ``lr_scheduler_``, early stopping's best weights)."""
    if isinstance(callback, type) or not hasattr(callback, "__dict__"):
        return callback  # a class (skorch accepts them) or a plain object: nothing fitted
    copy = object.__new__(type(callback))
    copy.__dict__ = {k: v for k, v in vars(callback).items() if not _holds_torch_state(v)}
    return copy


class LeanPickleMixin:
    """Pickle the torch parts of a fitted estimator once, device-independently.

    Every attribute holding a module or a tensor is written together in one ``torch.save``
    blob (shared submodules, such as a pretext's ``backbone_`` inside its ``module_``, stay
    shared), and ``net_`` loses its training state (:func:`lean_net`). Unpickling maps the
    tensors to the fitted device when this machine has it, and to the CPU otherwise, with a
    warning.
    """

    def __getstate__(self) -> dict[str, Any]:
        # a copy: object.__getstate__ returns the instance's own __dict__, popped from below
        state = dict(super().__getstate__())  # type: ignore[misc]
        torch_attributes = {
            key: state.pop(key)
            for key in [k for k, v in state.items() if isinstance(v, (Tensor, nn.Module))]
        }
        net = state.get("net_")
        if net is not None:
            state["net_"] = lean_net(net)
            module = getattr(net, "module_", None)
            shared = [k for k, v in torch_attributes.items() if v is module]
            state["_net_module_attribute"] = shared[0] if shared else None
        buffer = io.BytesIO()
        torch.save(torch_attributes, buffer)
        state["_torch_attributes"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob = state.pop("_torch_attributes", None)
        net_module = state.pop("_net_module_attribute", None)
        super().__setstate__(state)  # type: ignore[misc]
        if blob is None:
            return
        if "device_" in state:
            self.device_ = loadable_device(state["device_"], type(self).__name__)
        target = getattr(self, "device_", torch.device("cpu"))
        # weights_only=False: a pickle trusts its file anyway; save/load is the safe format
        attributes = torch.load(io.BytesIO(blob), map_location=target, weights_only=False)
        self.__dict__.update(attributes)
        if net_module is not None and getattr(self, "net_", None) is not None:
            self.net_.module_ = attributes[net_module]
            if self.net_.module is None:
                self.net_.module = self.net_.module_
            # initialized_ stays False: without criterion and optimiser the net cannot train
