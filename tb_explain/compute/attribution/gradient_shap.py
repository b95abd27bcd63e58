"""GradientSHAP (expected gradients; Lundberg & Lee 2017, Erion et al. 2021),
as Captum's `GradientShap`.

For each sample and each of `samples` draws: a baseline `b` drawn at random
from `baselines`, Gaussian noise of standard deviation `stdevs` added to the
input (`x~ = x + e`), a point `b + a (x~ - b)` with `a ~ U(0, 1)`; the draw's
attribution is `dF/dpoint * (x~ - b)`, and the result is their mean: in
expectation, the mean over the baselines of integrated gradients from each.
Every draw's point is built, differentiated and summed per sample inside one
compiled function, in chunks of rows; the draws are made on the host from
`seed` (the same seed, the same result).
"""

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain.compute.attribution import _cores, _feeding, _inputs, coalitions
from tb_explain.compute.attribution.integrated_gradients import _baseline_sets
from tb_explain.compute.attribution.result import Attribution

OPTIONS = ("baselines", "samples", "stdevs", "seed")


def _core(model, key, plan, chunk, draws):
    """`core(xs, noisy, bases, alphas, held, targets, start) -> (sums, f)`:
    rows `(sample, draw)`; `noisy`, `bases` `[n * draws, ...]` per attributed
    input and `alphas` `[n * draws]` are the rows' own draws."""
    ops = keras.ops
    count = _feeding.segments(chunk, draws)

    def build(holder):
        return lambda *args: core(holder, *args)

    def core(holder, xs, noisy, bases, alphas, held, targets, start):
        index, valid, sample, _ = _feeding.chunk_index(start, chunk, draws, ops.shape(xs[0])[0])
        gather = backend.gather
        alpha = gather(alphas, index)
        ends, starts, points = [], [], []
        for x_noisy, base in zip(noisy, bases):
            end, origin = gather(x_noisy, index), gather(base, index)
            a = ops.reshape(ops.cast(alpha, end.dtype), (-1,) + (1,) * (len(end.shape) - 1))
            ends.append(end)
            starts.append(origin)
            points.append(origin + a * (end - origin))
        model_xs = [None if h is None else gather(h, sample) for h in held]
        target = gather(targets, sample)

        def total_of(pts):
            f_rows = _feeding.take_targets(
                model(_feeding.feed(plan, pts, model_xs, holder), training=False), key, target)
            return ops.sum(f_rows), f_rows

        grads, f_rows = backend.input_gradients(total_of, points)
        return _feeding.difference_sums(grads, ends, starts, valid, sample, draws,
                                        count), f_rows

    return _cores.cached_core(model, ("gradient_shap", key, chunk, draws), plan, build)


def _baseline_rows(baselines, done):
    """`[m sets of per-attributed-input baselines, each [n, ...]]` in the
    attributed space (token inputs: embeddings) from `baselines` (None:
    one zero baseline; an array `(m, ...)` of one sample's shape for a
    single input; a list or dict with one `(m, ...)` array per input)."""
    if baselines is None:
        return _baseline_sets(None, done.plan, done.xs)
    parts, _ = _inputs.flatten_inputs(baselines)
    if len(parts) != len(done.plan.leaves):
        raise ValueError(f"`baselines` has {len(parts)} part(s) but the inputs have "
                         f"{len(done.plan.leaves)}.")
    m = {len(p) for p in parts}
    for p, leaf in zip(parts, done.plan.leaves):
        if np.ndim(p) != leaf.ndim:
            raise ValueError(f"`baselines` must stack reference inputs on a leading axis: "
                             f"(m, ...) with one sample's shape {leaf.shape[1:]}, got shape "
                             f"{np.shape(p)}.")
    if len(m) != 1:
        raise ValueError(f"`baselines` parts must hold the same number of references, got "
                         f"{sorted(m)}.")
    sets = []
    for k in range(m.pop()):
        one = [np.asarray(parts[i])[k] for i in done.plan.attributed]
        sets.append(_baseline_sets(one if len(one) > 1 else one[0], done.plan, done.xs)[0])
    return sets


def gradient_shap(model, inputs, *, target=None, output=None, position="last", batch_size=None,
                  baselines=None, samples=50, stdevs=0.0, seed=0):
    """GradientSHAP: expected gradients over `baselines`.

    Args:
        baselines: Reference inputs drawn from: an array `(m, ...)` of
            samples' shape (a list or dict of them for several inputs;
            token inputs: ids, attributed at their embedding); default one
            zero baseline.
        samples: Draws per sample (int >= 1).
        stdevs: Standard deviation of the Gaussian noise added to the
            inputs (absolute, float >= 0).
        seed: Seed of the draws (baselines, points, noise).
    """
    samples = _validate.check_int("samples", samples, minimum=1)
    stdevs = _validate.check_float("stdevs", stdevs, minimum=0.0)
    seed = _validate.check_int("seed", seed)
    done = _feeding.setup(model, inputs, target, output, position)
    sets = _baseline_rows(baselines, done)
    rng = np.random.default_rng(seed)
    rows = done.n * samples
    pick = rng.integers(0, len(sets), rows)
    alphas = rng.random(rows).astype(np.float32)
    sample = np.repeat(np.arange(done.n), samples)
    noisy, bases = [], []
    for j, x in enumerate(done.xs):
        end = np.repeat(x, samples, axis=0).astype(np.float32)
        if stdevs > 0:
            end = end + rng.normal(0.0, stdevs, end.shape).astype(np.float32)
        noisy.append(end)
        stacked = np.stack([s[j] for s in sets])  # [m, n, ...]
        bases.append(stacked[pick, sample].astype(np.float32))
    chunk = _feeding.chunk_rows(rows, _feeding.auto_batch_size(done.xs, batch_size))
    core = _core(model, done.key, done.plan, chunk, samples)
    args = _cores.as_tensors((list(done.xs), noisy, bases, alphas, _feeding.held_inputs(done),
                              np.asarray(done.targets)))
    acc = [np.zeros(x.shape, np.float64) for x in done.xs]
    for start in range(0, rows, chunk):
        sums, _ = core(*args, _feeding.start_index(start))
        _feeding.add_chunk_sums(acc, sums, start, min(start + chunk, rows), samples)
    ends = np.array([[0.0], [1.0]], np.float32)  # F(baseline), F(x): one group, off and on
    whole = [np.zeros(x.shape[1:], np.int32) for x in done.xs]
    scores = [coalitions.evaluate(model, done, s, whole, ends, batch_size) for s in sets]
    f_x = scores[0][:, 1]
    f_b = np.mean([v[:, 0] for v in scores], axis=0)
    total = np.array([sum(a[s].sum() for a in acc) for s in range(done.n)])
    return Attribution(attributions=_feeding.leaves_like(done, acc), delta=total - (f_x - f_b),
                       **done.explained, output=f_x, baseline_output=f_b,
                       skipped=dict(done.plan.skipped))

