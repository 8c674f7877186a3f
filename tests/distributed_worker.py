"""What the processes of the distributed tests run (``torch.multiprocessing.spawn`` imports this
module by name in each child, so it lives beside the tests, not in them).

Every scenario is ``scenario(rank, world_size, out_dir, **kwargs) -> object``; :func:`run` sets up
the torchrun environment (the package initialises the gloo group from it, as under ``torchrun``),
runs the scenario and saves its result as ``out_dir/<rank>.pt``, or the error it raised as
``out_dir/<rank>.error`` (type and message).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from skorch.callbacks import Callback, Checkpoint

import skdeepcluster as sk
from skdeepcluster import distributed
from skdeepcluster.neighbors import mine_neighbors
from skdeepcluster.ot import sinkhorn_knopp


def digits(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` digits as 8x8 uint8 images, and as 64-d float vectors."""
    from sklearn.datasets import load_digits

    X = load_digits().data[:n]
    return (X * (255 / 16)).round().astype(np.uint8).reshape(-1, 1, 8, 8), X.astype(np.float32)


#: What :class:`FirstSteps` recorded (a module global: the estimators copy their callbacks).
RECORD: list = []


class FirstSteps(Callback):
    """Records in :data:`RECORD` every stage's losses of the first epoch and the gradients of
    its first step."""

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.grads_: dict | None = None

    def on_grad_computed(self, net: Any, named_parameters: Any, **kwargs: Any) -> None:
        if self.grads_ is None:
            self.grads_ = {
                name: p.grad.detach().clone() for name, p in named_parameters if p.grad is not None
            }

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if len(net.history) == 1:
            losses = [row["train_loss"] for row in net.history[-1]["batches"]]
            RECORD.append({"losses": losses, "grads": self.grads_})


def small_scan(**kwargs: Any) -> sk.SCAN:
    """SCAN on the input vectors, small and quick; ``kwargs`` override."""
    params = dict(n_clusters=3, pretext=None, max_epochs=1, n_neighbors=5, batch_size=32)
    return sk.SCAN(**{**params, "random_state": 0, **kwargs})


def estimators() -> dict[str, Any]:
    """One small configuration of every estimator, each recording its first steps."""
    cb = [FirstSteps()]
    common = dict(batch_size=32, random_state=0, callbacks=cb)
    # random heads: the method's own loss is the first stage, from the same initial weights
    method = dict(common, head_init="random")
    return {
        "SCAN": small_scan(**method),
        "SeLa": sk.SeLa(n_clusters=3, n_heads=2, pretext=None, max_epochs=2, **method),
        "LSDC": sk.LSDC(n_clusters=3, pretext=None, max_epochs=1, **method),
        "C2BIN": sk.C2BIN(
            n_clusters=3, head_sizes=[3, 6], max_epochs=1, hidden_dim=16, projection_dim=8, **method
        ),
        "DRC": sk.DRC(n_clusters=3, max_epochs=1, **method),
        "manifold start": small_scan(head_init="manifold", **common),
        # 31-row batches: shards of 15 and 16 rows (the padded gather)
        "uneven shards": small_scan(**{**method, "batch_size": 31}),
        "SimCLR": sk.SimCLR(max_epochs=1, **common),
        "RotNet": sk.RotNet(max_epochs=1, **common),
        "AutoEncoder": sk.AutoEncoder(max_epochs=1, **common),
    }


def every_method(rank: int, world_size: int, out_dir: str) -> dict:
    """Each estimator fitted: its stages' first losses and gradients, labels, processes."""
    images, vectors = digits()
    results = {}
    for name, estimator in estimators().items():
        RECORD.clear()
        estimator.fit(images if name in ("SimCLR", "RotNet") else vectors)
        results[name] = {
            "stages": list(RECORD),
            "labels": getattr(estimator, "labels_", None),
            "n_processes": estimator.n_processes_,
        }
    return results


def sinkhorn_and_mining(rank: int, world_size: int, out_dir: str) -> dict:
    """Sinkhorn on this process's rows of one table; mining inside a distributed fit's scope."""
    log_probs = torch.log_softmax(
        torch.randn(103, 7, generator=torch.Generator().manual_seed(0)), 1
    )
    features = torch.randn(103, 16, generator=torch.Generator().manual_seed(1))
    start, stop = distributed.shard_bounds(103, world_size)[rank]
    if world_size == 1:
        result = sinkhorn_knopp(log_probs, lam=10.0, return_labels=True)
        return {
            "plan": result.plan,
            "labels": result.labels,
            "error": result.marginal_error,
            "neighbors": mine_neighbors(features, 6, block_size=16),
        }
    result = sinkhorn_knopp(log_probs[start:stop], lam=10.0, return_labels=True, distributed=True)
    with distributed.processes(world_size):
        neighbors = mine_neighbors(features, 6, block_size=16)
    return {
        "plan": result.plan,
        "labels": result.labels,
        "error": result.marginal_error,
        "neighbors": neighbors,
        "rows": (start, stop),
    }


def quiet_process(rank: int, world_size: int, out_dir: str) -> dict:
    """A verbose fit with a checkpoint in a directory of its own per process."""
    _, vectors = digits(64)
    checkpoint = Checkpoint(
        monitor="train_loss_best", dirname=str(Path(out_dir) / f"checkpoint{rank}")
    )
    estimator = small_scan(verbose=2, callbacks=[checkpoint])
    estimator.fit(vectors)
    return {"labels": estimator.labels_}


def different_data(rank: int, world_size: int, out_dir: str) -> None:
    """Process 1 passes other data than process 0."""
    _, vectors = digits(64 + 8 * rank)
    small_scan(random_state=None).fit(vectors)


class _FailOnRank(Callback):
    def __init__(self, rank: int, how: str) -> None:
        self.rank, self.how = rank, how

    def on_batch_end(self, net: Any, **kwargs: Any) -> None:
        if dist.get_rank() == self.rank and len(net.history) == 2:
            if self.how == "exit":
                os._exit(3)
            if self.how == "hang":
                time.sleep(6)
            raise RuntimeError("process 1 failed on purpose")


def one_fails(rank: int, world_size: int, out_dir: str, how: str) -> None:
    """Process 1 fails in its second epoch: by an exception, or by exiting."""
    _, vectors = digits(64)
    small_scan(max_epochs=5, callbacks=[_FailOnRank(1, how)]).fit(vectors)


SCENARIOS = {
    "every_method": every_method,
    "sinkhorn_and_mining": sinkhorn_and_mining,
    "quiet_process": quiet_process,
    "different_data": different_data,
    "one_fails": one_fails,
}


def run(rank: int, world_size: int, port: int, scenario: str, out_dir: str, kwargs: dict) -> None:
    """Entry point of a spawned process (``kwargs["timeout"]``: the collectives' timeout)."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        SKDEEPCLUSTER_TIMEOUT=str(kwargs.pop("timeout", 60)),
    )
    if sys.platform.startswith("linux"):  # gloo on the loopback: no hostname lookup needed
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if scenario == "sinkhorn_and_mining":  # no fit initialises the group here
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    output = open(Path(out_dir) / f"{rank}.output", "w")  # noqa: SIM115 - closed at exit
    sys.stdout = sys.stderr = output
    try:
        result = SCENARIOS[scenario](rank, world_size, out_dir, **kwargs)
    except BaseException as exc:  # reported to the test, which asserts on it
        (Path(out_dir) / f"{rank}.error").write_text(f"{type(exc).__name__}: {exc}")
    else:
        torch.save(result, Path(out_dir) / f"{rank}.pt")
    finally:
        output.flush()
        if dist.is_initialized():
            dist.destroy_process_group()
    time.sleep(0.1)
