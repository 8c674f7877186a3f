"""The one training loop: a skorch ``NeuralNet`` whose step is "views -> network -> method loss".

Every estimator of the package trains through :class:`DeepClusterNet`. A method contributes an
*objective*: an object with a ``loss(module, data, idx)`` method returning a dict of scalar tensors
(``"loss"`` is minimised, the other entries are logged in the history) and optionally
``on_epoch_begin(net)`` / ``on_epoch_end(net)`` hooks for its between-epoch step. Device placement,
mixed precision, index batching, history and callbacks are handled here, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from skorch import NeuralNet
from skorch.callbacks import PassthroughScoring
from torch import Tensor, nn


class DeviceData:
    """The training data as one tensor on the device, read in index batches.

    Images are kept as stored (``uint8`` images stay ``uint8``, a quarter of the float size) and
    converted to ``float32`` in ``[0, 1]`` only for the rows of a batch.

    Parameters
    ----------
    X : ndarray
        Vectors ``(n, d)`` or images ``(n, c, h, w)``, ``uint8`` or floating point.
    device : torch.device
        Where the tensor lives.
    """

    def __init__(self, X: Any, device: torch.device) -> None:
        tensor = torch.as_tensor(X)
        self.scale = 1.0 / 255.0 if tensor.dtype == torch.uint8 else 1.0
        if tensor.dtype != torch.uint8:
            tensor = tensor.to(torch.float32)
        self.tensor = tensor.to(device)
        self.device = device

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, idx: Tensor) -> Tensor:
        batch = self.tensor[idx]
        if batch.dtype == torch.uint8:
            return batch.to(torch.float32) * self.scale
        return batch

    @property
    def is_image(self) -> bool:
        return self.tensor.ndim == 4

    def subset(self, max_rows: int = 10_000) -> Tensor:
        """Up to ``max_rows`` random rows (as floats): enough for statistics, bounded in memory."""
        n = len(self)
        if n <= max_rows:
            return self[torch.arange(n, device=self.device)]
        return self[torch.randperm(n, device=self.device)[:max_rows]]


class Objective(Protocol):
    """What a method contributes to the training loop."""

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss": scalar to minimise, **other scalar terms to log}``."""


class _IndexRange(torch.utils.data.Dataset):
    """A dataset that only knows its length: batches are made of indices, not samples."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:  # pragma: no cover - never used by IndexBatches
        return i


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches :class:`IndexBatches` yields per epoch over ``n`` samples (a last batch of a single
    sample is dropped)."""
    full, rest = divmod(n, min(batch_size, n))
    return full + (rest > 1)


class IndexBatches:
    """skorch iterator yielding shuffled index batches ``(idx, None)`` on the data's device.

    A last batch of a single sample is dropped: batch normalisation cannot train on it.
    """

    def __init__(
        self,
        dataset: _IndexRange,
        batch_size: int,
        shuffle: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.n = len(dataset)
        self.batch_size = min(batch_size, self.n)
        self.shuffle = shuffle
        self.device = torch.device(device)

    def __len__(self) -> int:
        return batches_per_epoch(self.n, self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, None]]:
        order = (
            torch.randperm(self.n, device=self.device)
            if self.shuffle
            else torch.arange(self.n, device=self.device)
        )
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if idx.numel() > 1:
                yield idx, None


class DeepClusterNet(NeuralNet):
    """skorch net running an :class:`Objective` over index batches of a :class:`DeviceData`.

    Parameters
    ----------
    module : nn.Module
        Initialised network (moved to ``device`` by skorch).
    objective : Objective
        The method's loss, and its hooks.
    data : DeviceData
        Training data on the device.
    log_terms : tuple of str
        Names of the extra terms the objective returns; their epoch means go to the history.
    amp : bool
        Use bfloat16 autocast on CUDA (ignored on the CPU, where it is slower).
    **kwargs
        Passed to :class:`skorch.NeuralNet` (``optimizer``, ``lr``, ``max_epochs``, ``batch_size``,
        ``callbacks``, ``verbose``, ``device``, ``optimizer__weight_decay``...).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        objective: Objective,
        data: DeviceData,
        log_terms: tuple[str, ...] = (),
        amp: bool = True,
        **kwargs: Any,
    ) -> None:
        self.objective = objective
        self.data = data
        self.log_terms = tuple(log_terms)
        self.amp = amp
        kwargs.setdefault("criterion", nn.Identity)  # unused: the objective is the loss
        kwargs.setdefault("train_split", None)
        kwargs["iterator_train"] = IndexBatches
        kwargs["iterator_train__device"] = kwargs.get("device", "cpu")
        super().__init__(module, **kwargs)

    def get_default_callbacks(self) -> list:
        callbacks = list(super().get_default_callbacks())
        callbacks += [
            (name, PassthroughScoring(name=name, on_train=True)) for name in self.log_terms
        ]
        return callbacks

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on CUDA when ``amp`` is on; a no-op elsewhere."""
        if self.amp and torch.device(self.device).type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step_single(self, batch: tuple[Tensor, None], **fit_params: Any) -> dict[str, Any]:
        self._set_training(True)
        idx = batch[0]
        with self.autocast():
            terms = self.objective.loss(self.module_, self.data, idx)
        loss = terms["loss"]
        loss.backward()
        if self.log_terms:
            # one device sync for all the logged terms instead of one per term
            values = torch.stack([terms[name].detach().float() for name in self.log_terms]).tolist()
            for name, value in zip(self.log_terms, values):
                self.history.record_batch(name, value)
        return {"loss": loss, "y_pred": None}

    def fit_on_data(self) -> DeepClusterNet:
        """Train for ``max_epochs`` over the index batches of ``self.data``."""
        return self.fit(_IndexRange(len(self.data)), None)

    def on_epoch_begin(self, net: NeuralNet, **kwargs: Any) -> None:
        super().on_epoch_begin(net, **kwargs)
        hook = getattr(self.objective, "on_epoch_begin", None)
        if hook is not None:
            hook(self)

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        super().on_epoch_end(net, **kwargs)
        hook = getattr(self.objective, "on_epoch_end", None)
        if hook is not None:
            hook(self)

    def release_data(self) -> None:
        """Drop the references to the training data and objective (kept out of pickles)."""
        self.data = None
        self.objective = None


@torch.no_grad()
def batched_forward(
    module: nn.Module, data: DeviceData, batch_size: int, amp: bool = False
) -> Tensor:
    """Run ``module`` in eval mode over all rows of ``data``; concatenate the outputs (float32).

    ``module`` may return a tensor or a list of tensors (one per head); a list gives a list.
    """
    was_training = module.training
    module.eval()
    use_amp = amp and data.device.type == "cuda"
    outputs: list = []
    try:
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=data.device)
            with (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if use_amp
                else contextlib.nullcontext()
            ):
                out = module(data[idx])
            outputs.append(
                [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
            )
    finally:
        module.train(was_training)
    if isinstance(outputs[0], list):
        return [torch.cat(parts) for parts in zip(*outputs)]
    return torch.cat(outputs)
