"""The one training loop: a skorch ``NeuralNet`` whose step is "views -> network -> method loss".

Every estimator of the package trains through :class:`DeepClusterNet`. A method contributes an
*objective* (:class:`Objective`): a ``loss(module, data, idx)`` method returning a dict of scalar
tensors (``"loss"`` is minimised, the other entries are logged in the history) and, optionally,
``on_epoch_begin(net)`` / ``on_epoch_end(net)`` for its between-epoch step and
``on_batch_end(net)`` for work after each optimiser step (a momentum target's update). Device
placement, mixed precision, index batching, history and callbacks are handled here, once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, PassthroughScoring
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from ._config import get_config
from ._validation import values_trusted

#: :attr:`DeviceData.sample` holds at most this many rows.
SAMPLE_ROWS = 10_000


class TrainingDivergedError(FloatingPointError):
    """A training stage produced a non-finite loss: the fit stops instead of ending with NaN
    weights (which would label every sample 0)."""


class StageProgress(Callback):
    """One tqdm progress bar for a training stage: its name, epochs done, ETA and the last
    epoch's loss. Written to stderr; ``verbose=1`` turns it on."""

    def __init__(self, description: str, total: int) -> None:
        self.description = description
        self.total = total

    def on_train_begin(self, net: NeuralNet, **kwargs: Any) -> None:
        self.bar_ = tqdm(total=self.total, desc=self.description, unit="epoch", leave=True)

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        self.bar_.set_postfix(loss=f"{net.history[-1].get('train_loss', float('nan')):.4g}")
        self.bar_.update(1)

    def on_train_end(self, net: NeuralNet, **kwargs: Any) -> None:
        self.bar_.close()
        del self.bar_  # holds the terminal stream: a fitted estimator must stay picklable


#: A training stage predicted to run longer than this many seconds on the CPU, at ``verbose=0``,
#: warns (once per fit).
LONG_STAGE_SECONDS = 1800.0
#: The prediction is made once a stage has run this many seconds, or at its first epoch's end.
LONG_STAGE_PROBE_SECONDS = 5.0


class _LongFitNotice:
    """Whether the long-fit warning was given in the current top-level fit."""

    warned = False


_long_fit_notice: contextvars.ContextVar[_LongFitNotice | None] = contextvars.ContextVar(
    "skdeepcluster_long_fit_notice", default=None
)


@contextlib.contextmanager
def one_long_fit_warning() -> Iterator[None]:
    """Around a fit: its stages, a nested pretext's included, give the long-fit warning at most
    once between them (an inner fit joins the outer fit's notice)."""
    if _long_fit_notice.get() is not None:
        yield
        return
    token = _long_fit_notice.set(_LongFitNotice())
    try:
        yield
    finally:
        _long_fit_notice.reset(token)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


class LongStageWarning(Callback):
    """Warn when a silent stage's first batches predict a very long run.

    After :data:`LONG_STAGE_PROBE_SECONDS` (or an epoch, whichever comes first) the time per
    batch, the first batch left out as warm-up, is extrapolated to the stage's epochs; above
    :data:`LONG_STAGE_SECONDS` a ``UserWarning`` gives the estimate and the remedies.
    ``verbose=0`` on the CPU turns it on, and one fit warns at most once
    (:func:`one_long_fit_warning`).
    """

    def __init__(self, description: str) -> None:
        self.description = description

    def on_train_begin(self, net: NeuralNet, **kwargs: Any) -> None:
        self.start_: float | None = None
        self.batches_, self.decided_ = 0, False

    def on_batch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        if self.decided_:
            return
        now = time.monotonic()
        if self.start_ is None:  # the first batch warms up (allocations, thread pools): not timed
            self.start_ = now
            return
        self.batches_ += 1
        if now - self.start_ >= LONG_STAGE_PROBE_SECONDS:
            self._decide(net, now - self.start_)

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        if not self.decided_ and self.batches_ and self.start_ is not None:
            self._decide(net, time.monotonic() - self.start_)

    def _decide(self, net: NeuralNet, elapsed: float) -> None:
        self.decided_ = True
        per_batch = elapsed / self.batches_
        total = per_batch * batches_per_epoch(len(net.data), net.batch_size) * net.max_epochs
        notice = _long_fit_notice.get()
        if total < LONG_STAGE_SECONDS or (notice is not None and notice.warned):
            return
        if notice is not None:
            notice.warned = True
        warnings.warn(
            f"{self.description} will take about {_duration(total)} on the CPU: {self.batches_} "
            f"batch(es) after the first took {elapsed:.1f} s, and it trains {net.max_epochs} "
            "epochs. To shorten it: a GPU (device='cuda'), fewer epochs (max_epochs, or the "
            "pretext's: pretext__max_epochs), or a smaller backbone (backbone=...). verbose=1 "
            "shows a progress bar with the time left.",
            UserWarning,
            stacklevel=2,
        )


def device_data_budget(device: torch.device) -> float:
    """Bytes of training data a fit may keep on ``device`` (see
    :func:`skdeepcluster.set_config`)."""
    configured = get_config()["device_data_bytes"]
    if configured is not None:
        return configured
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2
    return math.inf


class DeviceData:
    """The training data, read in index batches on the device.

    When it fits the device's budget (:func:`device_data_budget`) the data is one tensor on the
    device (resident). Otherwise it stays in host memory (a memmap stays on disk) and each batch's
    rows are gathered on the host and copied to the device, through pinned memory with a
    non-blocking copy on CUDA (streamed). Images are kept as stored (``uint8`` images stay
    ``uint8``, a quarter of the float size) and converted to ``float32`` in ``[0, 1]`` only for
    the rows of a batch, on the device.

    Parameters
    ----------
    X : ndarray
        Vectors ``(n, d)`` or images ``(n, c, h, w)``, ``uint8`` or floating point (a NumPy
        memmap too; it is never written).
    device : torch.device
        Where the batches are used.
    """

    def __init__(self, X: Any, device: torch.device) -> None:
        with warnings.catch_warnings():  # a read-only memmap: read, never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.as_tensor(X)
        self.scale = 1.0 / 255.0 if tensor.dtype == torch.uint8 else 1.0
        if tensor.dtype not in (torch.uint8, torch.float32):
            tensor = tensor.to(torch.float32)
        self.device = device
        self.shape = tuple(tensor.shape)
        self.resident = tensor.numel() * tensor.element_size() <= device_data_budget(device)
        self.tensor = tensor.to(device) if self.resident else tensor
        self._sample: Tensor | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Tensor) -> Tensor:
        batch = self.tensor[idx] if self.resident else self._fetch(idx)
        if batch.dtype == torch.uint8:
            return batch.to(torch.float32) * self.scale
        return batch

    def _fetch(self, idx: Tensor) -> Tensor:
        """The rows ``idx`` from host memory, on the device."""
        rows = self.tensor[idx.cpu()]
        if self.device.type != "cuda":
            return rows
        return rows.pin_memory().to(self.device, non_blocking=True)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 4

    def as_float(self) -> Tensor:
        """Every row, as floats (images in ``[0, 1]``)."""
        return self[torch.arange(len(self), device=self.device)]

    @property
    def sample(self) -> Tensor:
        """Up to ``SAMPLE_ROWS`` random rows, as floats, drawn once per ``DeviceData``: enough for
        the statistics of standardisation and augmentation, bounded in memory."""
        if self._sample is None:
            n = len(self)
            if n <= SAMPLE_ROWS:
                self._sample = self.as_float()
            else:
                self._sample = self[torch.randperm(n, device=self.device)[:SAMPLE_ROWS]]
        return self._sample


class Objective(Protocol):
    """What a method contributes to the training loop.

    Only ``loss`` is required. The optional hooks, looked up by name, are
    ``on_epoch_begin(net)`` and ``on_epoch_end(net)`` (a between-epoch step, e.g. SeLa's
    relabelling) and ``on_batch_end(net)``, called after every optimiser step (e.g. the update
    of a momentum target). An objective may also hold a :class:`HeadLosses` as ``head_losses``:
    the net resets it at the start of every epoch.
    """

    def loss(self, module: nn.Module, data: DeviceData, idx: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss": scalar to minimise, **other scalar terms to log}``."""


class HeadLosses:
    """Each head's loss summed over the batches of the current epoch, for choosing a head.

    The objective adds the detached per-head losses of every batch (:meth:`add`); the net resets
    the sums when an epoch begins, so after training :meth:`means` holds the last epoch's mean
    loss of each head.
    """

    def __init__(self, n_heads: int, device: torch.device | str) -> None:
        self.sums = torch.zeros(n_heads, device=device)
        self.batches = 0

    def reset(self) -> None:
        self.sums.zero_()
        self.batches = 0

    def add(self, losses: Tensor) -> None:
        """Add one batch's ``(n_heads,)`` losses (no device sync: the sums stay on the device)."""
        self.sums += losses.detach().float()
        self.batches += 1

    def means(self) -> np.ndarray:
        """Mean loss of each head over the batches added since the last reset."""
        return (self.sums / max(self.batches, 1)).cpu().numpy()


def clusters_used(labels: Tensor, n_clusters: int) -> Tensor:
    """How many of ``n_clusters`` clusters ``labels`` uses, as a float tensor on their device
    (for the history). Counted by a scatter, not ``torch.bincount``, whose output size depends
    on the labels' maximum: a device sync on a GPU."""
    counts = torch.zeros(n_clusters, device=labels.device).scatter_add_(
        0, labels, torch.ones_like(labels, dtype=torch.float32)
    )
    return (counts > 0).sum().float()


def select_head(head_losses: np.ndarray, head_sizes: Sequence[int], n_clusters: int) -> int:
    """Index of the head with ``n_clusters`` clusters whose loss is lowest (label-free choice)."""
    candidates = [h for h, k in enumerate(head_sizes) if k == n_clusters]
    if not candidates:
        raise ValueError(f"no head has n_clusters={n_clusters} clusters; head sizes {head_sizes}")
    return int(min(candidates, key=lambda h: head_losses[h]))


class _IndexRange(torch.utils.data.Dataset):
    """A dataset that only knows its length: batches are made of indices, not samples."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:  # pragma: no cover - never used by IndexBatches
        return i


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each training batch over ``n`` samples: full batches of
    ``min(batch_size, n)`` rows, with a remainder of less than half a batch merged into the
    last one (so no batch is smaller than half a batch: per-batch statistics such as batch
    normalisation, entropies of the mean assignment and column contrasts need full batches).
    """
    size = min(batch_size, n)
    full, rest = divmod(n, size)
    stops = [size * (i + 1) for i in range(full)]
    if rest and 2 * rest >= size:
        stops.append(n)
    else:
        stops[-1] = n
    return list(zip([0, *stops[:-1]], stops))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches :class:`IndexBatches` yields per epoch over ``n`` samples (see
    :func:`batch_bounds`)."""
    return len(batch_bounds(n, batch_size))


class IndexBatches:
    """skorch iterator yielding shuffled index batches ``(idx, None)`` on the data's device.

    Every sample is in one batch per epoch; a short remainder joins the last batch
    (:func:`batch_bounds`).
    """

    def __init__(
        self,
        dataset: _IndexRange,
        batch_size: int,
        shuffle: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.n = len(dataset)
        self.batch_size = batch_size
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
        for start, stop in batch_bounds(self.n, self.batch_size):
            yield order[start:stop], None


#: CPU flags of the instructions that make bfloat16 matrix products fast (AMX tiles, or the
#: AVX-512 bfloat16 dot products).
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (:data:`FAST_BF16_CPU_FLAGS`), read from
    ``/proc/cpuinfo`` (False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in FAST_BF16_CPU_FLAGS)


def bf16_on(device: torch.device | str) -> bool:
    """Whether training on ``device`` runs under bfloat16 autocast
    (:func:`skdeepcluster.set_config`, ``bf16``): on CUDA unless ``bf16=False``; on the CPU
    with ``bf16=True``, or with "auto" where the CPU has bfloat16 instructions."""
    setting = get_config()["bf16"]
    if torch.device(device).type == "cuda":
        return setting is not False
    return setting is True or (setting == "auto" and cpu_has_fast_bf16())


def use_channels_last(module: nn.Module) -> None:
    """Put a convolutional ``module``'s weights in the channels-last memory format, in place,
    when :func:`skdeepcluster.set_config` has ``channels_last`` (the default).

    Convolutions follow their weights' layout, so the activations, their gradients and the
    optimiser's state are channels-last too; the parameters stay the same objects, so an
    optimiser built on them still holds them. Networks without 2-d convolutions are left as
    they are.
    """
    if get_config()["channels_last"] and any(isinstance(m, nn.Conv2d) for m in module.modules()):
        module.to(memory_format=torch.channels_last)


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``enabled`` and :func:`bf16_on` the device; a no-op otherwise."""
    if enabled and bf16_on(device):
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    stage : str
        What this net trains, e.g. ``"SCAN clustering"``: named in the errors of a diverged or
        interrupted run.
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
        stage: str = "training",
        amp: bool = True,
        **kwargs: Any,
    ) -> None:
        self.objective = objective
        self.data = data
        self.log_terms = tuple(log_terms)
        self.stage = stage
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
        """bfloat16 autocast when ``amp`` is on and :func:`bf16_on` the device."""
        return autocast(self.device, self.amp)

    def train_step_single(self, batch: tuple[Tensor, None], **fit_params: Any) -> dict[str, Any]:
        self._set_training(True)
        idx = batch[0]
        module = self.module_ if self.sharded_ is None else self.sharded_
        with self.autocast(), values_trusted():
            terms = self.objective.loss(module, self.data, idx)
        loss = terms["loss"]
        loss.backward()
        # kept on the device: read once at the end of the epoch (run_single_epoch)
        self.epoch_terms_.append(
            torch.stack(
                [loss.detach().float(), *(terms[n].detach().float() for n in self.log_terms)]
            )
        )
        return {"loss": loss, "y_pred": None}

    def run_single_epoch(
        self, iterator: Any, training: bool, prefix: str, step_fn: Any, **fit_params: Any
    ) -> None:
        """skorch's epoch, without its host read of every step's loss (``.item()``, a device
        sync per step on a GPU): the losses and logged terms of the steps stay on the device and
        are read in one transfer at the end of the epoch, then written to each batch's row of
        the history (``train_loss``, ``train_batch_size`` and the terms, as skorch writes them).
        Callbacks therefore see a batch's loss from the end of its epoch on."""
        if iterator is None:
            return
        self.epoch_terms_: list[Tensor] = []
        sizes = []
        for batch in iterator:
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            sizes.append(len(batch[0]))
            self.notify("on_batch_end", batch=batch, training=training, **step)
        names = (prefix + "_loss", *self.log_terms)
        values = torch.stack(self.epoch_terms_).tolist() if self.epoch_terms_ else []
        rows = self.history[-1]["batches"][-len(sizes) :] if sizes else []
        for row, size, batch_values in zip(rows, sizes, values, strict=True):
            row.update(zip(names, batch_values))
            row[prefix + "_batch_size"] = size
        self.epoch_terms_ = []
        self.history.record(prefix + "_batch_count", len(sizes))

    def fit_on_data(self) -> DeepClusterNet:
        """Train for ``max_epochs`` over the index batches of ``self.data``.

        Raises
        ------
        KeyboardInterrupt
            When the user pressed Ctrl-C during the stage. skorch ends a net's fit quietly on
            any KeyboardInterrupt (its ``EarlyStopping`` raises one to stop a stage early); a
            real interrupt (SIGINT) is told apart and raised again, so that a multi-stage fit
            stops instead of starting its next stage.
        TrainingDivergedError
            When an epoch's loss is not finite.
        """
        with _sigint_recorder() as sigint, distributed.global_batch_norm(self.module):
            self.fit(_IndexRange(len(self.data)), None)
        if sigint.received:
            raise KeyboardInterrupt(
                f"{self.stage} interrupted after {len(self.history)} epoch(s) of {self.max_epochs}"
            )
        return self

    def on_train_begin(self, net: NeuralNet, **kwargs: Any) -> None:
        super().on_train_begin(net, **kwargs)
        use_channels_last(self.module_)
        # in a distributed fit the objective calls the network on this process's rows of the
        # batch, in DistributedDataParallel, its outputs gathered
        self.sharded_ = (
            None
            if distributed.current() is None
            else distributed.trained_module(self.module_, torch.device(self.device))
        )

    def on_train_end(self, net: NeuralNet, **kwargs: Any) -> None:
        super().on_train_end(net, **kwargs)
        self.sharded_ = None  # the DistributedDataParallel wrapper is dropped

    def _objective_hook(self, name: str) -> None:
        hook = getattr(self.objective, name, None)
        if hook is not None:
            hook(self)

    def on_epoch_begin(self, net: NeuralNet, **kwargs: Any) -> None:
        super().on_epoch_begin(net, **kwargs)
        head_losses = getattr(self.objective, "head_losses", None)
        if head_losses is not None:
            head_losses.reset()
        self._objective_hook("on_epoch_begin")

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        super().on_epoch_end(net, **kwargs)
        self._check_finite_loss()
        self._objective_hook("on_epoch_end")

    def _check_finite_loss(self) -> None:
        """Stop at the first epoch whose mean loss is NaN or infinite (one check an epoch: the
        per-batch losses are on the host already). The epoch's ``train_loss`` is written by a
        callback after this hook runs, so the mean is taken from the batches."""
        batches = self.history[-1].get("batches") or []
        losses = [row["train_loss"] for row in batches if "train_loss" in row]
        loss = float(np.mean(losses)) if losses else None
        what = None
        if loss is not None and not math.isfinite(loss):
            what = f"the training loss is {loss}"
        elif not _parameters_finite(self.module_):
            what = "the network's weights are no longer finite"
        if what is not None:
            raise TrainingDivergedError(
                f"{self.stage} diverged: {what} at epoch {len(self.history)} of "
                f"{self.max_epochs}. Lower lr (it is {self.lr}) or check X for extreme values"
            )

    def on_batch_end(
        self, net: NeuralNet, batch: Any = None, training: bool = False, **kwargs: Any
    ) -> None:
        # skorch calls this after train_step, i.e. after optimizer.step(): an EMA update here
        # sees the stepped parameters
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        if training:
            self._objective_hook("on_batch_end")

    def release_data(self) -> None:
        """Drop the references to the training data and objective (kept out of pickles)."""
        self.data = None
        self.objective = None


class _SigintRecord:
    received = False


@contextlib.contextmanager
def _sigint_recorder() -> Iterator[_SigintRecord]:
    """Record whether a SIGINT (Ctrl-C) arrives in the block; it still raises KeyboardInterrupt
    as before. Only the main thread receives signals, so elsewhere nothing is installed."""
    record = _SigintRecord()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield record
        return

    def handler(signum: int, frame: Any) -> Any:
        record.received = True
        return previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield record
    finally:
        signal.signal(signal.SIGINT, previous)


@torch.no_grad()
def _parameters_finite(module: nn.Module) -> bool:
    """Whether every parameter of ``module`` is finite (one device sync for all of them)."""
    flags = [torch.isfinite(p).all() for p in module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


@torch.no_grad()
def batched_forward(
    module: nn.Module,
    data: DeviceData,
    batch_size: int,
    amp: bool = False,
    views: Callable[[Tensor], Tensor] | None = None,
) -> Tensor | list[Tensor]:
    """Run ``module`` in eval mode over all rows of ``data``; concatenate the outputs (float32).

    ``module`` may return a tensor or a list of tensors (one per head); a list gives a list.
    ``views`` (an augmentation) is applied to each batch before the module. In a distributed
    fit each process runs the module on its share of every batch and the outputs are gathered
    (the views are made of the whole batch on every process, as one process would make them).
    """
    was_training = module.training
    module.eval()
    outputs: list = []
    try:
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=data.device)
            first, last = distributed.shard_of(len(idx))  # all of them on one process
            x = data[idx[first:last]] if views is None else views(data[idx])[first:last]
            with autocast(data.device, amp):
                out = module(x)
            out = distributed.gather_outputs(out, len(idx))
            outputs.append(
                [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
            )
    finally:
        module.train(was_training)
    if isinstance(outputs[0], list):
        return [torch.cat(parts) for parts in zip(*outputs)]
    return torch.cat(outputs)
