"""The batched view makers: shapes, ranges, per-sample randomness, and which view is default."""

import numpy as np
import pytest
import torch

from skdeepcluster.augment import (
    ImageAugment,
    MarginalCorruption,
    StrongImageAugment,
    VectorAugment,
    column_spread,
    default_augmentations,
    identity,
)


def images(n=16, c=3, h=12, w=12, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("make", [ImageAugment, StrongImageAugment])
def test_image_views_keep_shape_dtype_and_range(make, c):
    x = images(c=c)
    torch.manual_seed(0)
    out = make()(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("make", [ImageAugment, StrongImageAugment])
def test_image_views_draw_their_parameters_per_sample(make):
    """The same image repeated across the batch gets different views (not one set of random
    parameters for the whole batch)."""
    x = images(n=1).expand(8, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = make()(x)
    distinct = {tuple(v.flatten().round(decimals=4).tolist()) for v in out}
    assert len(distinct) == len(out)


def test_identity_crop_without_jitter_is_the_image():
    x = images()
    view = ImageAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter=0.0, grayscale_prob=0.0
    )
    torch.testing.assert_close(view(x), x, atol=1e-5, rtol=0)


def test_flip_mirrors_the_image():
    x = images()
    view = ImageAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=1.0, jitter=0.0, grayscale_prob=0.0
    )
    torch.testing.assert_close(view(x), x.flip(3), atol=1e-5, rtol=0)


def test_vector_view_is_noise_scaled_to_each_feature_and_masking():
    torch.manual_seed(0)
    x = torch.zeros(20_000, 3)
    std = torch.tensor([1.0, 10.0, 0.1])
    out = VectorAugment(std, noise=0.5, mask_prob=0.0)(x)
    torch.testing.assert_close(out.std(0), 0.5 * std, rtol=0.05, atol=0)
    masked = VectorAugment(std, noise=0.0, mask_prob=0.25)(torch.ones(20_000, 3))
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    assert abs(float((masked == 0).float().mean()) - 0.25) < 0.02


def test_default_views_by_data_kind():
    vectors = torch.randn(50, 4)
    weak, strong = default_augmentations(vectors)
    assert isinstance(weak, MarginalCorruption) and isinstance(strong, MarginalCorruption)
    assert (weak.prob, strong.prob) == (0.2, 0.4)  # SCARF: draws from the features' marginals
    torch.testing.assert_close(weak.pool, vectors)
    gray_weak, gray_strong = default_augmentations(images(c=1))
    assert gray_weak.flip_prob == 0.0 and gray_weak.rotation == 15.0  # mirrored digits differ
    assert gray_strong.base is gray_weak
    colour_weak, _ = default_augmentations(images(c=3))
    assert colour_weak.flip_prob == 0.5


def test_a_given_weak_view_is_used_and_the_strong_view_built_on_it():
    weak, strong = default_augmentations(images(), weak=identity)
    assert weak is identity and strong.base is identity
    vector_weak, vector_strong = default_augmentations(torch.randn(10, 3), weak=identity)
    assert vector_weak is identity and isinstance(vector_strong, MarginalCorruption)


def test_column_spread_of_one_row_is_one():
    np.testing.assert_array_equal(column_spread(torch.zeros(1, 3)).numpy(), np.ones(3))
