"""Feeding and chunking: what a method computes on (`setup`), the model's
inputs inside a compiled core (`feed`), the gradient core of the gradient
methods, and how rows are cut into chunks and summed per sample
(`run_chunks`: rows built, differentiated and summed per sample inside the
compiled core; float64 sums of the chunks in numpy).
"""

import dataclasses
import functools

import keras
import numpy as np

from tb_explain import backend
from tb_explain.compute.attribution import _cores
from tb_explain.compute.attribution._inputs import InputPlan, model_input_leaves, plan_inputs
from tb_explain.compute.attribution._outputs import outputs_and_targets, select


@dataclasses.dataclass
class Setup:
    """What a method computes on: the inputs' plan, the explained output and
    targets, the attributed arrays (token inputs: their embeddings) and the
    model's input leaves."""

    plan: InputPlan
    key: object
    targets: np.ndarray
    xs: list
    feed: list
    #: Classes per position of a sequence output `(n, T, V)` (None for
    #: others): `targets` then index the flattened `T * V` scores.
    per_position: int = None

    @property
    def n(self):
        return len(self.plan.leaves[0])

    @property
    def explained(self):
        """`target` (and `position` for a sequence output) of the result."""
        if self.per_position is None:
            return {"target": self.targets}
        return {"target": self.targets % self.per_position,
                "position": self.targets // self.per_position}


def setup(model, inputs, target=None, output=None, position="last", predict=True):
    """Plans the inputs, validates `output` and `target`, embeds token ids
    (`predict`: see `outputs_and_targets`)."""
    plan = plan_inputs(model, inputs)
    key, chosen, per_position = outputs_and_targets(model, plan, target, output, position,
                                                    predict)
    xs = [backend.to_numpy(plan.embeddings[i](keras.ops.convert_to_tensor(plan.ids[i])))
          if plan.kinds[i] == "token" else plan.leaves[i] for i in plan.attributed]
    return Setup(plan, key, chosen, xs, model_input_leaves(model, plan), per_position)


def feed(plan, points, model_xs, holder):
    """The model's inputs inside a compiled core: attributed float inputs are
    `points`, the others `model_xs` (the original leaves of the same rows);
    token inputs' embeddings go to `holder` (returned by their swapped layer)."""
    position = {i: j for j, i in enumerate(plan.attributed)}
    out = []
    for i, kind in enumerate(plan.kinds):
        if kind == "float":
            out.append(points[position[i]])
        else:
            out.append(model_xs[i])
            if kind == "token":
                holder[i] = points[position[i]]
    return plan.rebuild(out)


def take_targets(outputs, key, target):
    """Inside a core: the selected output's unit `target[r]` of each row r."""
    selected = select(outputs, key)
    index = keras.ops.cast(target, "int32")[:, None]
    return keras.ops.take_along_axis(selected, index, axis=1)[:, 0]


def gradient_core(model, plan, key, holder, reduce=None, chunk=1, per_sample=1, whole=False):
    """A core that builds its rows' points and sums their gradients per
    sample inside the compiled function:
    `core(xs, bases, held, targets, alphas, weights, noise, start) -> (sums, f)`.

    Every argument but `start` is the whole computation's, converted once:
    `xs` the attributed inputs `[n, ...]`, `bases` the path's start points
    (IG; None: zeros), `held` the non-float model inputs (None for float ones),
    `targets` `[n]`, `alphas` and `weights` `[per_sample]` (alphas: None
    without a path: the points are the inputs), `noise` `[n * per_sample,
    ...]` per attributed input or None. The call computes the `chunk` rows from flat index `start` (row `r`
    is draw `r % per_sample` of sample `r // per_sample`; rows past the end
    repeat the last with weight 0): a row's point is `xs[s]`, or
    `bases[s] + alpha * (xs[s] - bases[s])`, plus its noise; its values are
    `reduce(dF/dpoint, point)` (default: the gradient) times its weight,
    summed per sample (`sums[j]`: `[segments(chunk, per_sample), ...]`, from
    the chunk's first sample on), so only per-sample sums leave the compiled
    function; `f` is the selected output at the target of every row.

    `whole=True` is for a chunk holding every row (`n * per_sample ==
    chunk`, `start` 0): the rows are then built by broadcasting and summed
    by a weighted sum over the draw axis, without the row index's dozen
    small ops (a tenth of a small model's gradient, on TensorFlow).
    """
    ops = keras.ops
    count = segments(chunk, per_sample)

    def core(xs, bases, held, targets, alphas, weights, noise, start):
        rows = (_WholeRows(chunk, per_sample) if whole else
                _ChunkRows(start, chunk, per_sample, ops.shape(xs[0])[0]))
        points = []
        for j, x in enumerate(xs):
            points.append(rows.points(x, None if bases is None else bases[j], alphas,
                                      None if noise is None else noise[j]))
        model_xs = [None if h is None else rows.of_samples(h) for h in held]
        target = rows.of_samples(targets)

        def total_of(pts):
            f_rows = take_targets(model(feed(plan, pts, model_xs, holder), training=False),
                                  key, target)
            return ops.sum(f_rows), f_rows

        grads, f_rows = backend.input_gradients(total_of, points)
        sums = [rows.weighted_sums(g if reduce is None else reduce(g, p), weights, count)
                for g, p in zip(grads, points)]
        return sums, f_rows
    return core


def _draw_axis(values, rank):
    """`values` `[per_sample]` shaped `[1, per_sample, 1, ...]` to broadcast
    against `[n, per_sample, ...]` rows of samples of `rank` (by indexing:
    no op call)."""
    return values[(None, slice(None)) + (None,) * (rank - 1)]


def _column(values, rank):
    """`values` `[rows]` shaped to broadcast against a `[rows, ...]` tensor of `rank`."""
    return keras.ops.reshape(values, (-1,) + (1,) * (rank - 1))


class _ChunkRows:
    """Inside a core: the `chunk` rows from flat index `start` (a tensor),
    gathered from their samples and draws, summed by segment."""

    def __init__(self, start, chunk, per_sample, n):
        self.index, self.valid, self.sample, self.step = chunk_index(start, chunk, per_sample, n)

    def of_samples(self, t):
        return backend.gather(t, self.sample)

    def points(self, x, base, alphas, noise):
        ops = keras.ops
        rows = self.of_samples(x)
        if alphas is not None:  # on the path from the base (zeros without bases)
            a = _column(ops.cast(backend.gather(alphas, self.step), x.dtype), len(x.shape))
            if base is None:
                rows = a * rows
            else:
                start = self.of_samples(base)
                rows = start + a * (rows - start)
        if noise is not None:
            rows = rows + backend.gather(noise, self.index)
        return rows

    def weighted_sums(self, value, weights, count):
        ops = keras.ops
        weight = backend.gather(weights, self.step) * ops.cast(self.valid, weights.dtype)
        value = value * _column(ops.cast(weight, value.dtype), len(value.shape))
        return ops.segment_sum(value, self.sample - self.sample[0], num_segments=count)


class _WholeRows:
    """Inside a core: every row of the computation (`n = chunk / per_sample`
    samples, row `s * per_sample + d` draw `d` of sample `s`), built by
    broadcasting each sample over its draws and summed over the draw axis."""

    def __init__(self, chunk, per_sample):
        self.n, self.per_sample = chunk // per_sample, per_sample

    def of_samples(self, t):
        if self.per_sample == 1:
            return t
        return keras.ops.repeat(t, self.per_sample, axis=0)

    def _rows(self, t):
        """`[n, per_sample, ...]` as `[n * per_sample, ...]`."""
        return keras.ops.reshape(t, (-1,) + tuple(keras.ops.shape(t)[2:]))

    # Indexing and operators where they serve: on PyTorch, whose cores run
    # eagerly, each `keras.ops` call costs 5-25 us of Python (its symbolic
    # check walks the arguments): 0.3-0.5 ms a call on the demo CNN before,
    # a tenth of its gradient on 2 rows, some 3% on its 8 x 51.
    def points(self, x, base, alphas, noise):
        if alphas is None:
            rows = self.of_samples(x)
        else:
            a = _draw_axis(keras.ops.cast(alphas, x.dtype), len(x.shape))
            end = x[:, None]
            if base is None:
                rows = self._rows(a * end)
            else:
                start = base[:, None]
                rows = self._rows(start + a * (end - start))
        return rows if noise is None else rows + noise

    def weighted_sums(self, value, weights, count):
        # (not an einsum over "np...": TensorFlow 2.21's crashes with
        # free(): invalid pointer on some shapes)
        ops = keras.ops
        shape = tuple(ops.shape(value)[1:])
        per_sample = ops.reshape(value, (self.n, self.per_sample) + shape)
        weight = _draw_axis(ops.cast(weights, value.dtype), len(shape) + 1)
        return ops.sum(per_sample * weight, axis=1)


def chunk_index(start, chunk, per_sample, n):
    """Inside a core: `(index, valid, sample, step)` of the `chunk` rows from
    flat index `start` (a tensor) over `n` samples of `per_sample` rows each;
    rows past the end repeat the last one, `valid` False."""
    ops = keras.ops
    total = n * per_sample
    index = ops.cast(start, "int32") + ops.arange(chunk, dtype="int32")
    valid = index < total
    index = ops.minimum(index, total - 1)
    return index, valid, index // per_sample, index % per_sample


def segments(chunk, per_sample):
    """The most samples one chunk of `chunk` rows can touch, when each sample
    owns `per_sample` contiguous rows."""
    return int(min(chunk, -(-(chunk - 1) // per_sample) + 1))


def held_inputs(done):
    """The non-float model inputs (token ids, held inputs: what `feed` takes
    from `model_xs`) as arrays, for the cores' argument walk
    (`_cores.as_tensors`) to convert with the rest; None for float inputs,
    whose rows a core builds itself."""
    return [None if kind == "float" else leaf
            for leaf, kind in zip(done.feed, done.plan.kinds)]


def run_chunks(core, done, total_rows, chunk, per_sample, xs=None, bases=None, alphas=None,
               weights=None, noise=None, trace=False):
    """Runs a core (`gradient_core` of `chunk` and `per_sample`) over the
    first `total_rows` rows in chunks, and adds the chunks' per-sample sums
    in float64. The arrays are converted to tensors once; each call passes
    only its first row.

    Args:
        core: From `gradient_core` (registered with `_cores.register_core`).
        done: The `Setup` (its `xs`, `feed`, `targets`, `plan`).
        total_rows: Rows to run: `n * per_sample`, or fewer for a warm-up
            (whose sums then also hold rows past `total_rows`).
        chunk: Rows per call.
        per_sample: Rows of each sample (steps, draws).
        xs: The attributed inputs (default `done.xs`), arrays or tensors.
        bases: The path's start points (IG; None: zeros).
        alphas: `[per_sample]` float32 path positions (with `bases`), an
            array or a tensor (IG passes its rule's, converted once), or None.
        weights: `[per_sample]` float32 weights, an array or a tensor (None:
            `1 / per_sample`).
        noise: Per attributed input, `[n * per_sample, ...]` draws, or None.
        trace: Compile the core for its first chunk without running it,
            where the backend can (a warm-up); where it cannot, run.

    Returns:
        `(per attributed input: [n, ...] float64 sums, F of every row [total_rows])`,
        or None when `trace` compiled without running.
    """
    if weights is None:
        weights = np.full(per_sample, 1.0 / per_sample, np.float32)
    elif isinstance(weights, np.ndarray):
        weights = weights.astype(np.float32, copy=False)
    args = _cores.as_tensors((list(done.xs if xs is None else xs), bases, held_inputs(done),
                              np.asarray(done.targets), alphas, weights, noise))
    if trace and core.trace(*args, start_index(0)):
        return None
    acc = [np.zeros(x.shape, np.float64) for x in done.xs]
    f_rows = []
    for start in range(0, total_rows, chunk):
        sums, f = core(*args, start_index(start))
        add_chunk_sums(acc, sums, start, min(start + chunk, total_rows), per_sample)
        f_rows.append(backend.to_numpy(f))
    return acc, np.concatenate(f_rows)[:total_rows]


@functools.lru_cache(maxsize=256)
def start_index(start):
    """A core's `start` argument: the int32 scalar tensor of `start`, made
    once (a conversion costs about as much as a small model's layer call);
    numpy where compiled calls take it (`backend.to_argument`: on JAX, a
    conversion compiles first, 0.17 s beside a background compile)."""
    return backend.to_argument(np.asarray(start, np.int32))


def difference_sums(grads, ends, starts, valid, sample, per_sample, count):
    """Inside a core: per sample, the mean over its `per_sample` rows of
    `grad * (end - start)` (float32; rows past the inputs' end, `valid`
    False, count for nothing): `[count, ...]` per attributed input."""
    ops = keras.ops
    weight = ops.cast(valid, "float32") / float(per_sample)
    local = sample - sample[0]
    sums = []
    for g, end, origin in zip(grads, ends, starts):
        value = ops.cast(g * (end - origin), "float32")
        value = value * ops.reshape(weight, (-1,) + (1,) * (len(value.shape) - 1))
        sums.append(ops.segment_sum(value, local, num_segments=count))
    return sums


def add_chunk_sums(acc, sums, start, stop, per_sample):
    """Adds a core's per-sample sums of the rows `[start, stop)` (each sample
    owning `per_sample` contiguous rows; `sums[j][0]` is the sample of row
    `start`) into the float64 accumulators `acc`."""
    first = start // per_sample
    count = (stop - 1) // per_sample - first + 1
    for a, value in zip(acc, sums):
        a[first:first + count] += backend.to_numpy(value)[:count]


def chunk_rows(total_rows, batch_size):
    """Balanced chunks of at most `batch_size` rows: the last is padded least."""
    chunks = -(-total_rows // (batch_size or total_rows))
    return -(-total_rows // chunks)


#: Automatic `batch_size` of the attribution methods: rows holding at most
#: this many input values, and at least `AUTO_MIN_ROWS`.
AUTO_VALUES = 1 << 22


AUTO_MIN_ROWS = 32


def auto_batch_size(xs, batch_size):
    """`batch_size`, or (None) as many rows as hold 4M input values (>= 32)."""
    if batch_size is not None:
        return batch_size
    per_row = sum(int(np.prod(x.shape[1:])) for x in xs)
    return max(AUTO_MIN_ROWS, AUTO_VALUES // max(per_row, 1))


def forward_batch_size(model, xs, batch_size):
    """`auto_batch_size` for a forward-only core, capped at the rows whose
    widest layer output holds `backend.forward_values()` values (where the
    backend sets it and the model's graph gives the width)."""
    rows = auto_batch_size(xs, batch_size)
    budget = backend.forward_values()
    if batch_size is not None or budget is None:
        return rows
    widest = _cores.widest_output(model)
    return rows if not widest else min(rows, max(AUTO_MIN_ROWS, budget // widest))


def leaves_like(setup, per_attributed, reduce_tokens=True):
    """Attributions of the attributed inputs back into the inputs' structure:
    token inputs summed over the embedding axis (one value per token id:
    `[n, length]` for text too), skipped inputs zeros."""
    plan = setup.plan
    leaves = [np.zeros(x.shape, np.float32) for x in plan.leaves]
    for j, i in enumerate(plan.attributed):
        value = np.asarray(per_attributed[j])
        if plan.kinds[i] == "token" and reduce_tokens:
            value = value.sum(axis=-1)
        leaves[i] = value.astype(np.float32)
    return plan.rebuild(leaves)
