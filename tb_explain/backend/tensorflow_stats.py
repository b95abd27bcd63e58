"""Tensor statistics inside TensorFlow graphs: the compiled twin of
`compute.stats`' numpy statistics, with the same arithmetic.

`batched_statistics` produces exactly the `[k, 3]` (left edge, right edge,
count) histogram layout that TensorBoard's histogram plugin reads, for many
tensors at once, in O(n) time and memory with segment reductions, where
TensorBoard's own `_buckets` (used by `tf.summary.histogram` and so by
`keras.callbacks.TensorBoard`) builds an n x k one-hot matrix per tensor.
Used only on the TensorFlow backend, inside `tf.function`s
(`compute.tiering`); eagerly and on the other backends `compute.stats`
computes in numpy.
"""

import numpy as np
import tensorflow as tf


def zero():
    """An int32 0 to pass as the `zero` argument of a compiled function that
    calls `batched_statistics` (see there)."""
    return tf.constant(0, tf.int32)


def nonfinite_count(tensor):
    """Returns the number of NaN and +/-Inf elements of `tensor` (int64)."""
    flat = tf.reshape(tensor, [-1])
    if not flat.dtype.is_floating:
        return tf.constant(0, tf.int64)
    return tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(flat)), tf.int64))


def l2_norm(tensor):
    """Returns the L2 norm of `tensor` as float64 (NaN/Inf propagate)."""
    flat = tf.reshape(tf.cast(tensor, tf.float64), [-1])
    return tf.sqrt(tf.reduce_sum(tf.square(flat)))


def _group_statistics(tensors, bins, zero):
    """Histograms, L2 norms and non-finite counts of several tensors at once.

    A constant number of ops whatever the number of tensors: all values are
    concatenated and bucketed with segment reductions.
    """
    n = len(tensors)
    flats = [tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors]
    sizes = tf.stack([tf.size(f) for f in flats]) + zero
    values = tf.concat(flats, 0)
    seg = tf.repeat(tf.range(n), sizes)
    finite = tf.math.is_finite(values)
    nonfinite = tf.math.unsorted_segment_sum(tf.cast(~finite, tf.int64), seg, n)
    norms = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(values), seg, n))
    inf = tf.constant(float("inf"), tf.float64)
    low = tf.math.unsorted_segment_min(tf.where(finite, values, inf), seg, n)
    high = tf.math.unsorted_segment_max(tf.where(finite, values, -inf), seg, n)
    has_finite = tf.cast(sizes, tf.int64) > nonfinite
    low = tf.where(has_finite, low, 0.0)
    high = tf.where(has_finite, high, 0.0)
    spread = high > low
    width = tf.where(spread, high - low, 1.0)
    # Bucket index as in tf.histogram_fixed_width / np.histogram: the last
    # bucket includes the maximum; constant tensors fill the last bucket.
    position = (values - tf.gather(low, seg)) / tf.gather(width, seg) * bins
    index = tf.clip_by_value(
        tf.cast(tf.floor(tf.where(finite, position, 0.0)), tf.int32), 0, bins - 1
    )
    index = tf.where(tf.gather(spread, seg), index, bins - 1)
    counts = tf.math.unsorted_segment_sum(
        tf.cast(finite, tf.float64), seg * bins + index, n * bins
    )
    counts = tf.reshape(counts, [n, bins])
    unit = tf.linspace(tf.constant(0.0, tf.float64), 1.0, bins + 1)
    edges = low[:, None] + tf.where(spread, width, 0.0)[:, None] * unit[None, :]
    buckets = tf.stack([edges[:, :-1], edges[:, 1:], counts], axis=2)
    return buckets, norms, nonfinite


#: Tensors at least this large get their own reductions (`_large_statistics`):
#: plain reductions over a contiguous tensor are several times faster than
#: segment reductions, and there are few such tensors, so tracing stays cheap.
OWN_REDUCTIONS = 1 << 16


def _large_statistics(tensors, bins):
    """`_group_statistics` of large tensors, each with plain reductions of its
    own (the same arithmetic); the per-tensor scalars are finished together,
    which keeps the op count, and so the tracing time, low."""
    flats = [tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors]
    finites = [tf.math.is_finite(v) for v in flats]
    inf = tf.constant(float("inf"), tf.float64)
    sizes = tf.constant([t.shape.num_elements() for t in tensors], tf.int64)
    nonfinite = sizes - tf.stack([tf.math.count_nonzero(f) for f in finites])
    norms = tf.sqrt(tf.stack([tf.reduce_sum(tf.square(v)) for v in flats]))
    low = tf.stack([tf.reduce_min(tf.where(f, v, inf)) for v, f in zip(flats, finites)])
    high = tf.stack([tf.reduce_max(tf.where(f, v, -inf)) for v, f in zip(flats, finites)])
    has_finite = sizes > nonfinite
    low = tf.where(has_finite, low, 0.0)
    high = tf.where(has_finite, high, 0.0)
    spread = high > low
    width = tf.where(spread, high - low, 1.0)
    counts = []
    for i, (v, f) in enumerate(zip(flats, finites)):
        position = (v - low[i]) / width[i] * bins
        index = tf.clip_by_value(tf.cast(tf.floor(tf.where(f, position, 0.0)), tf.int32),
                                 0, bins - 1)
        index = tf.where(spread[i], index, bins - 1)
        counts.append(tf.raw_ops.DenseBincount(input=index, size=bins,
                                               weights=tf.cast(f, tf.float64)))
    unit = tf.linspace(tf.constant(0.0, tf.float64), 1.0, bins + 1)
    edges = low[:, None] + tf.where(spread, width, 0.0)[:, None] * unit[None, :]
    buckets = tf.stack([edges[:, :-1], edges[:, 1:], tf.stack(counts)], axis=2)
    return buckets, norms, nonfinite




def batched_statistics(tensors, bins, chunk_values, zero):
    """`compute.stats.batched_statistics` of tensors inside a graph."""
    large = [i for i, t in enumerate(tensors) if (t.shape.num_elements() or 0) >= OWN_REDUCTIONS]
    small = [i for i in range(len(tensors)) if i not in set(large)]
    groups, current, current_size = [], [], 0
    for i in small:
        size = tensors[i].shape.num_elements() or 0
        if current and current_size + size > chunk_values:
            groups.append(current)
            current, current_size = [], 0
        current.append(i)
        current_size += size
    if current:
        groups.append(current)
    parts = [_group_statistics([tensors[i] for i in group], bins, zero) for group in groups]
    if large:
        parts.append(_large_statistics([tensors[i] for i in large], bins))
    # back to the tensors' order
    order = np.argsort([i for group in groups for i in group] + large, kind="stable")
    return tuple(tf.gather(tf.concat([p[k] for p in parts], 0), order) for k in range(3))


def norms(tensors, minus):
    """L2 norms (float64 `[n]`) of `tensors[i] - minus[i]` (or of `tensors[i]`
    where `minus[i]` is None) inside a graph."""
    return tf.stack([l2_norm(t if m is None else t - m) for t, m in zip(tensors, minus)])


def nonfinite_counts(tensors):
    """NaN/Inf counts (int64 `[n]`) of `tensors` inside a graph."""
    return tf.stack([nonfinite_count(t) for t in tensors])


def unit_fractions(values, kinds):
    """`(dead, saturated)` float32 `[k]`: the fraction of units zero for every
    sample and position, and of values within 0.01 of a tanh or sigmoid
    bound (-1 for other layers)."""
    dead, saturated = [], []
    for value, kind in zip(values, kinds):
        if value.shape.rank and value.shape.rank >= 2:
            axes = list(range(value.shape.rank - 1))
            dead.append(tf.reduce_mean(tf.cast(tf.reduce_all(tf.equal(value, 0.0), axis=axes),
                                               tf.float32)))
        else:
            dead.append(tf.constant(0.0))
        if kind == "tanh":
            saturated.append(tf.reduce_mean(tf.cast(tf.abs(value) > 0.99, tf.float32)))
        elif kind == "sigmoid":
            saturated.append(tf.reduce_mean(tf.cast((value < 0.01) | (value > 0.99), tf.float32)))
        else:
            saturated.append(tf.constant(-1.0))
    if not values:
        return tf.zeros([0]), tf.zeros([0])
    return tf.stack(dead), tf.stack(saturated)
