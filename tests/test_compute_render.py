import keras
import numpy as np
import pytest

from tb_explain.compute import stats
from tb_explain.render import colormap, images


@pytest.mark.parametrize("bins", [1, 7, 30])
def test_batched_statistics_match_numpy(bins):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(3, 4)), rng.uniform(-2, 5, size=(50,)),
              np.full((2, 2), 0.25), np.array([1.0, np.nan, -np.inf, 3.0]),
              np.array([np.nan, np.nan])]
    tensors = [keras.ops.convert_to_tensor(a.astype(np.float32)) for a in arrays]
    # a small chunk size forces several fused groups
    buckets, norms, nonfinite = (np.asarray(t) for t in stats.batched_statistics(tensors, bins, 20))
    for i, a in enumerate(arrays):
        a = a.astype(np.float32).astype(np.float64).ravel()
        finite = a[np.isfinite(a)]
        assert nonfinite[i] == a.size - finite.size
        assert buckets[i, :, 2].sum() == finite.size
        with np.errstate(invalid="ignore"):
            expected_norm = np.sqrt(np.sum(a ** 2))
        np.testing.assert_allclose(norms[i], expected_norm, rtol=1e-12)
        if finite.size and finite.min() < finite.max():
            counts, edges = np.histogram(finite, bins=bins)
            np.testing.assert_array_equal(buckets[i, :, 2], counts)
            np.testing.assert_allclose(buckets[i, :, 0], edges[:-1], rtol=1e-12, atol=1e-15)
        elif finite.size:  # constant: last bucket, zero width, as tf.summary.histogram
            assert buckets[i, -1, 2] == finite.size
            np.testing.assert_array_equal(buckets[i, :, :2], finite[0])
        else:
            np.testing.assert_array_equal(buckets[i], 0.0)


def test_colormaps_endpoints_and_nan():
    rgb = colormap.apply(np.array([0.0, 0.5, 1.0, np.nan]), "diverging")
    np.testing.assert_array_equal(rgb[0], [0x21, 0x66, 0xAC])  # blue
    np.testing.assert_array_equal(rgb[2], [0xB2, 0x18, 0x2B])  # red
    assert rgb[1].min() > 240  # near white at zero
    np.testing.assert_array_equal(rgb[3], colormap.NONFINITE_RGB)
    viridis = colormap.apply(np.array([0.0, 1.0]), "viridis")
    np.testing.assert_array_equal(viridis, [[0x44, 0x01, 0x54], [0xFD, 0xE7, 0x25]])


def test_block_reduce_means_and_keeps_nonfinite_visible():
    values = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_array_equal(images.block_reduce(values, 2),
                                  [[2.5, 4.5], [10.5, 12.5]])
    values[0, 0] = np.inf
    reduced = images.block_reduce(values, 2)
    assert np.isnan(reduced[0, 0]) and reduced[1, 1] == 12.5
    odd = images.block_reduce(np.ones((5, 3)), 2)  # ragged edge blocks
    np.testing.assert_array_equal(odd, np.ones((2, 2)))


def test_tile_grid_layout():
    tiles = np.stack([np.full((2, 3, 3), i * 10, np.uint8) for i in range(5)])
    grid = images.tile_grid(tiles, cols=2, pad=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 3)
    assert (grid[1:3, 1:4] == 0).all() and (grid[1:3, 5:8] == 10).all()
    assert (grid[7:9, 1:4] == 40).all()
    assert (grid[7:9, 5:8] == images.PAD_RGB).all()  # empty slot


def test_weight_image_shapes():
    assert images.weight_image(np.float32(3.0)) is None
    conv = images.weight_image(np.random.rand(3, 3, 20, 100))
    # capped at 16 input rows and 64 filter columns of 24-pixel tiles
    assert conv.shape == (16 * 25 + 1, 64 * 25 + 1, 3)
    dense = images.weight_image(np.random.rand(2000, 10))
    assert dense.shape[1] <= 1024 and dense.shape[0] < dense.shape[1] / 10
    conv1d = images.weight_image(np.random.rand(5, 2, 3))
    assert conv1d.shape[2] == 3


def test_large_tensors_take_their_own_reductions_with_the_same_results():
    rng = np.random.default_rng(1)
    big = 1 << 16  # TensorFlow's statistics take their own reductions from this size on
    with_nan = rng.uniform(-3, 3, size=big + 5)
    with_nan[[3, 70, 900]] = [np.nan, np.inf, -np.inf]
    arrays = [rng.normal(size=(big // 64, 64)), rng.normal(size=(3, 4)), with_nan,
              np.full(big, 0.5), np.full(big, np.nan), rng.uniform(0, 1, size=(7,))]
    tensors = [keras.ops.convert_to_tensor(a.astype(np.float32)) for a in arrays]
    buckets, norms, nonfinite = (np.asarray(t) for t in stats.batched_statistics(tensors, 30))
    for i, a in enumerate(arrays):  # in the tensors' order, large and small interleaved
        a = a.astype(np.float32).astype(np.float64).ravel()
        finite = a[np.isfinite(a)]
        assert nonfinite[i] == a.size - finite.size
        assert buckets[i, :, 2].sum() == finite.size
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(norms[i], np.sqrt(np.sum(a ** 2)), rtol=1e-10)
        if finite.size and finite.min() < finite.max():
            counts, edges = np.histogram(finite, bins=30)
            np.testing.assert_array_equal(buckets[i, :, 2], counts)
            np.testing.assert_allclose(buckets[i, :, 0], edges[:-1], rtol=1e-12, atol=1e-15)
        elif finite.size:
            assert buckets[i, -1, 2] == finite.size
            np.testing.assert_array_equal(buckets[i, :, :2], finite[0])
        else:
            np.testing.assert_array_equal(buckets[i], 0.0)
