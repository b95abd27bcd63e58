"""Tensor statistics in pure TensorFlow: histograms, norms, finiteness.

These run inside compiled functions. `histogram_buckets` produces exactly the
`[k, 3]` (left edge, right edge, count) layout that TensorBoard's histogram
plugin reads, but in O(n) time and memory with `tf.histogram_fixed_width`,
where TensorBoard's own `_buckets` (used by `tf.summary.histogram` and so by
`keras.callbacks.TensorBoard`) builds an n x k one-hot matrix.
"""

import tensorflow as tf

DEFAULT_BINS = 30


def finite_values(tensor):
    """Returns the finite elements of `tensor`, flattened, as float64."""
    flat = tf.reshape(tf.cast(tensor, tf.float64), [-1])
    return tf.boolean_mask(flat, tf.math.is_finite(flat))


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


def histogram_buckets(values, bins=DEFAULT_BINS):
    """Buckets `values` the way TensorBoard's histogram plugin expects.

    Args:
        values: A tensor of finite values (any shape; flattened).
        bins: Python int, the number of equal-width buckets.

    Returns:
        A float64 tensor of shape `[bins, 3]`: left edge, right edge and count
        of each bucket between the minimum and the maximum (the last bucket
        includes the maximum). Empty input gives all zeros; a constant input
        gives `bins` zero-width buckets at that value with every count in the
        last one, as in `tf.summary.histogram`.
    """
    # Branch-free (no tf.cond): cheap to trace, one fused graph per model.
    values = tf.reshape(tf.cast(values, tf.float64), [-1])
    size = tf.size(values)
    nonempty = size > 0
    low = tf.where(nonempty, tf.reduce_min(values), tf.constant(0.0, tf.float64))
    high = tf.where(nonempty, tf.reduce_max(values), tf.constant(0.0, tf.float64))
    spread = high > low
    counts = tf.histogram_fixed_width(
        values, tf.stack([low, tf.where(spread, high, low + 1.0)]), nbins=bins,
        dtype=tf.int64,
    )
    counts = tf.cast(counts, tf.float64)
    # A constant input: every count in the last, zero-width bucket.
    last = tf.one_hot(bins - 1, bins, dtype=tf.float64) * tf.cast(size, tf.float64)
    counts = tf.where(spread, counts, last)
    edges = tf.where(spread, tf.linspace(low, high, bins + 1), tf.fill([bins + 1], low))
    return tf.stack([edges[:-1], edges[1:], counts], axis=1)


#: Values per fused group in `batched_statistics`: bounds peak memory.
CHUNK_VALUES = 1 << 22


def _group_statistics(tensors, bins):
    """Histograms, L2 norms and non-finite counts of several tensors at once.

    A constant number of ops whatever the number of tensors: all values are
    concatenated and bucketed with segment reductions.
    """
    n = len(tensors)
    flats = [tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors]
    sizes = tf.stack([tf.size(f) for f in flats])
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


def batched_statistics(tensors, bins=DEFAULT_BINS, chunk_values=CHUNK_VALUES):
    """Histogram buckets, L2 norms and non-finite counts of many tensors.

    Tensors are fused into groups of at most `chunk_values` values (a larger
    tensor forms its own group), so tracing stays cheap for models with
    hundreds of weights and peak memory stays bounded for large ones.

    Args:
        tensors: List of tensors with statically known sizes.
        bins: Python int, buckets per histogram.
        chunk_values: Python int, values per fused group.

    Returns:
        `(buckets, norms, nonfinite)`: float64 `[n, bins, 3]` in the layout of
        `histogram_buckets` (finite values only), float64 `[n]` L2 norms
        (NaN/Inf propagate) and int64 `[n]` counts of NaN/Inf values.
    """
    if not tensors:
        return (tf.zeros([0, bins, 3], tf.float64), tf.zeros([0], tf.float64),
                tf.zeros([0], tf.int64))
    groups, current, current_size = [], [], 0
    for tensor in tensors:
        size = tensor.shape.num_elements() or 0
        if current and current_size + size > chunk_values:
            groups.append(current)
            current, current_size = [], 0
        current.append(tensor)
        current_size += size
    groups.append(current)
    parts = [_group_statistics(group, bins) for group in groups]
    return tuple(tf.concat([p[i] for p in parts], 0) for i in range(3))
