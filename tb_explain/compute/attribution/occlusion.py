"""Occlusion sensitivity (Zeiler & Fergus, 2014): what the output loses when a
window of the input is hidden.

A `window` slides with `stride` over each attributed input's positions
(images: height x width, covering every channel; tables: one feature at a
time; sequences and token embeddings: positions along the sequence, covering
the whole embedding) and is replaced by `baseline`; every element gets the
mean, over the windows that cover it, of F(x) - F(occluded x). All occluded
copies are built, run and scored inside one compiled function, in chunks of
rows; only per-sample sums leave it.
"""

import keras
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


def _core(model, key, plan, sizes, dims, chunk, positions):
    """`core(xs, held, targets, f_x, starts, owner, baseline, start) -> (sums, f)`,
    compiled per model, windows and chunk: the `chunk` rows (sample, window
    position) from flat index `start` are occluded, run forward and scored
    inside the compiled function; `sums[j]` is, per sample of the chunk (from
    its first on), the sum over its rows of `(F(x) - F(occluded)) * mask`
    over input j's window axes (`dims[j]`: their lengths), `f` every row's F."""
    ops = keras.ops
    count = _feeding.segments(chunk, positions)

    def build(holder):
        return lambda *args: core(holder, *args)

    def core(holder, xs, held, targets, f_x, starts, owner, baseline, start):
        _, valid, sample, position = _feeding.chunk_index(start, chunk, positions,
                                                          ops.shape(xs[0])[0])
        corner = backend.gather(starts, position)  # [chunk, rank]
        points, masks = [], []
        for j, (x, size, dim) in enumerate(zip(xs, sizes, dims)):
            rank = len(size)
            mask = ops.cast(ops.equal(backend.gather(owner, position), j), x.dtype)
            mask = ops.reshape(mask, (-1,) + (1,) * rank)
            for axis in range(rank):
                coords = ops.arange(dim[axis], dtype="int32")[None, :]
                low = corner[:, axis:axis + 1]
                inside = ops.cast((coords >= low) & (coords < low + size[axis]), x.dtype)
                shape = [-1] + [1] * rank
                shape[1 + axis] = dim[axis]
                mask = mask * ops.reshape(inside, shape)
            full = ops.reshape(mask, (-1,) + dim + (1,) * (len(x.shape) - 1 - rank))
            rows = backend.gather(x, sample)
            points.append(rows * (1 - full) + ops.cast(baseline, x.dtype) * full)
            masks.append(mask)
        model_xs = [None if h is None else backend.gather(h, sample) for h in held]
        outs = model(_feeding.feed(plan, points, model_xs, holder), training=False)
        f = _feeding.take_targets(outs, key, backend.gather(targets, sample))
        drop = (backend.gather(f_x, sample) - ops.cast(f, "float32")) * ops.cast(valid, "float32")
        local = sample - sample[0]
        sums = [ops.segment_sum(ops.reshape(drop, (-1,) + (1,) * (len(m.shape) - 1))
                                * ops.cast(m, "float32"), local, num_segments=count)
                for m in masks]
        return sums, f

    return _cores.cached_core(model, ("occlusion", key, tuple(sizes), tuple(dims), chunk,
                                      positions), plan, build)


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
        _cores.explained_forward(model)(_inputs.model_inputs(model, done.plan)), done.key))[
        np.arange(done.n), done.targets]
    positions = len(owner)
    total_rows = done.n * positions
    chunk = _feeding.chunk_rows(total_rows, _feeding.auto_batch_size(done.xs, batch_size))
    dims = [tuple(x.shape[1:1 + len(size)]) for x, size in zip(done.xs, sizes)]
    core = _core(model, done.key, done.plan, sizes, dims, chunk, positions)
    args = _cores.as_tensors((list(done.xs), _feeding.held_inputs(done),
                              np.asarray(done.targets), f_x.astype(np.float32),
                              starts.astype(np.int32), owner, np.asarray(baseline, np.float32)))
    acc = [np.zeros((done.n,) + x.shape[1:1 + len(s)], np.float64) for x, s in zip(done.xs, sizes)]
    for start in range(0, total_rows, chunk):  # rows: (sample, position)
        sums, _ = core(*args, _feeding.start_index(start))
        _feeding.add_chunk_sums(acc, sums, start, min(start + chunk, total_rows), positions)
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
