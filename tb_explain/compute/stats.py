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
    values = tf.reshape(tf.cast(values, tf.float64), [-1])
    size = tf.size(values)

    def empty():
        return tf.zeros([bins, 3], tf.float64)

    def nonempty():
        low = tf.reduce_min(values)
        high = tf.reduce_max(values)

        def spread():
            counts = tf.histogram_fixed_width(
                values, tf.stack([low, high]), nbins=bins, dtype=tf.int64
            )
            edges = tf.linspace(low, high, bins + 1)
            return tf.stack(
                [edges[:-1], edges[1:], tf.cast(counts, tf.float64)], axis=1
            )

        def constant():
            edges = tf.fill([bins], low)
            counts = tf.concat(
                [tf.zeros([bins - 1], tf.float64), [tf.cast(size, tf.float64)]], 0
            )
            return tf.stack([edges, edges, counts], axis=1)

        return tf.cond(high > low, spread, constant)

    return tf.cond(size > 0, nonempty, empty)
