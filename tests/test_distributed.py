"""Distributed fits (``torch.distributed``, gloo on the CPU): two processes against one.

The multi-process tests spawn two processes with ``torch.multiprocessing`` that run a scenario of
``distributed_worker.py`` in the torchrun environment (the fit initialises the process group
itself, as under ``torchrun``), and compare what they return with the same scenario in this
process, where no process group exists.
"""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path

import distributed_worker as worker
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from skdeepcluster import distributed
from skdeepcluster.ot import sinkhorn_knopp

# gradients of two processes are averaged by DistributedDataParallel and batch statistics are
# summed across processes: the same numbers as one process up to float32 rounding
RTOL, ATOL = 1e-4, 1e-6
LATER_RTOL = 1e-2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(scenario: str, tmp_path: Path, wait: float = 120, **kwargs) -> list:
    """Run ``scenario`` on two processes; return each rank's result, or the error it raised
    (as ``"Type: message"``), or its exit code when it died."""
    context = mp.spawn(
        worker.run, args=(2, _free_port(), scenario, str(tmp_path), kwargs), nprocs=2, join=False
    )
    deadline = time.monotonic() + wait
    for process in context.processes:
        process.join(max(deadline - time.monotonic(), 0))
    alive = [p for p in context.processes if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} process(es) still running after {wait} s: a hang"
    outcomes = []
    for rank, process in enumerate(context.processes):
        error, result = tmp_path / f"{rank}.error", tmp_path / f"{rank}.pt"
        if error.exists():
            outcomes.append(error.read_text())
        elif result.exists():
            outcomes.append(torch.load(result, weights_only=False))
        else:
            outcomes.append(process.exitcode)
    return outcomes


# ---------------------------------------------------------------------------- one process


def test_shard_bounds_partition_the_rows_in_order():
    for n in range(0, 20):
        for world in range(1, 5):
            bounds = distributed.shard_bounds(n, world)
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_outside_a_distributed_fit_everything_is_local():
    x = torch.randn(5, 3)
    module = nn.Linear(3, 2)
    assert distributed.current() is None
    assert distributed.gather_rows(x, 5) is x
    assert distributed.all_reduce_sum(x) is x
    assert distributed.sharded(module) is module
    assert distributed.shard_of(7) == (0, 7)
    assert distributed.same_on_every_process([1, 2]) == [1, 2]


def test_global_batch_norm_is_torchs_outside_a_fit_and_is_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    x = torch.randn(8, 4) * 3 + 1
    expected = net[1](net[0](x))
    with distributed.global_batch_norm(net):
        assert type(net[1]) is distributed.GlobalBatchNorm1d
        assert type(net[3]) is distributed.GlobalBatchNorm2d
        torch.testing.assert_close(net[1](net[0](x)), expected)
    assert type(net[1]) is nn.BatchNorm1d and type(net[3]) is nn.BatchNorm2d


def test_distributed_sinkhorn_needs_a_process_group():
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialised"):
        sinkhorn_knopp(torch.randn(6, 2), distributed=True)


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_timeout_from_the_environment_is_checked(monkeypatch, value):
    monkeypatch.setenv("SKDEEPCLUSTER_TIMEOUT", value)
    with pytest.raises(ValueError, match="SKDEEPCLUSTER_TIMEOUT must be a positive number"):
        distributed.timeout_seconds()


def test_a_single_process_fit_records_one_process():
    _, vectors = worker.digits(64)
    worker.RECORD.clear()
    scan = worker.estimators()["SCAN"].fit(vectors)
    assert scan.n_processes_ == 1
    assert worker.RECORD, "the callback recorded no stage"


# ---------------------------------------------------------------------------- two processes


def _assert_same_stages(two: list, one: list, name: str) -> None:
    """The first stage is the same computation on one process and on two: its first step has
    the same loss and gradients. Later stages start from weights (and pseudo-labels) that
    differ by rounding, which the steps of an epoch grow: their losses agree to 1 %."""
    assert one, f"{name}: no stage recorded"
    assert len(two) == len(one), name
    first, expected = two[0], one[0]
    assert first["losses"][0] == pytest.approx(expected["losses"][0], rel=RTOL, abs=ATOL), name
    assert expected["grads"], f"{name}: no gradient recorded"
    assert first["grads"].keys() == expected["grads"].keys()
    for param, grad in expected["grads"].items():
        torch.testing.assert_close(
            first["grads"][param], grad, rtol=RTOL, atol=ATOL, msg=f"{name} {param}"
        )
    for stage, (got, expected) in enumerate(zip(two, one)):
        np.testing.assert_allclose(
            got["losses"], expected["losses"], rtol=LATER_RTOL, err_msg=f"{name} {stage}"
        )


def test_every_method_on_two_processes_has_the_losses_and_gradients_of_one(tmp_path):
    ranks = spawn("every_method", tmp_path, wait=240)
    assert all(isinstance(r, dict) for r in ranks), ranks
    single = worker.every_method(0, 1, str(tmp_path))
    assert set(single) == set(ranks[0]) == set(worker.estimators())
    for name, expected in single.items():
        assert expected["n_processes"] == 1
        for rank in ranks:
            got = rank[name]
            assert got["n_processes"] == 2
            _assert_same_stages(got["stages"], expected["stages"], name)
            if expected["labels"] is not None:
                agreement = np.mean(got["labels"] == expected["labels"])
                assert agreement >= 0.95, f"{name}: labels agree on {agreement:.0%}"
        # every process ends with the same fitted estimator
        if expected["labels"] is not None:
            np.testing.assert_array_equal(ranks[0][name]["labels"], ranks[1][name]["labels"])


def test_sinkhorn_and_mining_on_two_processes_equal_one(tmp_path):
    ranks = spawn("sinkhorn_and_mining", tmp_path)
    assert all(isinstance(r, dict) for r in ranks), ranks
    single = worker.sinkhorn_and_mining(0, 1, str(tmp_path))
    plan = torch.cat([r["plan"] for r in ranks])
    torch.testing.assert_close(plan, single["plan"], rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(torch.cat([r["labels"] for r in ranks]), single["labels"])
    assert ranks[0]["error"] == pytest.approx(single["error"], abs=1e-6)
    assert ranks[0]["error"] == ranks[1]["error"]
    for rank in ranks:  # every process gets the whole neighbour table
        torch.testing.assert_close(rank["neighbors"], single["neighbors"])


def test_only_process_0_prints_and_writes_files(tmp_path):
    ranks = spawn("quiet_process", tmp_path)
    assert all(isinstance(r, dict) for r in ranks), ranks
    np.testing.assert_array_equal(ranks[0]["labels"], ranks[1]["labels"])
    shown = (tmp_path / "0.output").read_text()
    assert "train_loss" in shown  # skorch's table of epochs (verbose=2)
    assert "SCAN clustering" in shown  # the progress bar
    assert "constant feature" in shown  # a warning
    assert any((tmp_path / "checkpoint0").iterdir())
    assert not (tmp_path / "checkpoint1").exists()
    assert (tmp_path / "1.output").read_text() == ""


def test_processes_with_different_data_refuse_to_fit(tmp_path):
    ranks = spawn("different_data", tmp_path)
    for outcome in ranks:
        assert isinstance(outcome, str) and outcome.startswith("ValueError"), ranks
        assert "must call fit with the same X" in outcome


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failing_process_stops_the_other(tmp_path, how):
    started = time.monotonic()
    ranks = spawn("one_fails", tmp_path, wait=50, how=how)
    assert time.monotonic() - started < 50  # well within the 60 s collective timeout
    assert ranks[0].startswith("DistributedTrainingError"), ranks
    assert "another process failed" in ranks[0]
    if how == "raise":
        assert ranks[1] == "RuntimeError: process 1 failed on purpose"
    else:
        assert ranks[1] == 3


def test_a_silent_process_stops_the_other_at_the_timeout(tmp_path):
    started = time.monotonic()
    ranks = spawn("one_fails", tmp_path, wait=50, how="hang", timeout=2)
    assert ranks[0].startswith("DistributedTrainingError"), ranks
    assert "did not answer within 2 s" in ranks[0]
    assert time.monotonic() - started < 45  # the sleeping process's 6 s, not a hang
