"""DRC: its losses (eqs. 5, 8, 9) against float64 references and closed forms, the objective,
and the estimator's API."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdeepcluster import DRC
from skdeepcluster.losses import drc_cluster_regularization, drc_feature_loss, drc_probability_loss
from skdeepcluster.methods import drc as drc_module

cases = st.tuples(st.integers(2, 12), st.integers(2, 6), st.integers(0, 2**16), st.floats(0.2, 2))


def _randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _softmax_rows(seed, n, k):
    return torch.softmax(_randn(seed, n, k), dim=1)


# ----------------------------------------------------------------------------- eq. (5)


@given(cases)
def test_feature_loss_matches_the_float64_reference(case):
    n, k, seed, tau = case
    z, z_aug = _randn(seed, n, k), _randn(seed + 1, n, k)
    expected = 0.0
    for i in range(n):
        logits = [float(z[i] @ z_aug[j]) / tau for j in range(n)]
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    assert drc_feature_loss(z, z_aug, tau).item() == pytest.approx(expected / n, rel=1e-9)


@given(cases, st.integers(1, 3))
def test_masked_feature_loss_matches_the_float64_reference(case, repeats):
    """With ``groups`` (mask_repeats): the other copies of row i's sample leave its denominator."""
    n, k, seed, tau = case
    groups = torch.arange(n).repeat_interleave(repeats)
    m = len(groups)
    z, z_aug = _randn(seed, m, k), _randn(seed + 1, m, k)
    expected = 0.0
    for i in range(m):
        kept = [j for j in range(m) if j == i or groups[j] != groups[i]]
        logits = {j: float(z[i] @ z_aug[j]) / tau for j in kept}
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits.values()))
    masked = drc_feature_loss(z, z_aug, tau, groups=groups).item()
    assert masked == pytest.approx(expected / m, rel=1e-9)
    unmasked = drc_feature_loss(z, z_aug, tau).item()
    if repeats == 1:  # no copies: nothing to mask
        assert masked == unmasked
    else:  # fewer terms in every denominator
        assert masked < unmasked


def test_masked_feature_loss_closed_form_and_bad_groups():
    """r identical copies of N mutually orthogonal samples under the cosine: unmasked, each
    anchor's denominator holds its r copies; masked, only its positive: log(1 + (N-1) r e^{-1/T})
    against log(r + (N-1) r e^{-1/T})."""
    n, r, tau = 4, 3, 0.5
    z = torch.eye(n, dtype=torch.float64).repeat_interleave(r, dim=0)
    groups = torch.arange(n).repeat_interleave(r)
    masked = drc_feature_loss(z, z, tau, "cosine", groups).item()
    unmasked = drc_feature_loss(z, z, tau, "cosine").item()
    assert masked == pytest.approx(math.log(1 + (n - 1) * r * math.exp(-1 / tau)), rel=1e-12)
    assert unmasked == pytest.approx(math.log(r + (n - 1) * r * math.exp(-1 / tau)), rel=1e-12)
    with pytest.raises(ValueError, match=r"groups must have shape \(12,\)"):
        drc_feature_loss(z, z, tau, groups=groups[:5])


def test_mask_repeats_reaches_the_objective(blobs):
    module = drc_module.ClusterModel(torch.nn.Linear(6, 8), 8, [3])
    data = drc_module.DeviceData(blobs[0], torch.device("cpu"))
    idx = torch.arange(10)
    out = {}
    for mask in (False, True):
        torch.manual_seed(0)
        objective = drc_module.DRCObjective(
            lambda x: x, lambda x: x + 0.1, 0.5, 0.95, 0.0, 1.0, 0.0, "cosine", "cosine", 2, mask
        )
        out[mask] = objective.loss(module, data, idx)["feature"]
    x = data[idx].repeat_interleave(2, dim=0)
    z, z_aug = module(torch.cat([x, x + 0.1]))[0].chunk(2)
    groups = torch.arange(10).repeat_interleave(2)
    torch.testing.assert_close(out[True], drc_feature_loss(z, z_aug, 0.5, "cosine", groups))
    torch.testing.assert_close(out[False], drc_feature_loss(z, z_aug, 0.5, "cosine"))
    assert out[True] < out[False]
    assert DRC().mask_repeats is False  # the paper does not mask


@given(cases)
def test_feature_loss_closed_form_and_invariances(case):
    n, k, seed, tau = case
    z = _randn(seed, n, k)
    same = _randn(seed + 1, 1, k).expand(n, k)
    assert drc_feature_loss(z, same, tau).item() == pytest.approx(math.log(n), rel=1e-9)
    z_aug = _randn(seed + 2, n, k)
    value = drc_feature_loss(z, z_aug, tau).item()
    assert value >= 0
    order = torch.randperm(n)
    rotation, _ = torch.linalg.qr(_randn(seed + 3, k, k))
    for a, b in [(z[order], z_aug[order]), (z @ rotation, z_aug @ rotation)]:
        assert drc_feature_loss(a, b, tau).item() == pytest.approx(value, rel=1e-7, abs=1e-9)


def test_dot_feature_loss_rewards_growing_logits():
    """The literal eq. (5) falls when the logits are scaled up: the norm-growth incentive."""
    z = torch.eye(4, dtype=torch.float64)
    values = [drc_feature_loss(c * z, c * z, 0.5).item() for c in (1, 2, 4, 8)]
    assert all(a > b for a, b in itertools.pairwise(values)) and values[-1] < 1e-10
    cosine = [drc_feature_loss(c * z, c * z, 0.5, similarity="cosine").item() for c in (1, 8)]
    assert cosine[0] == pytest.approx(cosine[1])


# ----------------------------------------------------------------------------- eq. (8)


@given(cases)
def test_probability_loss_matches_the_float64_reference(case):
    n, k, seed, tau = case
    p, p_aug = _softmax_rows(seed, n, k), _softmax_rows(seed + 1, n, k)
    q = [p[:, c] / p[:, c].norm() for c in range(k)]
    q_aug = [p_aug[:, c] / p_aug[:, c].norm() for c in range(k)]
    expected = 0.0
    for c in range(k):
        logits = [float(q[c] @ q_aug[j]) / tau for j in range(k)]
        expected -= logits[c] - math.log(sum(math.exp(v) for v in logits))
    assert drc_probability_loss(p, p_aug, tau).item() == pytest.approx(expected / k, rel=1e-9)


@given(cases)
def test_probability_loss_bounds_and_invariances(case):
    n, k, seed, tau = case
    p, p_aug = _softmax_rows(seed, n, k), _softmax_rows(seed + 1, n, k)
    value = drc_probability_loss(p, p_aug, tau).item()
    low = math.log(1 + (k - 1) * math.exp(-1 / tau))
    high = math.log(1 + (k - 1) * math.exp(1 / tau))
    assert low - 1e-9 <= value <= high + 1e-9
    cols, rows = torch.randperm(k), torch.randperm(n)
    variants = [
        (p[:, cols], p_aug[:, cols]),
        (p[rows], p_aug[rows]),
        (p.repeat(2, 1), p_aug.repeat(2, 1)),  # repeating the samples: cosines ignore it
    ]
    for a, b in variants:
        assert drc_probability_loss(a, b, tau).item() == pytest.approx(value, rel=1e-7)
    # the printed dot product is not scale free: repeating the rows changes it
    dot = drc_probability_loss(p, p_aug, tau, similarity="dot").item()
    assert drc_probability_loss(p.repeat(2, 1), p_aug.repeat(2, 1), tau, "dot").item() != dot


def test_probability_loss_closed_forms():
    k, tau = 6, 0.95
    uniform = torch.full((10, k), 1 / k)
    assert drc_probability_loss(uniform, uniform, tau).item() == pytest.approx(math.log(k))
    one_hot = torch.eye(k).repeat(3, 1)
    assert drc_probability_loss(one_hot, one_hot, tau).item() == pytest.approx(1.0098, abs=1e-4)


# ----------------------------------------------------------------------------- eq. (9)


@given(st.integers(2, 30), st.integers(2, 8), st.integers(0, 2**16))
def test_cluster_regularization_value_bounds_and_gradient(n, k, seed):
    p = _softmax_rows(seed, n, k).requires_grad_(True)
    value = drc_cluster_regularization(p)
    sizes = p.detach().sum(0)
    assert value.item() == pytest.approx(float((sizes**2).sum()) / n, rel=1e-12)
    assert n / k - 1e-9 <= value.item() <= n + 1e-9
    value.backward()
    torch.testing.assert_close(p.grad, (2 * sizes / n).expand(n, k))
    rows, cols = torch.randperm(n), torch.randperm(k)
    assert drc_cluster_regularization(p.detach()[rows][:, cols]).item() == pytest.approx(
        value.item()
    )


def test_cluster_regularization_closed_forms():
    assert drc_cluster_regularization(torch.eye(6).repeat(10, 1)).item() == pytest.approx(10.0)
    collapsed = torch.zeros(60, 6)
    collapsed[:, 0] = 1
    assert drc_cluster_regularization(collapsed).item() == pytest.approx(60.0)


@pytest.mark.parametrize("case", ["dead cluster", "saturated"])
def test_losses_finite_with_a_dead_cluster_or_saturated_logits(case):
    z = torch.randn(16, 5)
    if case == "dead cluster":
        z[:, 2] = -1e4
    else:
        z = 1e4 * torch.sign(z)
    z.requires_grad_(True)
    z_aug = z.detach().roll(1, 0).requires_grad_(True)
    p, p_aug = torch.softmax(z, 1), torch.softmax(z_aug, 1)
    total = drc_probability_loss(p, p_aug) + 0.005 * drc_cluster_regularization(p)
    total.backward()
    assert (
        torch.isfinite(total) and torch.isfinite(z.grad).all() and torch.isfinite(z_aug.grad).all()
    )


# ----------------------------------------------------------------------------- the objective


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(200, n_features=6, centers=3, cluster_std=0.8, random_state=0)
    return X.astype(np.float32), y


def tiny(**kwargs):
    return DRC(**{**dict(n_clusters=3, max_epochs=2, batch_size=64, random_state=0), **kwargs})


@pytest.mark.parametrize(
    ("w_af", "w_ap", "lam"), [(1.0, 1.0, 0.01), (0.0, 1.0, 0.01), (1.0, 0.0, 0.0)]
)
def test_objective_is_eq_10_from_the_pure_functions_and_both_views_get_gradients(
    blobs, w_af, w_ap, lam
):
    """Eq. (10) with the term weights (1, 1, lambda in the paper; 0 is an ablation)."""
    torch.manual_seed(0)
    module = drc_module.ClusterModel(torch.nn.Linear(6, 8), 8, [3, 5])
    data = drc_module.DeviceData(blobs[0], torch.device("cpu"))
    objective = drc_module.DRCObjective(
        lambda x: x, lambda x: x + 0.1, 0.5, 0.95, lam, w_af, w_ap, "dot", "cosine", 2
    )
    idx = torch.arange(20)
    out = objective.loss(module, data, idx)
    x = data[idx].repeat_interleave(2, dim=0)
    expected = 0.0
    for head_logits in module(torch.cat([x, x + 0.1])):
        z, z_aug = head_logits.chunk(2)
        p, p_aug = torch.softmax(z, 1), torch.softmax(z_aug, 1)
        expected = expected + w_af * drc_feature_loss(z, z_aug, 0.5)
        expected = expected + w_ap * drc_probability_loss(p, p_aug)
        expected = expected + lam * drc_cluster_regularization(p)
    assert expected.item() > 0
    torch.testing.assert_close(out["loss"], expected)
    z = module.heads[0].weight
    out["loss"].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_drc_clusters_easy_blobs(blobs):
    from skdeepcluster.metrics import cluster_accuracy

    X, y = blobs
    model = tiny(max_epochs=40, n_overclusters=6).fit(X)
    assert cluster_accuracy(y, model.labels_) > 0.9
    assert len(model.module_.heads) == 1 and model.module_.heads[0].out_features == 3
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert {"feature", "probability", "regularization", "logit_norm"} <= set(model.history_[-1])


def test_original_view_is_a_small_translation():
    view = drc_module.original_view(torch.rand(4, 1, 8, 8))
    assert view.crop_scale == (0.64, 0.64) and view.jitter == 0 and view.flip_prob == 0
    assert drc_module.original_view(torch.rand(4, 3)) is drc_module.identity


def test_bad_parameters_are_refused(blobs):
    with pytest.raises(ValueError, match="'feature_similarity' parameter of DRC must be"):
        tiny(feature_similarity="l1").fit(blobs[0])
    with pytest.raises(ValueError, match="n_overclusters=500 must not exceed"):
        tiny(n_overclusters=500).fit(blobs[0])
    with pytest.raises(
        ValueError,
        match=r"'probability_weight' parameter of DRC must be a float in the range \[0.0, inf\)",
    ):
        tiny(probability_weight=-1.0).fit(blobs[0])


@parametrize_with_checks(
    # the manifold start (vectors) passes the checks as SCAN's default in
    # test_estimators_sklearn.py; here it would only triple the time of these checks
    [tiny(max_epochs=6, batch_size=16, lr=1e-2, head_init="random")],
    expected_failed_checks=lambda est: {
        check: "the check sets n_clusters=1, which DRC refuses by design (one cluster is no "
        "clustering); the property is tested with n_clusters=3 in test_fit_path.py"
        for check in (
            "check_dont_overwrite_parameters",
            "check_methods_subset_invariance",
            "check_fit2d_1feature",
            "check_fit2d_predict1d",
        )
    },
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
