"""Arrays to legible images: normalization, tiling, resizing, heatmaps."""

import math

import numpy as np

from tb_explain.render import colormap

#: Grey used between tiles of a grid.
PAD_RGB = np.array([40, 40, 40], np.uint8)


def signed_unit(values):
    """Scales signed values to [0, 1] with zero at 0.5 (symmetric, per array).

    Non-finite values become NaN, which the colormaps paint magenta.
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    scale = np.max(np.abs(values[finite])) if finite.any() else 0.0
    out = np.full(values.shape, 0.5) if scale == 0 else 0.5 + 0.5 * values / scale
    return np.where(finite, out, np.nan)


def minmax_unit(values, low=None, high=None):
    """Scales values to [0, 1] between `low` and `high` (default min and max)."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(values.shape, np.nan)
    low = np.min(values[finite]) if low is None else low
    high = np.max(values[finite]) if high is None else high
    if high <= low:
        out = np.zeros(values.shape)
    else:
        out = np.clip((values - low) / (high - low), 0.0, 1.0)
    return np.where(finite, out, np.nan)


def block_reduce(values, max_side):
    """Averages blocks of a 2-D array so no side exceeds `max_side`.

    A block holding any non-finite value becomes NaN, so it stays visible.
    """
    h, w = values.shape
    fy, fx = math.ceil(h / max_side), math.ceil(w / max_side)
    if fy == 1 and fx == 1:
        return values
    pad = ((0, -h % fy), (0, -w % fx))
    bad = ~np.isfinite(values)
    total = np.pad(np.where(bad, 0.0, values), pad)
    count = np.pad(np.ones((h, w)), pad)
    bad = np.pad(bad, pad)
    shape = (total.shape[0] // fy, fy, total.shape[1] // fx, fx)
    mean = total.reshape(shape).sum(axis=(1, 3)) / count.reshape(shape).sum(axis=(1, 3))
    mean[bad.reshape(shape).any(axis=(1, 3))] = np.nan
    return mean


def upscale(image, factor):
    """Nearest-neighbour upscaling of an `(h, w, ...)` image by an int factor."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def fit_factor(h, w, min_side=128, max_side=1024):
    """Integer upscale factor that brings `min(h, w)` towards `min_side`."""
    factor = max(1, min_side // max(1, min(h, w)))
    return max(1, min(factor, max_side // max(1, h, w)))


def tile_grid(tiles, cols, pad=1):
    """Tiles same-shaped RGB tiles `(n, h, w, 3)` into one grid image.

    Args:
        tiles: uint8 array `(n, h, w, 3)`.
        cols: Tiles per row.
        pad: Pixels of `PAD_RGB` between and around tiles.

    Returns:
        A uint8 array `(rows * (h + pad) + pad, cols * (w + pad) + pad, 3)`.
    """
    n, h, w, _ = tiles.shape
    rows = math.ceil(n / cols)
    grid = np.empty((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.uint8)
    grid[:] = PAD_RGB
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = tiles[i]
    return grid


def weight_image(value, max_in=16, max_out=64, max_side=512):
    """Renders a weight tensor as an RGB image with a diverging colormap.

    Zero is white, positive red, negative blue, scaled symmetrically by the
    largest magnitude in the image, so negative weights stay visible.
    NaN/Inf weights are magenta.

    - 1-D (biases, norms): one row of cells.
    - 2-D (dense kernels): a heatmap with the longer side horizontal
      (units x inputs when there are more inputs than units), averaged in
      blocks when a side exceeds `max_side`.
    - 3-D (Conv1D `(k, in, out)`): one `in x k` tile per filter.
    - 4-D (Conv2D `(kh, kw, in, out)`): a grid of `kh x kw` tiles, a row per
      input channel (at most `max_in`) and a column per filter (at most
      `max_out`).
    - 5-D (Conv3D): as 4-D, averaged over the depth axis.

    Args:
        value: numpy array of the weight.

    Returns:
        uint8 array `(h, w, 3)`, or None for scalars.
    """
    value = np.asarray(value, np.float64)
    if value.ndim == 0 or value.size == 0:
        return None
    if value.ndim == 5:
        value = value.mean(axis=0)
    if value.ndim == 1:
        row = block_reduce(value.reshape(1, -1), max_side)
        factor = int(np.clip(max_side // row.shape[1], 2, 32))
        rgb = upscale(colormap.apply(signed_unit(row), "diverging"), factor)
        return np.repeat(rgb, max(1, 16 // factor), axis=0)
    if value.ndim == 2:
        grid = value.T if value.shape[0] > value.shape[1] else value
        grid = block_reduce(grid, max_side)
        rgb = colormap.apply(signed_unit(grid), "diverging")
        return upscale(rgb, fit_factor(*grid.shape, min_side=64))
    if value.ndim == 3:  # (k, in, out) -> one (in, k) tile per filter
        value = value[:, :max_in * 4, :max_out]
        unit = signed_unit(value)
        tiles = np.transpose(unit, (2, 1, 0))  # (out, in, k)
        cols = min(tiles.shape[0], 16)
    else:  # (kh, kw, in, out) -> in rows x out cols of (kh, kw) tiles
        value = value[:, :, :max_in, :max_out]
        unit = signed_unit(value)
        kin, kout = unit.shape[2], unit.shape[3]
        tiles = np.transpose(unit, (2, 3, 0, 1)).reshape(kin * kout, *unit.shape[:2])
        cols = kout
    factor = max(1, 24 // max(tiles.shape[1:]))
    rgb = np.stack([upscale(colormap.apply(t, "diverging"), factor) for t in tiles])
    return tile_grid(rgb, cols)
