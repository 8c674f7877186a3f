"""Convolutional networks train channels-last by default: the layout changes, not the values."""

from __future__ import annotations

import pytest
import torch

import skdeepcluster as sk
from skdeepcluster.datasets import load_digits_images


def small_simclr_fit():
    X, _ = load_digits_images()
    return sk.SimCLR(max_epochs=1, batch_size=32, random_state=0).fit(X[:96])


def conv_weights(estimator):
    weights = [p for p in estimator.net_.module_.parameters() if p.dim() == 4]
    assert weights, "the image network has no convolution"
    return weights


def test_convolutions_train_channels_last_by_default_and_give_the_same_losses():
    assert sk.get_config()["channels_last"] is True
    channels_last = small_simclr_fit()
    with sk.config_context(channels_last=False):
        default_layout = small_simclr_fit()
    assert all(
        w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(channels_last)
    )
    # a weight with several input channels and a 3x3 kernel is not contiguous in both layouts
    assert not all(w.is_contiguous() for w in conv_weights(channels_last))
    assert all(w.is_contiguous() for w in conv_weights(default_layout))
    losses = [
        [batch["train_loss"] for batch in fit.history_[-1]["batches"]]
        for fit in (channels_last, default_layout)
    ]
    assert len(losses[0]) == 3
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-4, atol=0)


@pytest.mark.parametrize("value", ["auto", 1, None])
def test_set_config_refuses_a_bad_channels_last(value):
    with pytest.raises(ValueError, match="channels_last must be True or False"):
        sk.set_config(channels_last=value)
    assert sk.get_config()["channels_last"] is True
