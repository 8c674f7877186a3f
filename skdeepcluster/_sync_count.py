"""Counting host-device synchronisations of a fit, so that none slips back into the step.

On a GPU every call that reads a tensor's value on the host (``Tensor.item``, ``tolist``,
``bool(t)``, ``float(t)``, ``nonzero``, ``.cpu()``, ``.numpy()``...) waits for the device. The
same calls are counted on the CPU, where they cost nothing, so a test on a CPU catches them.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from skorch.callbacks import Callback

#: The ``torch.Tensor`` methods that read a value on the host (a sync on a GPU).
SYNC_METHODS = (
    "item",
    "tolist",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "nonzero",
    "cpu",
    "numpy",
)


class SyncCounter:
    """Calls of :data:`SYNC_METHODS` while :attr:`active`, by method."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.active = False
        self.steps = 0
        self._depth = 0

    def __deepcopy__(self, memo: dict) -> SyncCounter:
        return self  # estimators copy their callbacks per stage: they all share this counter

    @property
    def per_step(self) -> float:
        """Syncs per counted training step."""
        return self.total / max(self.steps, 1)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@contextlib.contextmanager
def counting_syncs() -> Iterator[SyncCounter]:
    """Within the block, count the host reads of tensors (only while the counter is active:
    set ``counter.active``). Nested reads (``tolist`` calling ``item``) count once."""
    counter = SyncCounter()
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def counted(name: str, original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            on_host = getattr(self, "_copied_to_host", False)
            if counter.active and counter._depth == 0 and not on_host:
                counter.calls[name] += 1
            counter._depth += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                counter._depth -= 1
            if name == "cpu" and isinstance(result, torch.Tensor):
                # a copy made by .cpu() is on the host on any device: reading it is free
                result._copied_to_host = True
            return result

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class SteadyStateSyncs(Callback):
    """Activates a :class:`SyncCounter` from the start of the epoch ``from_epoch`` (1-based) of
    every training stage to its end, and counts the steps, so that per-epoch work (relabelling,
    logging) is amortised over the steps of those epochs."""

    def __init__(self, counter: SyncCounter, from_epoch: int = 2) -> None:
        self.counter = counter
        self.from_epoch = from_epoch

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.counter.active = len(net.history) >= self.from_epoch

    def on_batch_end(self, net: Any, training: bool = False, **kwargs: Any) -> None:
        if self.counter.active and training:
            self.counter.steps += 1

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        self.counter.active = False
