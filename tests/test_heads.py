"""Heads: cluster heads, the MLP head builder, the momentum target and k-means heads."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import make_blobs
from torch import nn

from skdeepcluster import heads as heads_module
from skdeepcluster._training import DeepClusterNet, DeviceData
from skdeepcluster.heads import (
    ClusterModel,
    MomentumTarget,
    ProjectionModel,
    kmeans_heads,
    mlp_head,
    momentum_at,
)
from skdeepcluster.metrics import cluster_accuracy


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=300, centers=4, n_features=8, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


# ----------------------------------------------------------------------------- MLP heads


def test_mlp_head_layers():
    head = mlp_head(6, 16, 3)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (6, 16, 3)
    plain = mlp_head(6, 16, 3, batch_norm=False)
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear]


def test_projection_model_uses_the_mlp_head():
    backbone = nn.Linear(5, 7)
    backbone.out_features = 7
    model = ProjectionModel(backbone, 4)
    assert [type(m) for m in model.projection] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert model(torch.randn(3, 5)).shape == (3, 4)


def test_cluster_model_keeps_heads_by_index():
    backbone = nn.Identity()
    model = ClusterModel(backbone, 4, [2, 3, 5])
    kept = model.keep_heads([2, 0])
    assert [h.out_features for h in kept.heads] == [5, 2]
    assert kept.heads[0] is model.heads[2] and kept.backbone is backbone
    x = torch.randn(6, 4)
    torch.testing.assert_close(kept(x)[0], model(x)[2])


# ----------------------------------------------------------------------------- momentum target


@given(st.floats(0.0, 1.0), st.integers(0, 100), st.integers(1, 100))
def test_momentum_schedules(base, step, total):
    assert momentum_at(step, total, base) == base
    cosine = momentum_at(step, total, base, "cosine")
    assert base - 1e-12 <= cosine <= 1.0 + 1e-12
    assert momentum_at(0, total, base, "cosine") == pytest.approx(base)
    assert momentum_at(total, total, base, "cosine") == pytest.approx(1.0)
    # the BYOL ramp: 1 - (1 - base) (cos(pi t / T) + 1) / 2
    t = min(step, total) / total
    assert cosine == pytest.approx(1 - (1 - base) * (math.cos(math.pi * t) + 1) / 2)


def test_momentum_schedule_refuses_bad_values():
    with pytest.raises(ValueError, match="momentum must be a number in"):
        momentum_at(0, 10, 1.5)
    with pytest.raises(ValueError, match="schedule must be 'constant' or 'cosine'"):
        momentum_at(0, 10, 0.9, "linear")


@given(st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_momentum_update_is_the_ema_of_the_weights(momentum, seed):
    torch.manual_seed(seed)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = MomentumTarget(online)
    before = [p.detach().clone() for p in target.network.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.add_(1.0)
    target.update(online, momentum)
    for old, new, theta in zip(before, target.network.parameters(), online.parameters()):
        expected = momentum * old.double() + (1 - momentum) * theta.detach().double()
        torch.testing.assert_close(new.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(target.network[1].running_mean, online[1].running_mean)


def test_momentum_target_gets_no_gradient_and_trains_no_parameter():
    online = nn.Linear(3, 2)
    target = MomentumTarget(online)
    out = target(torch.randn(5, 3))
    assert not out.requires_grad
    assert not any(p.requires_grad for p in target.network.parameters())
    assert target.network.training  # batch statistics, as in BYOL
    assert all(a is not b for a, b in zip(target.network.parameters(), online.parameters()))


class _EMAObjective:
    """A regression objective whose target network follows the model after every step."""

    def __init__(self) -> None:
        self.target = None
        self.snapshots = []

    def loss(self, module, data, idx):
        if self.target is None:
            self.target = MomentumTarget(module)
        x = data[idx]
        return {"loss": (module(x) - x.sum(1, keepdim=True)).pow(2).mean()}

    def on_batch_end(self, net):
        self.snapshots.append(
            (
                [p.detach().clone() for p in net.module_.parameters()],
                [p.detach().clone() for p in self.target.network.parameters()],
            )
        )
        self.target.update(net.module_, 0.5)


def test_on_batch_end_runs_after_the_optimizer_step():
    """The objective's on_batch_end sees the parameters the optimiser has just stepped."""
    torch.manual_seed(0)
    data = DeviceData(
        np.random.default_rng(0).random((40, 3), dtype=np.float32), torch.device("cpu")
    )
    objective = _EMAObjective()
    module = nn.Linear(3, 1)
    start = [p.detach().clone() for p in module.parameters()]
    net = DeepClusterNet(
        module,
        objective=objective,
        data=data,
        optimizer=torch.optim.SGD,
        lr=0.1,
        max_epochs=2,
        batch_size=20,
    )
    net.fit_on_data()
    assert len(objective.snapshots) == 4  # 2 epochs x 2 batches
    first_online, first_target = objective.snapshots[0]
    # the first call already sees stepped weights (not the initial ones) ...
    assert any(not torch.equal(a, b) for a, b in zip(first_online, start))
    # ... while the target, created in the first loss call, still holds the initial ones
    for a, b in zip(first_target, start):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- k-means heads


def test_kmeans_heads_reproduce_the_kmeans_partition(blobs):
    from sklearn.cluster import KMeans

    X, y = blobs
    features = torch.as_tensor(X)
    heads = [torch.nn.Linear(8, 4), torch.nn.Linear(8, 6)]
    agreement = kmeans_heads(heads, features, seed=3)
    assert min(agreement) >= 0.99  # exact up to float32 rounding at the cell boundaries
    km = KMeans(4, n_init=3, random_state=3).fit(X)
    with torch.no_grad():
        pred = heads[0](features).argmax(1).numpy()
    assert cluster_accuracy(km.labels_, pred) >= 0.99  # the same partition, up to names
    assert cluster_accuracy(y, pred) > 0.95  # well-separated blobs are found


def test_kmeans_heads_on_a_subset_of_large_data(monkeypatch, blobs):
    monkeypatch.setattr(heads_module, "KMEANS_MAX_SAMPLES", 50)
    X, _ = blobs
    agreement = kmeans_heads([torch.nn.Linear(8, 4)], torch.as_tensor(X), seed=0)
    assert agreement[0] >= 0.99  # all 300 samples follow the centroids found on 50
