"""Tensor statistics: histograms, norms, finiteness.

`batched_statistics` produces exactly the `[k, 3]` (left edge, right edge,
count) histogram layout that TensorBoard's histogram plugin reads. It runs in
numpy, block by block, on every backend; inside a compiled function (the
compiled tier of `compute.tiering`, on a backend with in-graph statistics:
`backend.graph_statistics()`) the same arithmetic runs as graph ops.
"""

import threading

import numpy as np

from tb_explain import backend
from tb_explain._threads import parallel_map

DEFAULT_BINS = 30


#: Values per fused group in `batched_statistics` (in a TensorFlow graph):
#: bounds peak memory.
CHUNK_VALUES = 1 << 22


def zero():
    """A 0 to pass as the `zero` argument of a function that calls
    `batched_statistics` (see there): an int32 tensor where statistics run
    inside compiled functions."""
    graph = backend.graph_statistics()
    return 0 if graph is None else graph.zero()


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
    flat = _numpy(tensor).ravel()
    return flat if flat.dtype.kind == "f" else flat.astype(np.float64)


def _numpy(tensor):
    """`tensor` as a numpy array (a view of a CPU tensor where it can be)."""
    return tensor if isinstance(tensor, np.ndarray) else backend.to_numpy(tensor)


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
    if not backend.executing_eagerly():
        return backend.graph_statistics().norms(tensors, minus)

    def norm(pair):
        t, m = pair
        return np.sqrt(_sum_of_squares(_flat(t), None if m is None else _flat(m)))
    return np.array(parallel_map(norm, list(zip(tensors, minus)), [_size(t) for t in tensors]),
                    np.float64)


def update_norms(values, snapshots):
    """`(norms(values, minus=snapshots), norms(snapshots))`; eagerly, in one
    pass over each snapshot."""
    if not backend.executing_eagerly():
        return norms(values, minus=snapshots), norms(snapshots)

    def both(pair):
        after, before = _flat(pair[0]), _flat(pair[1])
        return np.sqrt(_sum_of_squares(after, before)), np.sqrt(_sum_of_squares(before))
    pairs = parallel_map(both, list(zip(values, snapshots)), [_size(v) for v in values])
    return np.array([p[0] for p in pairs], np.float64), np.array([p[1] for p in pairs], np.float64)


def nonfinite_counts(tensors):
    """NaN/Inf counts (int64 `[n]`) of `tensors`; in numpy when run eagerly."""
    if not backend.executing_eagerly():
        return backend.graph_statistics().nonfinite_counts(tensors)
    return np.array([np.size(a) - np.count_nonzero(np.isfinite(a))
                     for a in (_numpy(t) for t in tensors)], np.int64)


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
        return np.zeros([0, bins, 3]), np.zeros([0]), np.zeros([0], np.int64)
    if backend.executing_eagerly():
        return _numpy_statistics(tensors, bins)
    return backend.graph_statistics().batched_statistics(tensors, bins, chunk_values, zero)

