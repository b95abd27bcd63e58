"""Tensor statistics in pure TensorFlow: histograms, norms, finiteness.

These run inside compiled functions. `batched_statistics` produces exactly the
`[k, 3]` (left edge, right edge, count) histogram layout that TensorBoard's
histogram plugin reads, for many tensors at once, in O(n) time and memory
with segment reductions, where TensorBoard's own `_buckets` (used by
`tf.summary.histogram` and so by `keras.callbacks.TensorBoard`) builds an
n x k one-hot matrix per tensor.
"""

import threading

import numpy as np
import tensorflow as tf

from tb_explain._threads import parallel_map

DEFAULT_BINS = 30


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


def _size(tensor):
    return int(np.prod(np.shape(tensor), dtype=np.int64))


#: Values per block of the eager statistics: float64 work buffers of 512 KB
#: per thread, reused (`_buffers`), instead of temporaries the size of each
#: tensor. Large temporaries are fresh memory from the OS at each event
#: (page faults: ResNet50's weight statistics took 0.3-0.7 s in a fit
#: against 0.12 s when repeated).
BLOCK = 1 << 16

_local = threading.local()


def _buffers():
    """This thread's `(float64, float64, intp)` work buffers of `BLOCK` values."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = (np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK, np.intp))
    return buffers


def _flat(tensor):
    """`tensor` as a flat array of its own float dtype (a view where it can
    be), or float64 for other dtypes."""
    flat = np.asarray(tensor).ravel()
    return flat if flat.dtype.kind == "f" else flat.astype(np.float64)


def _float64_blocks(flat, minus=None):
    """`float64(flat - minus)` (or of `flat`) block by block (`BLOCK`
    values), each in this thread's work buffer (valid until the next)."""
    values = _buffers()[0]
    for start in range(0, flat.size, BLOCK):
        stop = min(start + BLOCK, flat.size)
        block = values[:stop - start]
        np.copyto(block, flat[start:stop])
        if minus is not None:
            with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in TensorFlow
                np.subtract(block, minus[start:stop], out=block)
        yield block


def _square_sum(block):
    """`sum(block ** 2)` (NaN/Inf propagate). Not `np.dot`: OpenBLAS's
    threads spin after each call, which stalls the other threads of
    `parallel_map`."""
    square = _buffers()[1][:block.size]
    with np.errstate(invalid="ignore", over="ignore"):
        np.multiply(block, block, out=square)
    return square.sum()


def _sum_of_squares(flat, minus=None):
    """`sum(float64(flat - minus) ** 2)`, block by block (NaN/Inf propagate)."""
    return sum(_square_sum(block) for block in _float64_blocks(flat, minus))


def norms(tensors, minus=None):
    """L2 norms (float64 `[n]`) of `tensors`, or of `tensors[i] - minus[i]`
    (NaN/Inf propagate); in numpy when run eagerly."""
    minus = [None] * len(tensors) if minus is None else minus
    if tf.executing_eagerly():
        def norm(pair):
            t, m = pair
            return np.sqrt(_sum_of_squares(_flat(t), None if m is None else _flat(m)))
        return tf.constant(parallel_map(norm, list(zip(tensors, minus)),
                                        [_size(t) for t in tensors]), tf.float64)
    return tf.stack([l2_norm(t if m is None else t - m) for t, m in zip(tensors, minus)])


def update_norms(values, snapshots):
    """`(norms(values, minus=snapshots), norms(snapshots))`; eagerly, in one
    pass over each snapshot."""
    if not tf.executing_eagerly():
        return norms(values, minus=snapshots), norms(snapshots)

    def both(pair):
        after, before = _flat(pair[0]), _flat(pair[1])
        return np.sqrt(_sum_of_squares(after, before)), np.sqrt(_sum_of_squares(before))
    pairs = parallel_map(both, list(zip(values, snapshots)), [_size(v) for v in values])
    return (tf.constant([p[0] for p in pairs], tf.float64),
            tf.constant([p[1] for p in pairs], tf.float64))


def nonfinite_counts(tensors):
    """NaN/Inf counts (int64 `[n]`) of `tensors`; in numpy when run eagerly."""
    if tf.executing_eagerly():
        return tf.constant([np.size(a) - np.count_nonzero(np.isfinite(a))
                            for a in (np.asarray(t) for t in tensors)], tf.int64)
    return tf.stack([nonfinite_count(t) for t in tensors])


#: Values per fused group in `batched_statistics`: bounds peak memory.
CHUNK_VALUES = 1 << 22


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


def _finite_range(flat):
    """`(min, max)` of `flat` as floats, exact (taken in its own dtype); 0s when empty."""
    return (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)


def _numpy_tensor_statistics(tensor, bins):
    """`(buckets [bins, 3], norm, nonfinite)` of one tensor in numpy, with
    the arithmetic of `_large_statistics` (float64; a value's bucket is
    `floor((v - low) / width * bins)`, the maximum in the last), block by
    block (`BLOCK`)."""
    flat = finite = _flat(tensor)
    low, high = _finite_range(flat)
    if not (np.isfinite(low) and np.isfinite(high)):  # NaN/Inf values: rare
        finite = flat[np.isfinite(flat)]
        low, high = _finite_range(finite)
    spread = high > low
    width = high - low if spread else 1.0
    index = _buffers()[2]
    total = 0.0
    counts = np.zeros(bins, np.int64)
    for block in _float64_blocks(finite):
        total += _square_sum(block)
        if spread:
            np.subtract(block, low, out=block)  # >= 0: values >= low
            np.divide(block, width, out=block)
            np.multiply(block, bins, out=block)
            np.floor(block, out=block)
            np.minimum(block, bins - 1, out=block)  # the maximum: bins
            ids = index[:block.size]
            np.copyto(ids, block, casting="unsafe")
            counts += np.bincount(ids, minlength=bins)
    if finite is not flat:  # the norm propagates NaN/Inf
        total = _sum_of_squares(flat)
    buckets = np.zeros((bins, 3))
    if spread:
        buckets[:, 2] = counts
    else:
        buckets[-1, 2] = finite.size
    edges = low + (width if spread else 0.0) * np.linspace(0.0, 1.0, bins + 1)
    buckets[:, 0], buckets[:, 1] = edges[:-1], edges[1:]
    return buckets, np.sqrt(total), flat.size - finite.size


def _numpy_statistics(tensors, bins):
    """`batched_statistics` of eager tensors in numpy (the same arithmetic):
    run eagerly, a few numpy calls per tensor cost far less than the dozens
    of eager TensorFlow ops of the fused version; large tensors are spread
    over threads (`tb_explain._threads`)."""
    results = parallel_map(lambda t: _numpy_tensor_statistics(t, bins), list(tensors),
                           [_size(t) for t in tensors])
    buckets = np.stack([r[0] for r in results]).reshape(len(results), bins, 3)
    norms = np.array([r[1] for r in results], np.float64)
    nonfinite = np.array([r[2] for r in results], np.int64)
    return buckets, norms, nonfinite


def batched_statistics(tensors, bins=DEFAULT_BINS, chunk_values=CHUNK_VALUES, zero=0):
    """Histogram buckets, L2 norms and non-finite counts of many tensors.

    Runs of small tensors are fused into groups of at most `chunk_values`
    values (segment reductions: a constant number of ops per group, so
    tracing stays cheap for models with hundreds of weights); tensors of
    `OWN_REDUCTIONS` values or more get plain reductions of their own, which
    are faster on large tensors. Both compute the same arithmetic, as does
    the numpy version used when it runs eagerly (`compute.tiering`).

    Args:
        tensors: List of tensors with statically known sizes.
        bins: Python int, buckets per histogram.
        chunk_values: Python int, values per fused group.
        zero: An int32 scalar equal to 0. Inside a compiled function, pass
            a function argument (`tf.constant(0)` at call time): the tensor
            sizes are static, and Grappler's constant folding would
            otherwise turn the per-value segment ids into graph constants,
            which costs seconds on the first call of a large model (5.9 s
            against 1.0 s for ResNet50's weights) and memory on every call.

    Returns:
        `(buckets, norms, nonfinite)`: float64 `[n, bins, 3]` histograms of
        the finite values (left edge, right edge, count of equal-width
        buckets from the minimum to the maximum, the last bucket including
        the maximum; a constant tensor gives zero-width buckets at its value
        with every count in the last, as `tf.summary.histogram` does), float64 `[n]` L2 norms
        (NaN/Inf propagate) and int64 `[n]` counts of NaN/Inf values.
    """
    if not tensors:
        return (tf.zeros([0, bins, 3], tf.float64), tf.zeros([0], tf.float64),
                tf.zeros([0], tf.int64))
    if tf.executing_eagerly():
        return tuple(tf.constant(a) for a in _numpy_statistics(tensors, bins))
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

