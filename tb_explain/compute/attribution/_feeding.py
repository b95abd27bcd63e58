"""Feeding and chunking: what a method computes on (`setup`), the model's
inputs inside a compiled core (`feed`), the gradient core of the gradient
methods, and how rows are cut into chunks and summed per sample
(`run_chunks`: indexing and float64 sums in numpy, the model pass compiled).
"""

import dataclasses

import keras
import numpy as np

from tb_explain import backend
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


def setup(model, inputs, target=None, output=None, position="last"):
    """Plans the inputs, validates `output` and `target`, embeds token ids."""
    plan = plan_inputs(model, inputs)
    key, chosen, per_position = outputs_and_targets(model, plan, target, output, position)
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
    index = keras.ops.expand_dims(keras.ops.cast(target, "int32"), 1)
    return keras.ops.take_along_axis(selected, index, axis=1)[:, 0]


def gradient_core(model, plan, key, holder, reduce=None):
    """A core: `core(points, model_xs, target, weight) -> (values, f)`, with F
    the selected output at `target` of each row (one row per point) and
    `values[j]` each row's `reduce(dF/dpoint_j, point_j)` (default: the
    gradient) times the row's `weight`."""
    ops = keras.ops

    def core(points, model_xs, target, weight):
        def total(pts):
            f_rows = take_targets(model(feed(plan, pts, model_xs, holder), training=False),
                                  key, target)
            return ops.sum(f_rows), f_rows

        grads, f_rows = backend.input_gradients(total, points)
        values = []
        for g, p in zip(grads, points):
            value = g if reduce is None else reduce(g, p)
            shape = (-1,) + (1,) * (len(value.shape) - 1)
            values.append(value * ops.reshape(ops.cast(weight, value.dtype), shape))
        return values, f_rows
    return core


def chunks(total_rows, chunk):
    """Yields `(index, valid)` of each chunk of `chunk` rows: the row indices,
    the last chunk padded with copies of the last row, and which are real."""
    for start in range(0, total_rows, chunk):
        wanted = np.arange(start, start + chunk)
        yield np.minimum(wanted, total_rows - 1), wanted < total_rows


def run_chunks(core, done, total_rows, chunk, sample_of, points_of, weight_of=None):
    """Runs a core over `total_rows` rows in chunks of `chunk` rows (the last
    one padded with copies of the last row, weight 0), and sums each row's
    values into its sample in float64.

    Args:
        core: From `gradient_core` (registered with `_cores.register_core`).
        done: The `Setup`.
        total_rows: Rows to run.
        chunk: Rows per call.
        sample_of: `sample_of(index) -> samples` (numpy ints) of row indices.
        points_of: `points_of(index, samples) -> [arrays]`, the rows' points.
        weight_of: `weight_of(index) -> float32 weights` (None: 1 each).

    Returns:
        `(per attributed input: [n, ...] float64 sums, F of every row [total_rows])`.
    """
    acc = [np.zeros(x.shape, np.float64) for x in done.xs]
    f_rows = []
    for index, valid in chunks(total_rows, chunk):
        samples = sample_of(index)
        weight = np.ones(chunk, np.float32) if weight_of is None else weight_of(index)
        weight = np.where(valid, weight, 0.0).astype(np.float32)
        model_xs = [leaf[samples] for leaf in done.feed]
        values, f = core(points_of(index, samples), model_xs, done.targets[samples], weight)
        add_by_sample(acc, [backend.to_numpy(v) for v in values], samples)
        f_rows.append(backend.to_numpy(f))
    return acc, np.concatenate(f_rows)[:total_rows]


def add_by_sample(acc, values, samples):
    """`acc[s] += sum of values of the rows of sample s` (rows of a sample
    are contiguous: one `np.add.reduceat` per input)."""
    starts = np.flatnonzero(np.r_[True, samples[1:] != samples[:-1]])
    owners = samples[starts]
    for a, v in zip(acc, values):
        a[owners] += np.add.reduceat(v.astype(np.float64, copy=False), starts, axis=0)


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
