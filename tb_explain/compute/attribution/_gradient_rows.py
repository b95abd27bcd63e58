"""The compiled core of the gradient methods: gradients at many points per sample.

Rows enumerate `(sample, draw)` pairs; a row's point is the sample plus its
precomputed noise (none for plain gradients), and each row adds
`reduce(gradient, point) / draws` to its sample's running sum, so memory is
bounded by one chunk of rows and there is no Python loop over samples or
noise draws. Traced once per model, configuration and input shapes.
"""

import numpy as np
import tensorflow as tf

from tb_explain.compute.attribution import _cores, _feeding

#: How a row's gradient is accumulated.
REDUCTIONS = {
    "abs": lambda g, p: tf.abs(g),                # saliency
    "times_input": lambda g, p: g * p,            # gradient x input
    "raw": lambda g, p: g,
}


def _core(model, key, plan, reduction, noisy):
    cache_key = ("rows", key, reduction, noisy, tuple(plan.kinds),
                 tuple(id(l) for l in plan.embeddings), plan.structure)
    per_model = _cores.cache(model)
    if cache_key in per_model:
        return per_model[cache_key]
    holder = {}
    reduce = REDUCTIONS[reduction]

    @tf.function(autograph=False)
    def core(xs, model_xs, target, noise, draws, start, chunk, acc):
        n = tf.shape(xs[0])[0]
        total = n * draws
        index, valid = _feeding.chunk_index(start, chunk, total)
        sample = index // draws
        points = []
        for j, x in enumerate(xs):
            point = tf.gather(x, sample)
            if noisy:
                point = point + tf.gather(noise[j], index)
            points.append(point)
        weight = tf.where(valid, 1.0 / tf.cast(draws, tf.float32), 0.0)
        return _feeding.gradient_sums(model, plan, key, points, model_xs, sample, target,
                                     holder, weight, acc, reduce)

    # One trace per input shape (the chunk size is a tensor).
    return _cores.register_core(model, cache_key, plan, holder, core)


def gradient_rows(model, done, reduction, noise=None, draws=1, batch_size=None):
    """Mean over `draws` of `reduction(dF/dx, x)` at each sample's points.

    Args:
        model: The Keras model.
        done: A `_feeding.Setup`.
        reduction: `"abs"`, `"times_input"` or `"raw"`.
        noise: None, or one array per attributed input, `[n * draws, ...]`,
            row `s * draws + d` being draw `d` of sample `s`.
        draws: Points per sample.
        batch_size: Rows per gradient computation (None: automatic).

    Returns:
        `(per attributed input: [n, ...] float64 arrays, F at every row [n, draws])`.
    """
    core = _core(model, done.key, done.plan, reduction, noise is not None)
    total_rows = done.n * draws
    chunk = _feeding.chunk_rows(total_rows, _feeding.auto_batch_size(done.xs, batch_size))
    xs = [tf.convert_to_tensor(x) for x in done.xs]
    noise_t = [tf.convert_to_tensor(e) for e in noise] if noise is not None else \
        [tf.zeros([0]) for _ in xs]
    acc = [tf.zeros(x.shape, tf.float64) for x in xs]
    rows = []
    for start in range(0, total_rows, chunk):
        acc, f = core(xs, done.feed, tf.constant(done.targets), noise_t, tf.constant(draws),
                      tf.constant(start), tf.constant(chunk), acc)
        rows.append(f.numpy())
    f_rows = np.concatenate(rows)[:total_rows].reshape(done.n, draws)
    return [a.numpy() for a in acc], f_rows
