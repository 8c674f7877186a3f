"""Tests for the SeLa Sinkhorn-Knopp solver in :mod:`skdeepcluster.ot`."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import ConvergenceWarning

from skdeepcluster.ot import SinkhornResult, sinkhorn_knopp

FAST = settings(max_examples=15, deadline=None)


def _log_probs(n, k, seed, scale=1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=gen, dtype=torch.float64)
    return torch.log_softmax(logits, dim=1).to(dtype)


@FAST
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    lam=st.floats(0.5, 10.0),
    uniform=st.booleans(),
)
def test_marginals_met(n, k, seed, lam, uniform):
    # Few samples per cluster make the plan nearly a permutation, where Sinkhorn converges very
    # slowly: n = k = 8 at lam = 5 (seed 8) missed 1e-9 in 20,000 iterations, and n = 2k missed
    # it for 13 of 720 draws at lam 5 and 10. With n >= 4k none of those 720 draws missed it.
    n = max(n, 4 * k)
    x = _log_probs(n, k, seed)
    rng = np.random.default_rng(seed)
    r = None if uniform else rng.uniform(0.2, 3.0, size=k)
    res = sinkhorn_knopp(x, lam=lam, cluster_marginal=r, tol=1e-9, max_iter=20000)
    target = (
        torch.full((k,), 1 / k, dtype=torch.float64) if uniform else torch.as_tensor(r / r.sum())
    )
    assert isinstance(res, SinkhornResult)
    assert res.converged
    assert res.plan.shape == (n, k) and res.plan.dtype == torch.float64
    assert (res.plan >= 0).all()
    assert res.marginal_error <= 1e-8
    assert torch.allclose(res.plan.sum(0), target, atol=1e-8, rtol=0)
    assert torch.allclose(res.plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), rtol=1e-10)
    assert torch.allclose(res.soft_labels.sum(1), torch.ones(n, dtype=torch.float64))
    assert res.labels is None


def test_n_not_divisible_by_k_float32():
    x = _log_probs(1001, 7, 0, dtype=torch.float32)
    res = sinkhorn_knopp(x, lam=25.0, return_labels=True)
    assert res.converged and res.plan.dtype == torch.float32
    assert res.marginal_error <= 2e-5
    assert torch.allclose(res.plan.sum(0), torch.full((7,), 1 / 7), atol=1e-5)
    assert res.labels.dtype == torch.int64 and res.labels.shape == (1001,)


@FAST
@given(n=st.integers(2, 40), k=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_permutation_equivariance(n, k, seed):
    x = _log_probs(n, k, seed)
    r = np.random.default_rng(seed).uniform(0.5, 2.0, size=k)
    pr = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pc = torch.randperm(k, generator=torch.Generator().manual_seed(seed + 1))
    base = sinkhorn_knopp(x, lam=5.0, cluster_marginal=r, tol=1e-11, max_iter=5000).plan
    perm = sinkhorn_knopp(
        x[pr][:, pc], lam=5.0, cluster_marginal=r[pc.numpy()], tol=1e-11, max_iter=5000
    ).plan
    torch.testing.assert_close(perm, base[pr][:, pc], atol=1e-9 / n, rtol=1e-6)


def _hard_solve(x, lam):
    # At large lam Sinkhorn approaches a vertex of the transport polytope and
    # the last digits of the marginals converge slowly; the labels are
    # already final long before, so a loose budget is enough here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return sinkhorn_knopp(x, lam=lam, tol=1e-7, max_iter=1500, return_labels=True)


@pytest.mark.parametrize("seed", range(4))
def test_hard_labels_equipartition(seed):
    n, k = 60, 6
    x = _log_probs(n, k, seed, scale=3.0)
    res = _hard_solve(x, 100.0)
    assert torch.equal(torch.bincount(res.labels, minlength=k), torch.full((k,), n // k))


@pytest.mark.parametrize(
    "n,k,seed", [(6, 2, 0), (8, 4, 1), (12, 3, 2), (12, 4, 3), (15, 5, 4), (20, 4, 5)]
)
def test_hard_assignment_is_optimal(n, k, seed):
    x = _log_probs(n, k, seed, scale=2.0)
    cost = (-x).numpy()
    rows, cols = linear_sum_assignment(np.repeat(cost, n // k, axis=1))
    optimum = cost[rows, cols // (n // k)].sum()
    res = _hard_solve(x, 300.0)
    labels = res.labels.numpy()
    assert np.array_equal(np.bincount(labels, minlength=k), np.full(k, n // k))
    assert math.isclose(cost[np.arange(n), labels].sum(), optimum, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [25.0, 1e3, 1e6])
def test_extreme_inputs_stay_finite(dtype, lam):
    gen = torch.Generator().manual_seed(0)
    x = -1e4 * torch.rand(200, 8, generator=gen, dtype=torch.float64)
    x[:, 3] -= 5e3  # a cluster that is far less likely than all others
    x[::7, 5] = -math.inf  # forbidden sample/cluster pairs
    x = x.to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = sinkhorn_knopp(x, lam=lam, max_iter=300, return_labels=True)
    assert torch.isfinite(res.plan).all() and (res.plan >= 0).all()
    assert math.isfinite(res.marginal_error)
    assert torch.allclose(
        res.plan.sum(1).double(), torch.full((200,), 1 / 200, dtype=torch.float64), rtol=1e-3
    )
    assert (res.plan[::7, 5] == 0).all()


def test_underflowing_column_uses_log_steps_and_converges():
    x = _log_probs(300, 5, 0)
    x[:, 0] -= 50.0  # exp(lam * -50) underflows in any dtype
    res = sinkhorn_knopp(x, lam=25.0, tol=1e-8)
    assert res.converged and res.n_log_steps >= 1
    assert torch.allclose(res.plan.sum(0), torch.full((5,), 0.2, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_warm_start_gives_the_dense_solution(dtype, monkeypatch):
    # lam = 25 on 50 clusters keeps about a tenth of the kernel above 1e-9,
    # so the warm start runs; switching it off must not change the plan.
    x = _log_probs(2000, 50, 0, scale=2.0, dtype=dtype)
    tol = 1e-7 if dtype == torch.float64 else 1e-5
    warm = sinkhorn_knopp(x, lam=25.0, tol=tol, return_labels=True)
    monkeypatch.setattr("skdeepcluster.ot._SPARSE_MAX_DENSITY", 0.0)
    cold = sinkhorn_knopp(x, lam=25.0, tol=tol, return_labels=True)
    assert warm.n_sparse_iter > 0 and cold.n_sparse_iter == 0
    assert warm.converged and warm.marginal_error <= tol
    assert warm.n_iter < cold.n_iter
    # Both plans are within tol of the marginals (rows carry mass 1/2000).
    torch.testing.assert_close(warm.plan, cold.plan, atol=tol, rtol=0)
    assert (warm.labels == cold.labels).float().mean() > 0.99


def test_sparse_warm_start_falls_back_when_a_cluster_has_no_kept_entry():
    x = _log_probs(500, 40, 1, scale=3.0)
    others = torch.cat([x[:, :2], x[:, 3:]], 1).amax(1)
    x[:, 2] = others - 1.0  # exp(25 * -1) < 1e-9: cluster 2 keeps no entry
    res = sinkhorn_knopp(x, lam=25.0, tol=1e-8, max_iter=5000)
    assert res.n_sparse_iter == 1  # its scaling is infinite after one step
    assert res.converged and res.marginal_error <= 1e-8
    target = torch.full((40,), 1 / 40, dtype=torch.float64)
    assert torch.allclose(res.plan.sum(0), target, atol=1e-8)


def test_dense_kernel_skips_the_sparse_warm_start():
    res = sinkhorn_knopp(_log_probs(300, 5, 0), lam=1.0)
    assert res.n_sparse_iter == 0 and res.converged


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_upcast(dtype):
    res = sinkhorn_knopp(_log_probs(100, 4, 0, dtype=dtype), lam=10.0)
    assert res.plan.dtype == torch.float32 and res.converged


def test_numpy_input_and_logit_shift_invariance():
    x = _log_probs(50, 5, 3)
    a = sinkhorn_knopp(x, lam=5.0, tol=1e-10).plan
    b = sinkhorn_knopp((x + 7.0 * torch.arange(50.0)[:, None]).numpy(), lam=5.0, tol=1e-10).plan
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-7)


def test_not_converged_warns():
    with pytest.warns(ConvergenceWarning):
        res = sinkhorn_knopp(_log_probs(100, 5, 0), lam=25.0, max_iter=2)
    assert not res.converged and res.n_iter == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(log_probs=torch.zeros(5)), "2-D"),
        (dict(log_probs=torch.zeros(2, 3, 4)), "2-D"),
        (dict(log_probs=torch.zeros(0, 3)), "non-empty"),
        (dict(log_probs=torch.zeros(3, 3, dtype=torch.int64)), "floating"),
        (dict(log_probs=torch.tensor([[0.0, math.nan]])), "NaN"),
        (dict(log_probs=torch.tensor([[0.0, math.inf]])), r"\+inf"),
        (dict(log_probs=torch.tensor([[-math.inf, -math.inf], [0.0, 0.0]])), "row"),
        (dict(log_probs=torch.tensor([[0.0, -math.inf], [0.0, -math.inf]])), "column"),
        (dict(lam=0.0), "lam"),
        (dict(lam=-1.0), "lam"),
        (dict(lam=math.inf), "lam"),
        (dict(tol=0.0), "tol"),
        (dict(max_iter=0), "max_iter"),
        (dict(check_every=1.5), "check_every"),
        (dict(cluster_marginal=[0.5, 0.5]), "shape"),
        (dict(cluster_marginal=[0.5, 0.0, 0.5]), "positive"),
        (dict(cluster_marginal=[0.5, -0.1, 0.5]), "positive"),
        (dict(cluster_marginal=[0.5, math.nan, 0.5]), "positive"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    kwargs = {"log_probs": torch.zeros(4, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        sinkhorn_knopp(**kwargs)
