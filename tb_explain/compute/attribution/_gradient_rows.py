"""The core of the gradient methods: gradients at many points per sample.

Rows enumerate `(sample, draw)` pairs; a row's point is the sample plus its
precomputed noise (none for plain gradients), built inside the compiled core,
and each row adds `reduce(gradient, point) / draws` to its sample's sum there,
so memory is bounded by one chunk of rows and there is no Python loop over
samples or noise draws. Compiled once per model, configuration and input
shapes.
"""

import keras

from tb_explain.compute.attribution import _cores, _feeding

#: How a row's gradient is accumulated.
REDUCTIONS = {
    "abs": lambda g, p: keras.ops.abs(g),         # saliency
    "times_input": lambda g, p: g * p,            # gradient x input
    "raw": lambda g, p: g,
}


def _core(model, key, plan, reduction, chunk, draws, whole):
    return _cores.cached_core(model, ("rows", key, reduction, chunk, draws, whole), plan,
                              lambda holder: _feeding.gradient_core(
                                  model, plan, key, holder, REDUCTIONS[reduction], chunk, draws,
                                  whole))


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
    total_rows = done.n * draws
    chunk = _feeding.chunk_rows(total_rows, _feeding.auto_batch_size(done.xs, batch_size))
    core = _core(model, done.key, done.plan, reduction, chunk, draws,
                 whole=chunk == total_rows)
    acc, f = _feeding.run_chunks(core, done, total_rows, chunk, draws, noise=noise)
    return acc, f.reshape(done.n, draws)
