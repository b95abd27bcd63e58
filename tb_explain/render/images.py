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


def _tile_factor(h, w, min_side=48, max_factor=8):
    return int(max(1, min(max_factor, min_side // max(1, min(h, w)))))


def _shrink(plane, max_tile):
    return block_reduce(plane, max_tile) if max(plane.shape) > max_tile else plane


def feature_map_grids(values, max_tile=64):
    """Renders 4-D activations `(n, h, w, c)` as one grid image per sample.

    Each channel is normalized on its own, over all samples (so samples
    compare), painted with viridis, shrunk (block means) to at most
    `max_tile` pixels a side or upscaled (nearest) towards 32, and tiled in a
    near-square grid in channel order, row by row.

    Returns:
        uint8 array `(n, H, W, 3)`.
    """
    values = np.asarray(values, np.float64)
    if max(values.shape[1:3]) > max_tile:
        values = np.stack([
            np.stack([_shrink(values[i, :, :, k], max_tile) for k in range(values.shape[3])], -1)
            for i in range(values.shape[0])
        ])
    n, h, w, c = values.shape
    finite = np.isfinite(values)
    masked = np.where(finite, values, np.nan)
    with np.errstate(all="ignore"):
        low = np.nanmin(masked, axis=(0, 1, 2), keepdims=True)
        high = np.nanmax(masked, axis=(0, 1, 2), keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        unit = np.where(finite, np.clip((values - low) / span, 0.0, 1.0), np.nan)
    unit = np.where(np.isnan(low) & finite, 0.0, unit)
    rgb = colormap.apply(unit, "viridis")  # (n, h, w, c, 3)
    factor = _tile_factor(h, w)
    rgb = np.repeat(np.repeat(rgb, factor, axis=1), factor, axis=2)
    cols = math.ceil(math.sqrt(c))
    return np.stack([tile_grid(np.moveaxis(rgb[i], 2, 0), cols) for i in range(n)])


def sequence_heatmaps(values, max_side=256):
    """Renders 3-D activations `(n, time, units)` as one heatmap per sample.

    Time runs left to right, units top to bottom; normalized over the layer
    (all samples), viridis, block-averaged above `max_side`.
    """
    values = np.asarray(values, np.float64)
    unit = minmax_unit(values)
    images = []
    for sample in range(values.shape[0]):
        plane = block_reduce(np.transpose(unit[sample]), max_side)
        rgb = colormap.apply(plane, "viridis")
        images.append(upscale(rgb, fit_factor(*plane.shape, min_side=64, max_side=512)))
    return np.stack(images)


def unit_strips(values, max_side=512):
    """Renders 2-D activations `(n, units)` as one image: a row per sample.

    Normalized over the layer, viridis; each sample's row is 16 pixels tall
    and each unit up to 32 pixels wide, so a few units stay legible.
    """
    values = np.asarray(values, np.float64).reshape(values.shape[0], -1)
    plane = block_reduce(minmax_unit(values), max_side)
    rgb = colormap.apply(plane, "viridis")
    width = int(np.clip(max_side // plane.shape[1], 1, 32))
    return np.repeat(np.repeat(rgb, 16, axis=0), width, axis=1)[np.newaxis]


def activation_images(values, max_tile=64):
    """Dispatches on rank: 4-D grids, 3-D heatmaps, 2-D strips; 5-D+ take the
    middle slice of each extra axis. Returns uint8 `(k, H, W, 3)` or None."""
    values = np.asarray(values)
    while values.ndim > 4:
        values = values[:, values.shape[1] // 2]
    if values.ndim == 4:
        return feature_map_grids(values, max_tile)
    if values.ndim == 3:
        return sequence_heatmaps(values)
    if values.ndim == 2:
        return unit_strips(values)
    return None


def input_images(values, max_tile=224):
    """Renders probe inputs: 1- or 3-channel images as grayscale/RGB (min-max
    per sample), anything else as activations. Returns uint8 `(k, H, W, 3)`."""
    values = np.asarray(values, np.float64)
    if values.ndim == 4 and values.shape[-1] in (1, 3):
        out = []
        for sample in values:
            unit = np.nan_to_num(minmax_unit(sample))
            if unit.shape[-1] == 1:
                unit = np.repeat(unit, 3, axis=-1)
            rgb = (unit * 255 + 0.5).astype(np.uint8)
            out.append(upscale(rgb, _tile_factor(*rgb.shape[:2], min_side=128, max_factor=16)))
        return np.stack(out)
    return activation_images(values, max_tile)


def percentile_scale(values, percentile=99.0):
    """The `percentile`-th percentile of |values| (finite), or 0."""
    values = np.abs(np.asarray(values, np.float64))
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, percentile)) if finite.size else 0.0


def attribution_heatmap(attr, percentile=99.0):
    """Importance map of an image attribution `(h, w, c)`: the sum of
    |attribution| over channels, scaled to [0, 1] by its `percentile`-th
    percentile (one hot pixel cannot wash out the rest). Returns `(h, w)`."""
    magnitude = np.abs(np.asarray(attr, np.float64)).sum(axis=-1)
    scale = percentile_scale(magnitude, percentile)
    return np.clip(magnitude / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(magnitude)


def signed_attribution(attr, percentile=99.0):
    """Signed map of an image attribution: the channel sum, zero at 0.5,
    scaled symmetrically by the `percentile`-th percentile of its magnitude.
    Returns `(h, w)` in [0, 1] for the diverging colormap."""
    total = np.asarray(attr, np.float64).sum(axis=-1)
    scale = percentile_scale(total, percentile)
    if scale == 0:
        return np.full(total.shape, 0.5)
    return np.clip(0.5 + 0.5 * total / scale, 0.0, 1.0)


def same_size(tiles, fill=255):
    """uint8 tiles of different sizes padded with `fill` (bottom, right) to
    the largest, stacked: RGB tiles (white by default) as `(n, H, W, 3)`,
    indexed ones `(h, w)` (`fill=colormap.INDEX_WHITE`) as `(n, H, W)`."""
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    return np.stack([np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]))
                            + ((0, 0),) * (t.ndim - 2), constant_values=fill) for t in tiles])


def image_rgb(image):
    """A float image `(h, w, 1|3)` as uint8 RGB, min-max scaled."""
    unit = np.nan_to_num(minmax_unit(image))
    if unit.shape[-1] == 1:
        unit = np.repeat(unit, 3, axis=-1)
    elif unit.shape[-1] != 3:
        unit = np.repeat(unit.mean(axis=-1, keepdims=True), 3, axis=-1)
    return (unit * 255 + 0.5).astype(np.uint8)


def overlay(image, heat, strength=0.7):
    """Blends viridis `heat` (h, w) in [0, 1] over a grayscale copy of
    `image`, each pixel's opacity proportional to its importance."""
    gray = image_rgb(image).astype(np.float64).mean(axis=-1, keepdims=True)
    colored = colormap.apply(heat, "viridis").astype(np.float64)
    alpha = strength * heat[..., None]
    return ((1 - alpha) * gray + alpha * colored + 0.5).astype(np.uint8)


def signed_table(values, percentile=100.0, cell=(16, 24)):
    """Rows x columns of signed values as a diverging heatmap with cells of
    `cell` pixels, scaled symmetrically by the `percentile` of |values|."""
    values = np.asarray(values, np.float64)
    scale = percentile_scale(values, percentile)
    unit = np.full(values.shape, 0.5) if scale == 0 else np.clip(0.5 + 0.5 * values / scale, 0, 1)
    rgb = colormap.apply(unit, "diverging")
    return np.repeat(np.repeat(rgb, cell[0], axis=0), cell[1], axis=1)
