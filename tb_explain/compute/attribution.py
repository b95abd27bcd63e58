"""Integrated gradients (Sundararajan et al., 2017) in pure TensorFlow.

The algorithm, the quadrature rules (`quadrature.py`) and batching are kept
apart: the `samples x steps` interpolated inputs are enumerated as one flat
index and processed in chunks of at most `batch_size` rows by one compiled
function (traced once per model, input shape and chunk size), which adds each
chunk's weighted gradients to a running sum per sample, so memory is bounded
by one chunk.
"""

import dataclasses
import weakref

import keras
import numpy as np
import tensorflow as tf

from tb_explain import _validate
from tb_explain._keras import swapped_call, walk_layers
from tb_explain.compute.quadrature import METHODS, quadrature


@dataclasses.dataclass
class Attribution:
    """Result of `integrated_gradients`.

    Attributes:
        attributions: numpy array(s) shaped like the inputs (a list or dict
            for multi-input models); for integer token inputs, one value per
            token (summed over the embedding axis).
        delta: `[n]` completeness gap per sample: sum of attributions minus
            `F(x) - F(baseline)`. Near zero when the integral is accurate.
        target: `[n]` int class index explained per sample.
        output: `[n]` `F(x)`, the explained model output.
        baseline_output: `[n]` `F(baseline)` (averaged over baselines).
    """

    attributions: object
    delta: np.ndarray
    target: np.ndarray
    output: np.ndarray
    baseline_output: np.ndarray

    @property
    def relative_delta(self):
        """`|delta| / |F(x) - F(baseline)|` per sample (the IG paper's check)."""
        gap = np.abs(self.output - self.baseline_output)
        return np.abs(self.delta) / np.maximum(gap, 1e-12)


# -- inputs ------------------------------------------------------------------

def _structure(inputs):
    """How inputs are nested: `("dict", keys)`, `("list", n)` or `("single",)`."""
    if isinstance(inputs, dict):
        return ("dict", tuple(inputs))
    if isinstance(inputs, (list, tuple)) and inputs and all(hasattr(v, "shape") for v in inputs):
        return ("list", len(inputs))
    return ("single",)


def _rebuilder(structure):
    """The inverse of flattening: leaves back into `structure`."""
    if structure[0] == "dict":
        return lambda leaves: dict(zip(structure[1], leaves))
    if structure[0] == "list":
        return list
    return lambda leaves: leaves[0]


def _flatten_inputs(inputs):
    """Returns `(leaves, structure)` for an array, a list or a dict of arrays."""
    structure = _structure(inputs)
    if structure[0] == "dict":
        return [np.asarray(inputs[k]) for k in structure[1]], structure
    if structure[0] == "list":
        return [np.asarray(v) for v in inputs], structure
    return [np.asarray(inputs)], structure


def _embedding_for_tokens(model):
    embeddings = [l for _, _, l in walk_layers(model) if isinstance(l, keras.layers.Embedding)]
    if len(embeddings) != 1:
        raise ValueError(
            f"`inputs` holds integer token ids, which integrated gradients attributes at "
            f"the Embedding layer's output; model {model.name!r} has {len(embeddings)} "
            f"Embedding layers, and exactly one is supported."
        )
    return embeddings[0]


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
    parts, _ = _flatten_inputs(baseline) if not np.isscalar(baseline) else ([baseline], None)
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

_CACHE = weakref.WeakKeyDictionary()


def _select(outputs, output):
    if isinstance(outputs, dict):
        outputs = outputs[output]
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[output]
    outputs = tf.cast(outputs, tf.float32)
    return tf.reshape(outputs, [tf.shape(outputs)[0], -1])


def _core(model, output, token_layer, structure):
    """Compiled IG core for `model`, cached per model and configuration."""
    key = (output, id(token_layer) if token_layer is not None else None, structure)
    rebuild = _rebuilder(structure)
    per_model = _CACHE.setdefault(model, {})
    if key in per_model:
        return per_model[key]

    holder = {}  # token inputs: the interpolated embeddings the swapped call returns

    @tf.function(autograph=False)
    def core(xs, bases, model_xs, target, alphas, weights, start, chunk, acc):
        """One chunk of `chunk` (sample, step) pairs from flat index `start`."""
        n = tf.shape(xs[0])[0]
        steps = tf.shape(alphas)[0]
        total = n * steps
        index = tf.range(start, start + chunk)
        valid = index < total
        index = tf.minimum(index, total - 1)  # padding rows: weight 0
        sample = index // steps
        step = index % steps
        alpha = tf.gather(alphas, step)
        weight = tf.where(valid, tf.gather(weights, step), tf.zeros_like(alpha))
        interp = []
        for x, b in zip(xs, bases):
            shape = tf.concat([[chunk], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
            interp.append(tf.gather(b, sample)
                          + tf.reshape(tf.cast(alpha, x.dtype), shape) * tf.gather(x - b, sample))
        with tf.GradientTape() as tape:
            tape.watch(interp)
            if token_layer is None:
                outs = model(rebuild(interp), training=False)
            else:
                holder["value"] = interp[0]
                outs = model(rebuild([tf.gather(m, sample) for m in model_xs]), training=False)
            selected = _select(outs, output)
            f_rows = tf.gather(selected, tf.gather(target, sample), axis=1, batch_dims=1)
            f = tf.reduce_sum(f_rows)
        grads = tape.gradient(f, interp)
        new = []
        for a, g in zip(acc, grads):
            shape = tf.concat([[chunk], tf.ones([tf.rank(g) - 1], tf.int32)], 0)
            weighted = g * tf.reshape(tf.cast(weight, g.dtype), shape)
            new.append(a + tf.cast(tf.math.unsorted_segment_sum(weighted, sample, n), a.dtype))
        return new, f_rows

    concrete = {}

    def run(*args):
        # Look concrete functions up by shapes here: cheaper than tf.function's
        # own dispatch on nested arguments, which costs ~1 ms per call.
        key = tuple((tuple(t.shape), t.dtype) for t in tf.nest.flatten(args[:-2] + args[-1:])
                    ) + (args[-2],)
        fn = concrete.get(key)
        if fn is None:
            fn = concrete[key] = core.get_concrete_function(*args)
        return fn(*args)

    def call(*args):
        if token_layer is None:
            return run(*args)
        with swapped_call(token_layer, lambda *a, **k: holder["value"]):
            return run(*args)

    call.core = core
    per_model[key] = call
    return call


def _forward(model, inputs):
    """`model(inputs, training=False)` through a compiled function cached per model."""
    per_model = _CACHE.setdefault(model, {})
    fn = per_model.get("forward")
    if fn is None:
        fn = per_model["forward"] = tf.function(lambda x: model(x, training=False))
    return fn(inputs)


def _static_outputs(model):
    """The symbolic output structure of Functional/Sequential models, or None."""
    struct = getattr(model, "_outputs_struct", None)
    if struct is not None:
        return struct
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return outputs[0] if outputs and len(outputs) == 1 else None


def _output_key(model, outputs, output):
    """Validates `output` for the model's output structure; returns the key."""
    if isinstance(outputs, (dict, list, tuple)):
        names = list(outputs) if isinstance(outputs, dict) else list(range(len(outputs)))
        if len(names) == 1 and output is None:
            return names[0]
        if output is None:
            raise ValueError(
                f"Model {model.name!r} has {len(names)} outputs: pass `output=` naming the "
                f"one to explain, one of {names}."
            )
        if output not in names:
            raise ValueError(f"`output` must be one of {names}, got {output!r}.")
        return output
    if output is not None:
        raise ValueError(f"`output` names one of several outputs, but model {model.name!r} "
                         f"has a single output; got output={output!r}.")
    return None


def _targets(target, scores):
    n, units = scores.shape
    if units == 1:
        if target not in (None, 0) and not (
            isinstance(target, (list, np.ndarray)) and np.all(np.asarray(target) == 0)
        ):
            raise ValueError(f"`target` must be None for a single-unit output, got {target!r}.")
        return np.zeros(n, np.int32)
    if target is None:
        return np.argmax(scores, axis=1).astype(np.int32)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        targets = np.full(n, int(target))
    else:
        targets = np.asarray(target)
        if targets.shape != (n,) or targets.dtype.kind not in "iu":
            raise ValueError(
                f"`target` must be None, an int, or {n} ints (one per sample), got {target!r}."
            )
    if targets.min() < 0 or targets.max() >= units:
        raise ValueError(f"`target` must be in [0, {units}), got {target!r}.")
    return targets.astype(np.int32)


def integrated_gradients(model, inputs, *, target=None, baseline=None, steps=50,
                         method="gausslegendre", batch_size=None, output=None):
    """Integrated gradients of a Keras model's output with respect to its inputs.

    `IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i da`,
    integrated with the quadrature rule `method` over `steps` points. F is the
    model output selected at `target`, evaluated with `training=False`.

    Args:
        model: A Keras model (any kind).
        inputs: An array, or a list / dict of arrays for multi-input models.
            Integer inputs are token ids: they are attributed at the output
            of the model's Embedding layer and summed over the embedding axis
            (one attribution per token; baseline: zero embeddings).
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

    Returns:
        An `Attribution` with `.attributions`, `.delta` and `.target`.

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
    alphas, weights = quadrature(method, steps)

    leaves, structure = _flatten_inputs(inputs)
    rebuild = _rebuilder(structure)
    n = len(leaves[0])
    if n == 0 or any(len(x) != n for x in leaves):
        raise ValueError(f"`inputs` must hold the same non-zero number of samples in every "
                         f"array, got {[len(x) for x in leaves]}.")
    token = [x.dtype.kind in "iu" for x in leaves]
    token_layer = None
    if any(token):
        if len(leaves) != 1:
            raise ValueError("Token (integer) inputs are supported for single-input models.")
        token_layer = _embedding_for_tokens(model)
    else:
        leaves = [x.astype(np.float32) if x.dtype.kind != "f" else x for x in leaves]

    model_inputs = rebuild([tf.convert_to_tensor(x) for x in leaves])
    base_scores = None
    f_x = None
    if token_layer is None:
        base_sets = _baselines(baseline, leaves)
        xs = leaves
        static = _static_outputs(model)
        if target is not None and static is not None and alphas[0] == 0 and alphas[-1] == 1:
            # F(x) and F(baseline) are the path's end points: read them off
            # the gradient pass instead of running the model again.
            key = _output_key(model, static, output)
            selected = tf.nest.flatten(static[key] if key is not None else static)[0]
            units = int(np.prod(selected.shape[1:]))
            targets = _targets(target, np.zeros((n, units)))
        else:
            # F(x) and F(every baseline) in one compiled forward pass.
            stacked = [np.concatenate([x] + [b[i].astype(x.dtype) for b in base_sets])
                       for i, x in enumerate(leaves)]
            raw = _forward(model, rebuild([tf.convert_to_tensor(v) for v in stacked]))
            key = _output_key(model, raw, output)
            all_scores = _select(raw, key).numpy()
            scores, base_scores = all_scores[:n], all_scores[n:].reshape(len(base_sets), n, -1)
            targets = _targets(target, scores)
            f_x = scores[np.arange(n), targets]
    else:
        raw = _forward(model, model_inputs)
        key = _output_key(model, raw, output)
        scores = _select(raw, key).numpy()
        embedded = np.asarray(token_layer(tf.convert_to_tensor(leaves[0])))
        if baseline is None:
            base_sets = [[np.zeros_like(embedded)]]
        else:
            base_sets = [[np.asarray(token_layer(tf.convert_to_tensor(b[0].astype(leaves[0].dtype))))]
                         for b in _baselines(baseline, leaves)]
        xs = [embedded]
        targets = _targets(target, scores)
        f_x = scores[np.arange(n), targets]

    core = _core(model, key, token_layer, structure)
    total_rows = n * steps
    # Balanced chunks of at most batch_size rows: the last one is padded least.
    chunks = -(-total_rows // (batch_size or total_rows))
    chunk = -(-total_rows // chunks)
    total = [np.zeros(x.shape, np.float64) for x in xs]
    f_base = np.zeros(n)
    for which, bases in enumerate(base_sets):
        args = ([tf.convert_to_tensor(x) for x in xs],
                [tf.convert_to_tensor(b.astype(x.dtype)) for b, x in zip(bases, xs)],
                [tf.convert_to_tensor(x) for x in leaves],
                tf.constant(targets), tf.constant(alphas), tf.constant(weights))
        grads = [tf.zeros(x.shape, tf.float64) for x in xs]
        f_rows = []
        for start in range(0, total_rows, chunk):  # running weighted sum per sample
            grads, rows = core(*args, tf.constant(start), chunk, grads)
            f_rows.append(rows.numpy())
        path = np.concatenate(f_rows)[:total_rows].reshape(n, steps).astype(np.float64)
        for i, (g, x, b) in enumerate(zip(grads, xs, bases)):  # IG = (x - x') * avg grad
            total[i] += (x.astype(np.float64) - b.astype(np.float64)) * g.numpy()
        if base_scores is not None:
            f_base += base_scores[which][np.arange(n), targets]
            continue
        if token_layer is None:  # end points of the path
            f_base += path[:, 0]
            if f_x is None:
                f_x = path[:, -1]
            continue
        embedded_base = tf.convert_to_tensor(bases[0])
        with swapped_call(token_layer, lambda *a, **k: embedded_base):  # F(baseline), tokens
            base_out = model(model_inputs, training=False)
        f_base += _select(base_out, key).numpy()[np.arange(n), targets]
    total = [t / len(base_sets) for t in total]
    f_base /= len(base_sets)
    summed = sum(t.reshape(n, -1).sum(axis=1) for t in total)
    if token_layer is not None:
        total = [total[0].sum(axis=-1)]
    attributions = rebuild([t.astype(np.float32) for t in total])
    return Attribution(attributions=attributions, delta=summed - (f_x - f_base),
                       target=targets, output=f_x, baseline_output=f_base)
