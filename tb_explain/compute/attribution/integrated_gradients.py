"""Integrated gradients (Sundararajan et al., 2017), on every Keras backend.

The algorithm, the quadrature rules (`quadrature.py`) and batching are kept
apart: the `samples x steps` interpolated inputs are enumerated as one flat
index and processed in chunks of at most `batch_size` rows by one compiled
function (traced once per model, input shape and chunk size), each chunk's
weighted gradients added to a float64 running sum per sample, so memory is
bounded by one chunk. The path always includes its end points (a rule without them
gets them with weight 0), so `F(x)` and `F(baseline)` come out of the same
pass, for every kind of input.
"""

import functools

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain.compute import tiering
from tb_explain.compute.attribution import _cores, _feeding, _inputs
from tb_explain.compute.attribution.result import Attribution
from tb_explain.compute.quadrature import METHODS, quadrature

def _blur(x):
    """Gaussian blur (sigma ~ 1/16 of the smaller spatial side) of images."""
    if x.ndim != 4:
        raise ValueError(
            f"`baseline='blur'` needs image inputs (batch, height, width, channels), got "
            f"an input of shape {x.shape}."
        )
    sigma = max(1.0, min(x.shape[1:3]) / 16.0)
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = x.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(w * np.take(padded, range(i, i + x.shape[axis]), axis=axis)
                  for i, w in enumerate(taps))
    return out.astype(x.dtype)


def _baselines(baseline, leaves, seed=0):
    """Returns a list of baseline leaf lists (several baselines are averaged)."""
    # A list is several baselines, unless it is one array per input.
    per_input = isinstance(baseline, list) and len(baseline) == len(leaves) and all(
        isinstance(b, np.ndarray) for b in baseline)
    if isinstance(baseline, list) and not per_input:
        return [_baselines(b, leaves, seed + i)[0] for i, b in enumerate(baseline)]
    if baseline is None:
        return [[np.zeros_like(x) for x in leaves]]
    if isinstance(baseline, str):
        if baseline == "blur":
            return [[_blur(x) for x in leaves]]
        if baseline == "uniform":
            rng = np.random.default_rng(seed)
            return [[rng.uniform(x.min(), x.max(), size=x.shape).astype(x.dtype) for x in leaves]]
        raise ValueError(
            f"`baseline` must be None, a number, an array, 'blur' or 'uniform', got {baseline!r}."
        )
    parts, _ = _inputs.flatten_inputs(baseline) if not np.isscalar(baseline) else ([baseline], None)
    if len(parts) == 1 and len(leaves) > 1:
        parts = parts * len(leaves)
    if len(parts) != len(leaves):
        raise ValueError(
            f"`baseline` has {len(parts)} part(s) but the inputs have {len(leaves)}."
        )
    out = []
    for b, x in zip(parts, leaves):
        b = np.asarray(b, dtype=x.dtype)
        try:
            out.append(np.broadcast_to(b, x.shape).copy())
        except ValueError:
            raise ValueError(
                f"`baseline` of shape {b.shape} does not broadcast to the inputs' shape "
                f"{x.shape} (give a scalar, one sample's shape, or the inputs' shape)."
            ) from None
    return [out]


# -- the compiled core ---------------------------------------------------------
def _baseline_sets(baseline, plan, xs):
    """Baselines of the attributed inputs, in the space they are attributed in
    (token inputs: embeddings; None gives zero embeddings)."""
    attributed = plan.attributed
    given = None if baseline is None else _baselines(baseline, [plan.leaves[i] for i in attributed])
    sets = []
    for parts in given or [None]:
        row = []
        for j, i in enumerate(attributed):
            if parts is None:
                row.append(np.zeros_like(xs[j]))
            elif plan.kinds[i] == "token":
                if plan.vectorizers[i] is not None:  # text: baselines are texts too
                    parts[j] = backend.to_numpy(plan.vectorizers[i](backend.to_tensor(parts[j])))
                ids = keras.ops.convert_to_tensor(parts[j].astype(plan.ids[i].dtype))
                row.append(backend.to_numpy(plan.embeddings[i](ids)).astype(xs[j].dtype))
            else:
                row.append(parts[j].astype(xs[j].dtype))
        sets.append(row)
    return sets


# -- the compiled core ---------------------------------------------------------

def _core(model, output, plan, chunk, points, whole):
    """The IG core for `model` (the gradient core, interpolating inside),
    cached per model and configuration."""
    return _cores.cached_core(model, ("ig", output, chunk, points, whole), plan, lambda holder: (
        _feeding.gradient_core(model, plan, output, holder, chunk=chunk, per_sample=points,
                               whole=whole)))


@functools.lru_cache(maxsize=64)
def _quadrature_with_ends(method, steps):
    """The rule's points and weights, with the path's end points added
    (weight 0) where the rule has none: they give F(baseline) and F(x).
    Made once per rule: `(alphas, weights)` read-only float32 arrays, and
    the same as backend tensors (converted once, not per call)."""
    alphas, weights = quadrature(method, steps)
    if alphas[0] != 0:
        alphas, weights = np.concatenate([[0.0], alphas]), np.concatenate([[0.0], weights])
    if alphas[-1] != 1:
        alphas, weights = np.concatenate([alphas, [1.0]]), np.concatenate([weights, [0.0]])
    alphas, weights = alphas.astype(np.float32), weights.astype(np.float32)
    for a in (alphas, weights):
        a.flags.writeable = False
    return (alphas, weights), (backend.to_tensor(alphas), backend.to_tensor(weights))


class _Run:
    """Everything one integrated-gradients computation feeds its compiled core."""

    def __init__(self, model, inputs, target, baseline, rule, batch_size, output,
                 position="last", predict=True):
        done = _feeding.setup(model, inputs, target, output, position, predict)
        self.plan, self.n, self.targets, self.xs, self.feed = (
            done.plan, done.n, done.targets, done.xs, done.feed)
        self.explained = done.explained
        self.key = done.key
        self.base_sets = _baseline_sets(baseline, self.plan, self.xs)
        (self.alphas, self.weights), self.rule_tensors = rule
        self.total_rows = self.n * len(self.alphas)
        self.chunk = _feeding.chunk_rows(self.total_rows, batch_size)
        self.model = model
        self.tensors = _cores.as_tensors(list(self.xs))  # once per computation

    def path_integral(self, bases, rows=None, trace=False):
        """`(weighted gradient sums per attributed input, F at every row)`
        along the straight path from `bases` to the inputs (rows: all
        `samples x points`, or the first `rows`); with `trace`, the core
        compiled for them without running where the backend can (then
        None)."""
        points = len(self.alphas)
        total_rows = self.total_rows if rows is None else rows
        chunk = min(self.chunk, total_rows)
        core = _core(self.model, self.key, self.plan, chunk, points,
                     whole=chunk == total_rows == self.total_rows)
        zeros = all(not b.any() for b in bases)  # the default: the core skips the base
        return _feeding.run_chunks(core, self, total_rows, chunk, points, xs=self.tensors,
                                   bases=None if zeros else bases, alphas=self.rule_tensors[0],
                                   weights=self.rule_tensors[1], trace=trace)


def warm_up(model, inputs, *, target=None, baseline=None, steps=50, method="gausslegendre",
            batch_size=None, output=None, position="last"):
    """Validates a configuration and compiles its core on one chunk of rows.

    Compiles the core for one chunk (all `samples x steps` rows, or the
    first chunk of them) without running it where the backend can (JAX's
    ahead-of-time compile, TensorFlow's concrete function), else computes
    that chunk, so the one-time cost of tracing and compiling is paid here
    and the first real call runs at its steady speed. Inside
    `tiering.eager()`, and where the backend runs eagerly (PyTorch), where
    nothing compiles, one row validates.

    Returns:
        The `InputPlan` of `inputs`.

    Raises:
        ValueError: naming the parameter and the offending value.
    """
    # Eagerly (`compute.tiering`, PyTorch) nothing compiles: one row validates.
    compiles = not (tiering.is_eager() or backend.runs_eagerly())
    # (compiling, the predicted targets need not be computed: their shape does)
    run = _Run(model, inputs, target, baseline, _quadrature_with_ends(method, steps), batch_size,
               output, position, predict=not compiles)
    if compiles:
        run.path_integral(run.base_sets[0], rows=min(run.chunk, run.total_rows), trace=True)
    else:
        run.path_integral(run.base_sets[0], rows=1)
    return run.plan


def integrated_gradients(model, inputs, *, target=None, baseline=None, steps=50,
                         method="gausslegendre", batch_size=None, output=None, position="last"):
    """Integrated gradients of a Keras model's output with respect to its inputs.

    `IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i da`,
    integrated with the quadrature rule `method` over `steps` points. F is the
    model output selected at `target`, evaluated with `training=False`.

    Args:
        model: A Keras model (any kind).
        inputs: An array, or a list / dict of arrays for multi-input models.
            Integer token ids read by an `Embedding` layer (anywhere in the
            model, custom layers included; with several, the one that reads
            the ids, not a position embedding) are attributed at that layer's
            output and summed over the embedding axis (one attribution per
            token; baseline: zero embeddings). Inputs without a gradient
            (strings, categorical ids) are held at their values, get zero
            attributions and are listed in `.skipped`.
        target: None (the predicted class of each sample), an int, or one
            int per sample. Single-unit outputs (regression, sigmoid) need
            none.
        baseline: None (zeros), a number, an array broadcastable to one
            sample or to the inputs (a list/dict for multi-input models),
            `"blur"` (a Gaussian-blurred copy of image inputs), `"uniform"`
            (uniform noise in the inputs' range), or a list of these, whose
            attributions are averaged.
        steps: Quadrature points (int >= 1); 20 to 300 per the IG paper.
        method: `"gausslegendre"`, `"riemann_left"`, `"riemann_right"`,
            `"riemann_middle"` or `"riemann_trapezoid"`.
        batch_size: Interpolated inputs per gradient computation (int >= 1);
            None computes all `samples x steps` at once. Bounds memory; the
            result is the same.
        output: For multi-output models, the output to explain (its name for
            dict outputs, else its index).
        position: For a sequence output `(n, T, V)`: the position explained,
            an int or `"last"` (default: each sample's last unmasked
            position, from a `padding_mask` input or the Keras mask, else
            T - 1: a causal LM's next token); `target` picks the token there.

    Returns:
        An `Attribution` with `.attributions`, `.delta` and `.target` (and
        `.position` for a sequence output).

    Example:

    ```python
    result = tbx.integrated_gradients(model, x_val[:4], steps=64)
    heat = np.abs(result.attributions).sum(-1)   # per-pixel importance
    assert np.all(result.relative_delta < 0.05)  # completeness check
    ```
    """
    steps = _validate.check_int("steps", steps, minimum=1)
    _validate.check_choice("method", method, METHODS)
    if batch_size is not None:
        batch_size = _validate.check_int("batch_size", batch_size, minimum=1)
    run = _Run(model, inputs, target, baseline, _quadrature_with_ends(method, steps), batch_size,
               output, position)
    plan, n, xs, base_sets = run.plan, run.n, run.xs, run.base_sets
    points = len(run.alphas)
    total = [np.zeros(x.shape, np.float64) for x in xs]
    f_x, f_base = None, np.zeros(n)
    for bases in base_sets:
        grads, f_rows = run.path_integral(bases)  # running weighted sum per sample
        path = f_rows.reshape(n, points).astype(np.float64)
        for j, (g, x, b) in enumerate(zip(grads, xs, bases)):  # IG = (x - x') * avg grad
            total[j] += (x.astype(np.float64) - b.astype(np.float64)) * g
        f_base += path[:, 0]
        if f_x is None:
            f_x = path[:, -1]
    total = [t / len(base_sets) for t in total]
    f_base /= len(base_sets)
    summed = sum(t.reshape(n, -1).sum(axis=1) for t in total)
    return Attribution(attributions=_feeding.leaves_like(run, total), delta=summed - (f_x - f_base),
                       **run.explained, output=f_x, baseline_output=f_base,
                       skipped=dict(plan.skipped))
