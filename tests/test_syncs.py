"""No host-device synchronisation in the training step: counted on the CPU, so that none comes
back unnoticed (on a GPU each one stalls the device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import skdeepcluster as sk
from skdeepcluster._sync_count import SteadyStateSyncs, counting_syncs
from skdeepcluster.augment import StrongImageAugment

#: The most host reads of tensors per training step in the steady state (per-epoch work, such
#: as the end-of-epoch read of the losses and SeLa's relabelling, amortised over the epoch).
MAX_SYNCS_PER_STEP = 2


@pytest.fixture(scope="module")
def digits():
    X = load_digits().data[:512].astype(np.float32)
    images = (X[:256] * (255 / 16)).round().astype(np.uint8).reshape(-1, 1, 8, 8)
    return {"images": images, "vectors": X[:256], "more vectors": X}


def estimators(callbacks):
    common = dict(batch_size=16, random_state=0, callbacks=callbacks)
    method = dict(common, n_clusters=4)
    return {
        "SimCLR": (sk.SimCLR(max_epochs=3, **common), "images"),
        "RotNet": (sk.RotNet(max_epochs=3, **common), "images"),
        "AutoEncoder": (sk.AutoEncoder(max_epochs=3, **common), "vectors"),
        "SCAN": (sk.SCAN(pretext=None, max_epochs=3, self_label_epochs=3, **method), "vectors"),
        # its relabelling, once an epoch, is amortised over 32 steps (on 256 samples the solver
        # of such tiny data runs to its iteration cap: 4 reads a step)
        "SeLa": (sk.SeLa(pretext=None, max_epochs=4, **method), "more vectors"),
        "LSDC": (sk.LSDC(pretext=None, max_epochs=3, **method), "vectors"),
        "C2BIN": (sk.C2BIN(max_epochs=3, **method), "vectors"),
        "DRC": (sk.DRC(max_epochs=3, **method), "vectors"),
    }


@pytest.mark.parametrize("name", list(estimators([])))
def test_a_training_step_reads_at_most_two_values_on_the_host(digits, name):
    with counting_syncs() as counter:
        estimator, kind = estimators([SteadyStateSyncs(counter)])[name]
        estimator.fit(digits[kind])
    assert counter.steps >= 16, "too few steady-state steps were counted"
    assert counter.per_step <= MAX_SYNCS_PER_STEP, dict(counter.calls)


def test_the_counter_counts_host_reads():
    with counting_syncs() as counter:
        t = torch.ones(3)
        t.sum().item()  # not counted: the counter is not active
        counter.active = True
        t.sum().item()
        t.tolist()
        bool(t.any())
        float(t[0])
        t.nonzero()
        t.numpy()
        t.cpu().numpy()  # one read: the copy .cpu() made is on the host
    assert dict(counter.calls) == {
        "item": 1,
        "tolist": 1,
        "__bool__": 1,
        "__float__": 1,
        "nonzero": 1,
        "numpy": 1,
        "cpu": 1,
    }
    t.sum().item()  # the methods are restored: nothing more is counted
    assert counter.total == 7


def test_the_strong_view_on_a_gpu_selects_no_rows_and_equals_the_cpu_path():
    augment = StrongImageAugment()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 12, 12, generator=gen)
    choice = torch.randint(len(augment._OPS), (64,), generator=gen)
    m = torch.rand(64, generator=gen) - 0.5
    assert len(set(choice.tolist())) == len(augment._OPS)  # every operation drawn
    with counting_syncs() as counter:
        counter.active = True
        chosen = augment._apply_chosen(x, choice, m)
    assert counter.total == 0, dict(counter.calls)
    torch.testing.assert_close(chosen, augment._apply_selected(x, choice, m), rtol=0, atol=0)
