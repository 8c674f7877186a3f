"""Training on several processes with ``torch.distributed``: the same script under ``torchrun``.

A fit becomes distributed when ``torch.distributed`` is initialised with more than one process,
or when the ``torchrun`` environment (``WORLD_SIZE`` above 1, ``RANK``, ``MASTER_ADDR``) is
present, in which case the fit initialises the default process group itself (NCCL on CUDA, gloo
on the CPU). Nothing else changes in the user's code.

How a distributed fit computes (design and reasons: ``docs/design.md``, "Scale-out"):

- every process holds the data, draws the same seed and makes the same global batch, with the
  same augmented views;
- the network runs on this process's shard of the batch's rows only
  (:class:`ShardedModule`, the module wrapped in ``DistributedDataParallel``), and the outputs
  of all processes are gathered with their gradient (:func:`gather_rows`), so the method's loss
  sees the global batch: entropies of the mean assignment, column contrasts, NT-Xent negatives
  and batch normalisation (:class:`GlobalBatchNorm1d`, :class:`GlobalBatchNorm2d`) are those of
  the global batch, whatever the number of processes;
- forward passes over the whole data (features for mining, relabelling, predictions) are
  split by rows and gathered (:func:`gather_rows`), SeLa's Sinkhorn runs on row shards with
  the cluster sums all-reduced, and neighbour mining splits the queries.

Every process ends with the same fitted estimator. Only process 0 shows progress and writes
checkpoints. A failed or silent process stops the others with :class:`DistributedTrainingError`
within :data:`TIMEOUT_SECONDS` (``SKDEEPCLUSTER_TIMEOUT`` in the environment overrides it).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "TIMEOUT_SECONDS",
    "DistributedTrainingError",
    "GlobalBatchNorm1d",
    "GlobalBatchNorm2d",
    "ShardedModule",
    "all_reduce_sum",
    "current",
    "gather_rows",
    "local_module",
    "shard_bounds",
    "sharded",
]

#: Seconds a process waits for the others in a collective before the fit stops with
#: :class:`DistributedTrainingError`; ``SKDEEPCLUSTER_TIMEOUT`` in the environment overrides it.
TIMEOUT_SECONDS = 600.0


class DistributedTrainingError(RuntimeError):
    """A distributed fit stopped: another process failed, left, or did not answer in time.

    Raised on every surviving process, so that none of them waits forever.
    """


@dataclass(frozen=True)
class Processes:
    """The processes of the fit running now: this one's ``rank`` among ``world_size``."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Whether this is process 0, the one that prints and writes files."""
        return self.rank == 0


_processes: contextvars.ContextVar[Processes | None] = contextvars.ContextVar(
    "skdeepcluster_processes", default=None
)


def current() -> Processes | None:
    """The processes of the distributed fit running now, or None outside one (a single-process
    fit, or ``predict`` after the fit: then nothing is exchanged between processes)."""
    return _processes.get()


def timeout_seconds() -> float:
    """:data:`TIMEOUT_SECONDS`, or ``SKDEEPCLUSTER_TIMEOUT`` from the environment."""
    value = os.environ.get("SKDEEPCLUSTER_TIMEOUT")
    if value is None:
        return TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(
            f"SKDEEPCLUSTER_TIMEOUT must be a positive number of seconds, got {value!r}"
        )
    return seconds


def _torchrun_world_size() -> int:
    """``WORLD_SIZE`` when the torchrun environment is complete, else 1."""
    env = os.environ
    if not {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"} <= env.keys():
        return 1
    return int(env["WORLD_SIZE"])


def _init_process_group(device: torch.device) -> None:
    """The default process group from the torchrun environment (NCCL on CUDA, gloo else)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    # ended before the interpreter exits: gloo's threads abort the process if left running
    atexit.register(_end_process_group)


def _end_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size_for_fit(device: torch.device) -> int:
    """Processes a fit starting now trains on: the initialised default group's size, else the
    torchrun environment's ``WORLD_SIZE`` (initialising the group), else 1."""
    if current() is not None:
        return current().world_size
    if not dist.is_available():
        return 1
    if not dist.is_initialized():
        if _torchrun_world_size() <= 1:
            return 1
        _init_process_group(device)
    if dist.get_world_size() > 1 and dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError(
            f"device={str(device)!r}, but torch.distributed's process group uses NCCL, which "
            "exchanges CUDA tensors only: fit on device='cuda', or initialise the group with "
            "the gloo backend for CPU fits"
        )
    return dist.get_world_size()


def fit_device(device: torch.device) -> torch.device:
    """``device`` for this process: under torchrun a bare "cuda" means this process's GPU,
    ``cuda:LOCAL_RANK``, which becomes the current CUDA device (NCCL's collectives run there)."""
    if device.type != "cuda":
        return device
    if device.index is None:
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def processes(world_size: int) -> Iterator[Processes | None]:
    """Run a fit's body as the distributed fit of ``world_size`` processes (None when 1).

    A nested fit (a method's pretext) joins the running one. A collective that fails (another
    process died, or did not answer within the timeout) becomes a
    :class:`DistributedTrainingError`; an error of this process's own ends its process group,
    so the others stop at their next collective instead of waiting for the timeout.
    """
    if world_size <= 1 or current() is not None:
        yield current()
        return
    token = _processes.set(Processes(dist.get_rank(), world_size))
    try:
        yield current()
    except DistributedTrainingError:
        raise
    except RuntimeError as exc:
        if not _is_collective_failure(exc):
            _end_after_own_error()
            raise
        raise DistributedTrainingError(
            f"process {dist.get_rank()} of {world_size}: the fit stopped because another "
            f"process failed, left, or did not answer within {timeout_seconds():g} s "
            f"(SKDEEPCLUSTER_TIMEOUT). Its own error is in that process's output. ({exc})"
        ) from exc
    except BaseException:
        _end_after_own_error()
        raise
    finally:
        _processes.reset(token)


#: Words of the errors that gloo and NCCL raise when a peer fails or a collective times out (as
#: plain RuntimeErrors from gloo).
_COLLECTIVE_FAILURE_WORDS = ("gloo", "nccl", "connection closed", "connection reset", "timed out")


def _is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from a collective whose peers failed (not from this process)."""
    message = str(exc).lower()
    return isinstance(exc, dist.DistBackendError) or any(
        word in message for word in _COLLECTIVE_FAILURE_WORDS
    )


def _end_after_own_error() -> None:
    """This process failed: end its process group, so that the other processes' collectives
    fail now instead of waiting for the timeout."""
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def check_same_input(summary: Sequence[float], what: str) -> None:
    """Raise ValueError on every process unless all processes passed the same ``summary``
    (numbers describing the fit's input: its shape, a checksum, the seed)."""
    local = torch.tensor([float(v) for v in summary], dtype=torch.float64, device=_host_or_gpu())
    everyone = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, local)
    mismatched = [r for r, theirs in enumerate(everyone) if not torch.equal(theirs, everyone[0])]
    if mismatched:
        raise ValueError(
            f"every process of a distributed fit must call fit with the same {what}; processes "
            f"{mismatched} differ from process 0 ({everyone[0].tolist()} against "
            f"{[everyone[r].tolist() for r in mismatched]})"
        )


def broadcast_seed(seed: int) -> int:
    """Process 0's ``seed``, on every process: ``random_state=None`` draws one seed for all."""
    value = torch.tensor([seed], dtype=torch.int64, device=_host_or_gpu())
    dist.broadcast(value, src=0)
    return int(value.item())


# ---------------------------------------------------------------------------- rows and shards


def shard_bounds(n_rows: int, world_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each process's rows among ``n_rows``: contiguous, sizes differing by
    at most one, in rank order."""
    edges = [n_rows * r // world_size for r in range(world_size + 1)]
    return list(itertools.pairwise(edges))


def _host_or_gpu() -> torch.device:
    """Where small collectives run: the CPU for gloo, this process's GPU for NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _backend_device(tensor: Tensor) -> torch.device:
    """Where a collective on ``tensor`` runs: gloo groups on the CPU, NCCL on CUDA."""
    return torch.device("cpu") if dist.get_backend() == "gloo" else tensor.device


def _reduced(tensor: Tensor, op: str = "sum") -> Tensor:
    """A new tensor: ``tensor`` reduced (``"sum"`` or ``"max"``) over the processes, without
    gradient, on ``tensor``'s device (the collective runs where the backend needs it)."""
    total = tensor.detach().to(_backend_device(tensor), copy=True).contiguous()
    dist.all_reduce(total, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return total.to(tensor.device)


def _all_gather_padded(local: Tensor, n_rows: int, world_size: int) -> Tensor:
    """Every process's rows, in rank order: the ``n_rows`` rows of which ``local`` is this
    process's shard (:func:`shard_bounds`)."""
    bounds = shard_bounds(n_rows, world_size)
    width = max(stop - start for start, stop in bounds)
    where = _backend_device(local)
    padded = local.new_zeros((width, *local.shape[1:]), device=where)
    padded[: len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    gathered = torch.cat([part[: stop - start] for part, (start, stop) in zip(parts, bounds)])
    return gathered.to(local.device)


class _GatherRows(torch.autograd.Function):
    """All-gather of row shards whose backward all-reduces the gradient, then keeps this
    process's rows: each process's loss is the same function of the gathered rows, so the sum
    over processes is the number of processes times the gradient, which
    ``DistributedDataParallel``'s average of the parameter gradients divides back out."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, n_rows: int, world_size: int, rank: int) -> Tensor:
        ctx.bounds = shard_bounds(n_rows, world_size)[rank]
        return _all_gather_padded(local, n_rows, world_size)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        start, stop = ctx.bounds
        return _reduced(grad)[start:stop], None, None, None


def gather_rows(local: Tensor, n_rows: int) -> Tensor:
    """The ``n_rows`` rows of every process, of which ``local`` is this process's shard
    (:func:`shard_bounds`), differentiable; ``local`` itself outside a distributed fit.

    The gradient reaching ``local`` is the sum of every process's gradient of the gathered rows
    (see :class:`_GatherRows`)."""
    processes_now = current()
    if processes_now is None:
        return local
    return _GatherRows.apply(local, n_rows, processes_now.world_size, processes_now.rank)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is the sum of the gradients over processes."""

    @staticmethod
    def forward(ctx: Any, local: Tensor) -> Tensor:
        return _reduced(local)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _reduced(grad)


def all_reduce_sum(local: Tensor) -> Tensor:
    """``local`` summed over the processes of the running fit, differentiable (``local``
    outside a distributed fit)."""
    if current() is None:
        return local
    return _AllReduceSum.apply(local)


def _map_outputs(function: Callable[[Tensor], Tensor], outputs: Any) -> Any:
    if isinstance(outputs, Tensor):
        return function(outputs)
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_map_outputs(function, item) for item in outputs)
    raise TypeError(
        f"a module trained on several processes must return tensors or lists of them, got "
        f"{type(outputs).__name__}"
    )


def gather_outputs(local_outputs: Any, n_rows: int) -> Any:
    """:func:`gather_rows` on a tensor, or on each tensor of a list (one per head)."""
    return _map_outputs(lambda local: gather_rows(local, n_rows), local_outputs)


# ---------------------------------------------------------------------------- the module


class _Dispatch(nn.Module):
    """Runs ``module``'s submodule named ``path`` (the module itself for ""), so that one
    ``DistributedDataParallel`` serves objectives that call parts of the network
    (``module.backbone(x)``, ``module.heads[0](f)``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, path: str = "") -> Any:
        return self.module.get_submodule(path)(x)  # "" is the module itself


class ShardedModule:
    """A network as a distributed fit's objective sees it: called on the global batch, it runs
    on this process's rows only and returns the gathered outputs of all processes.

    Attribute access reaches the network's parts the same way (``sharded.backbone(x)``,
    ``sharded.heads[0](f)``, iteration over ``sharded.heads``); other attributes are the
    network's own. Outside a distributed fit :func:`sharded` returns the network itself, so an
    objective is written once for both.

    Parameters
    ----------
    run : callable
        ``run(x, path)``: the submodule at ``path`` on this process's rows ``x``.
    module : nn.Module
        The network part this object stands for.
    path : str
        Its name in the network (``""`` for the whole).
    """

    def __init__(self, run: Callable[[Tensor, str], Any], module: nn.Module, path: str = ""):
        self._run = run
        self._module = module
        self._path = path

    def __call__(self, x: Tensor) -> Any:
        processes_now = current()
        if processes_now is None:
            return self._module(x)
        start, stop = shard_bounds(len(x), processes_now.world_size)[processes_now.rank]
        # random draws inside the network (dropout) must not move this process's generator
        # apart from the others': they all draw the same global batches and views
        with torch.random.fork_rng(devices=_cuda_index(x)):
            local = self._run(x[start:stop], self._path)
        return gather_outputs(local, len(x))

    def _child(self, name: str, child: nn.Module) -> ShardedModule:
        return ShardedModule(self._run, child, f"{self._path}.{name}" if self._path else name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self._module, name)
        return self._child(name, attribute) if isinstance(attribute, nn.Module) else attribute

    def __iter__(self) -> Iterator[ShardedModule]:
        return (self._child(name, child) for name, child in self._module.named_children())

    def __len__(self) -> int:
        return len(self._module)

    def __getitem__(self, index: int) -> ShardedModule:
        names = [name for name, _ in self._module.named_children()]
        return self._child(names[index], self._module[index])


def _cuda_index(x: Tensor) -> list[int]:
    return [x.device.index or 0] if x.device.type == "cuda" else []


def _plain_run(module: nn.Module) -> Callable[[Tensor, str], Any]:
    return lambda x, path: module.get_submodule(path)(x)


def sharded(module: nn.Module) -> Any:
    """``module`` as a :class:`ShardedModule` (without gradient synchronisation: for networks
    that are not trained by gradients, such as a momentum target) in a distributed fit; the
    module itself outside one."""
    if current() is None or isinstance(module, ShardedModule):
        return module
    return ShardedModule(_plain_run(module), module)


def trained_module(module: nn.Module, device: torch.device) -> ShardedModule:
    """``module`` wrapped in ``DistributedDataParallel`` (one per training stage), as a
    :class:`ShardedModule`. The static graph lets an objective call several parts of the network
    per step, and leave some parameters out of its loss."""
    ddp = nn.parallel.DistributedDataParallel(
        _Dispatch(module),
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,  # every process computes the same global statistics
        static_graph=True,
    )
    return ShardedModule(lambda x, path: ddp(x, path), module)


def local_module(module: Any) -> nn.Module:
    """The network behind a :class:`ShardedModule` (the module itself otherwise)."""
    return module._module if isinstance(module, ShardedModule) else module


# ---------------------------------------------------------------------------- batch norm


class _GlobalBatchNorm:
    """Batch normalisation with the statistics of the global batch: the rows of every process,
    in training mode within a distributed fit (torch's ``SyncBatchNorm`` refuses the CPU).
    Mean, then variance about it, are two differentiable all-reduced sums
    (:func:`all_reduce_sum`), as exact as one process's batch norm. Elsewhere it is torch's
    batch norm."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and current() is not None):
            return super().forward(x)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        values = x.float()
        count = values.new_tensor([values.numel() // values.shape[1]])
        sums = all_reduce_sum(torch.cat([values.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = values - mean.view(shape)
        variance = all_reduce_sum((centred * centred).sum(dims)) / n
        self._update_running_statistics(mean, variance, n)
        out = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_statistics(self, mean: Tensor, variance: Tensor, n: Tensor) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = variance * n / (n - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


class GlobalBatchNorm1d(_GlobalBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the global batch in a distributed fit (see
    :class:`_GlobalBatchNorm`)."""


class GlobalBatchNorm2d(_GlobalBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the global batch in a distributed fit (see
    :class:`_GlobalBatchNorm`)."""


_GLOBAL_BATCH_NORMS = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d}


@contextlib.contextmanager
def global_batch_norm(module: nn.Module) -> Iterator[None]:
    """Within the block, the batch norms of ``module`` use the global batch's statistics (their
    class is swapped for :class:`GlobalBatchNorm1d` / ``2d``, same state); restored after."""
    swapped = []
    for layer in module.modules():
        replacement = _GLOBAL_BATCH_NORMS.get(type(layer))
        if replacement is not None:
            swapped.append((layer, type(layer)))
            layer.__class__ = replacement
    try:
        yield
    finally:
        for layer, original in swapped:
            layer.__class__ = original


# ---------------------------------------------------------------------------- whole-data work


def shard_of(n_rows: int) -> tuple[int, int]:
    """``(start, stop)`` of this process's rows of ``n_rows`` (all of them outside a distributed
    fit)."""
    processes_now = current()
    if processes_now is None:
        return 0, n_rows
    return shard_bounds(n_rows, processes_now.world_size)[processes_now.rank]


def gather_shards(local: Tensor, n_rows: int) -> Tensor:
    """Every process's shard of ``n_rows`` rows (:func:`shard_of`), without gradient; ``local``
    outside a distributed fit."""
    processes_now = current()
    if processes_now is None:
        return local
    return _all_gather_padded(local, n_rows, processes_now.world_size)


def reduce_over_processes(tensor: Tensor, op: str = "sum") -> Tensor:
    """``tensor`` reduced (``"sum"`` or ``"max"``) over the processes of ``torch.distributed``'s
    default group, without gradient (a new tensor, on ``tensor``'s device).

    Raises
    ------
    RuntimeError
        When ``torch.distributed`` is not initialised.
    """
    _require_process_group()
    return _reduced(tensor, op)


def _require_process_group() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "torch.distributed is not initialised: call torch.distributed.init_process_group "
            "(torchrun sets up its environment) before a computation across processes"
        )


def rows_before(n_local: int) -> tuple[int, int]:
    """``(offset, total)``: the rows held by the processes before this one of the default group,
    and by all of them (each process holds ``n_local`` rows of one table, in rank order)."""
    _require_process_group()
    where = _host_or_gpu()
    counts = [torch.zeros(1, dtype=torch.int64, device=where) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([n_local], dtype=torch.int64, device=where))
    sizes = [int(c) for c in counts]
    return sum(sizes[: dist.get_rank()]), sum(sizes)


def all_reduce(tensor: Tensor, op: str = "sum") -> Tensor:
    """``tensor`` reduced (``"sum"`` or ``"max"``) over the processes of the running fit,
    without gradient; ``tensor`` itself outside a distributed fit."""
    return tensor if current() is None else reduce_over_processes(tensor, op)


def same_on_every_process(value: Any) -> Any:
    """Process 0's ``value`` on every process (a picklable object): for results computed on the
    host that may differ in their last bits between processes (t-SNE, k-means), which every
    process must then share."""
    if current() is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
