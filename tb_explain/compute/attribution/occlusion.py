"""Occlusion sensitivity (Zeiler & Fergus, 2014): what the output loses when a
window of the input is hidden.

A `window` slides with `stride` over each attributed input's positions
(images: height x width, covering every channel; tables: one feature at a
time; sequences and token embeddings: positions along the sequence, covering
the whole embedding) and is replaced by `baseline`; every element gets the
mean, over the windows that cover it, of F(x) - F(occluded x). All occluded
copies are built inside one compiled forward function, in chunks of rows.
"""

import numpy as np

from tb_explain import _validate, backend
from tb_explain.compute.attribution import _cores, _feeding, _inputs, _outputs
from tb_explain.compute.attribution.result import Attribution

OPTIONS = ("window", "stride", "baseline")


def _spatial_rank(x):
    """Axes a window slides over: (height, width) of images, else the first."""
    return 2 if x.ndim == 4 else 1


def _pair(value, rank, name):
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank or min(value) < 1:
        raise ValueError(f"`{name}` must be an int >= 1 or {rank} of them, got {value!r}.")
    return value


def windows(xs, window=None, stride=None):
    """Per attributed input: `(window sizes, starts [P, rank])`.

    Defaults: images, a window of 1/8 of the smaller side (at least 1) and a
    stride of half the window; anything else, one position (feature, token)
    at a time.
    """
    out = []
    for x in xs:
        rank = _spatial_rank(x)
        dims = x.shape[1:1 + rank]
        if window is None:
            size = (max(1, min(dims) // 8),) * rank if rank == 2 else (1,)
        else:
            size = _pair(window, rank, "window")
        if any(s > d for s, d in zip(size, dims)):
            raise ValueError(f"`window` {size} is larger than the input's {tuple(dims)}.")
        step = _pair(stride, rank, "stride") if stride is not None else tuple(
            max(1, s // 2) if rank == 2 else s for s in size)
        axes = []
        for d, s, st in zip(dims, size, step):
            starts = list(range(0, d - s + 1, st))
            if starts[-1] != d - s:  # the last window reaches the edge
                starts.append(d - s)
            axes.append(starts)
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, rank)
        out.append((size, grid.astype(np.int32)))
    return out


def _mask(x_shape, size, start, rank):
    """`[m, *spatial]` float32 masks (1 inside each row's window) for starts `[m, rank]`."""
    mask = None
    for axis in range(rank):
        coords = np.arange(x_shape[1 + axis])[None, :]
        inside = ((coords >= start[:, axis:axis + 1])
                  & (coords < start[:, axis:axis + 1] + size[axis])).astype(np.float32)
        shape = [-1] + [1] * rank
        shape[1 + axis] = x_shape[1 + axis]
        inside = inside.reshape(shape)
        mask = inside if mask is None else mask * inside
    return mask


def _core(model, key, plan):
    """`core(points, model_xs, target) -> F` of each row, compiled per model."""
    cache_key = ("outputs", key, tuple(plan.kinds),
                 tuple(id(l) for l in plan.embeddings), plan.structure)
    per_model = _cores.cache(model)
    if cache_key in per_model:
        return per_model[cache_key]
    holder = {}

    def core(points, model_xs, target):
        outs = model(_feeding.feed(plan, points, model_xs, holder), training=False)
        return _feeding.take_targets(outs, key, target)

    return _cores.register_core(model, cache_key, plan, holder, core)


def occlusion(model, inputs, *, target=None, output=None, position="last", batch_size=None, window=None,
              stride=None, baseline=0.0):
    """Occlusion sensitivity, shaped like the inputs (token inputs: per token).

    Args:
        window: Window size (an int, or (height, width) for images); default
            1/8 of an image's smaller side, one feature or token otherwise.
        stride: Step between windows (default: half the window for images,
            the window otherwise).
        baseline: The value that replaces an occluded window (a number).
    """
    baseline = _validate.check_float("baseline", baseline)
    done = _feeding.setup(model, inputs, target, output, position)
    found = windows(done.xs, window, stride)
    sizes = [size for size, _ in found]
    ranks = {len(size) for size in sizes}
    rank = max(ranks)
    owner = np.concatenate([np.full(len(grid), j, np.int32) for j, (_, grid) in enumerate(found)])
    starts = np.concatenate([np.pad(grid, ((0, 0), (0, rank - grid.shape[1])))
                             for _, grid in found])
    f_x = backend.to_numpy(_outputs.select(
        _cores.forward(model)(_inputs.model_inputs(model, done.plan)), done.key))[
        np.arange(done.n), done.targets]
    core = _core(model, done.key, done.plan)
    positions = len(owner)
    total_rows = done.n * positions
    chunk = _feeding.chunk_rows(total_rows, _feeding.auto_batch_size(done.xs, batch_size))
    acc = [np.zeros((done.n,) + x.shape[1:1 + len(s)], np.float64) for x, s in zip(done.xs, sizes)]
    for index, valid in _feeding.chunks(total_rows, chunk):  # rows: (sample, position)
        sample, position = index // positions, index % positions
        points, masks = [], []
        for j, (x, size) in enumerate(zip(done.xs, sizes)):
            rank = len(size)
            mask = _mask(x.shape, size, starts[position], rank)
            mask *= (owner[position] == j).astype(np.float32).reshape([-1] + [1] * rank)
            full = mask.reshape(mask.shape + (1,) * (x.ndim - 1 - rank)).astype(x.dtype)
            points.append(x[sample] * (1 - full) + np.asarray(baseline, x.dtype) * full)
            masks.append(mask)
        f = backend.to_numpy(core(points, [leaf[sample] for leaf in done.feed],
                                  done.targets[sample])).astype(np.float64)
        drop = (f_x[sample].astype(np.float32).astype(np.float64) - f) * valid
        _feeding.add_by_sample(acc, [drop.reshape([-1] + [1] * (m.ndim - 1)) * m for m in masks],
                               sample)
    attributions = []
    for j, (x, (size, grid)) in enumerate(zip(done.xs, found)):
        coverage = np.zeros(x.shape[1:1 + len(size)])
        for corner in grid:
            coverage[tuple(slice(c, c + s) for c, s in zip(corner, size))] += 1
        per_element = acc[j] / np.maximum(coverage, 1)
        # spread over the axes the window covers (channels, embedding)
        extra = x.shape[1 + len(size):]
        value = np.broadcast_to(per_element.reshape(per_element.shape + (1,) * len(extra)),
                                x.shape)
        if done.plan.kinds[done.plan.attributed[j]] == "token":
            value = value[..., :1]  # one value per token (summed below)
        attributions.append(np.array(value))
    return Attribution(attributions=_feeding.leaves_like(done, attributions), delta=None,
                       **done.explained, output=f_x, baseline_output=None,
                       skipped=dict(done.plan.skipped))
