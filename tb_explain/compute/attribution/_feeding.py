"""Feeding and chunking: what a method computes on (`setup`), the model's
inputs inside a compiled core (`feed`), the gradient sums of one chunk of
rows, and how rows are cut into chunks.
"""

import dataclasses

import numpy as np
import tensorflow as tf

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

    @property
    def n(self):
        return len(self.plan.leaves[0])


def setup(model, inputs, target=None, output=None):
    """Plans the inputs, validates `output` and `target`, embeds token ids."""
    plan = plan_inputs(model, inputs)
    key, chosen = outputs_and_targets(model, plan, target, output)
    xs = [np.asarray(plan.embeddings[i](tf.convert_to_tensor(plan.ids[i])))
          if plan.kinds[i] == "token" else plan.leaves[i] for i in plan.attributed]
    return Setup(plan, key, chosen, xs, model_input_leaves(model, plan))


def feed(plan, points, model_xs, rows, holder):
    """The model's inputs inside a compiled core: attributed float inputs are
    `points`, the others the original leaves gathered at `rows`; token
    inputs' embeddings go to `holder` (returned by their swapped layer)."""
    position = {i: j for j, i in enumerate(plan.attributed)}
    out = []
    for i, kind in enumerate(plan.kinds):
        if kind == "float":
            out.append(points[position[i]])
        else:
            out.append(tf.gather(model_xs[i], rows))
            if kind == "token":
                holder[i] = points[position[i]]
    return plan.rebuild(out)


def chunk_index(start, chunk, total):
    """Inside a compiled core: `(index, valid)` of the rows `start` to
    `start + chunk` of `total` (padding rows beyond the end repeat the last
    row and are not valid)."""
    index = tf.range(start, start + chunk)
    valid = index < total
    return tf.minimum(index, total - 1), valid


def gradient_sums(model, plan, key, points, model_xs, rows, target, holder, weight, acc,
                  reduce=None):
    """Inside a compiled core: F at `points` (one row each, of sample
    `rows`), and `acc` plus each sample's sum of `reduce(dF/dpoint, point)`
    (default: the gradient) times the row's `weight`.

    Returns:
        `(new acc, F per row)`.
    """
    with tf.GradientTape() as tape:
        tape.watch(points)
        outs = model(feed(plan, points, model_xs, rows, holder), training=False)
        f_rows = tf.gather(select(outs, key), tf.gather(target, rows), axis=1, batch_dims=1)
        total = tf.reduce_sum(f_rows)
    grads = tape.gradient(total, points)
    n = tf.shape(acc[0])[0]
    new = []
    for a, g, p in zip(acc, grads, points):
        value = g if reduce is None else reduce(g, p)
        shape = tf.concat([tf.shape(weight), tf.ones([tf.rank(g) - 1], tf.int32)], 0)
        weighted = value * tf.reshape(tf.cast(weight, g.dtype), shape)
        new.append(a + tf.cast(tf.math.unsorted_segment_sum(weighted, rows, n), a.dtype))
    return new, f_rows


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
