"""DeepLIFT with the rescale rule (Shrikumar et al. 2017) and DeepLiftShap, as
Captum's `DeepLift(model, multiply_by_inputs=True)` and `DeepLiftShap`.

The references go through the model first, and every supported
nonlinearity records its input and output; then the inputs go through, and
each such nonlinearity is replaced by itself with another gradient (the
"multiplier"), against what it recorded for the row's reference:
for `y = f(z)`, with `dz = z - z_ref` and `dy = f(z) - f(z_ref)` taken
between a row and its reference's row,

    y' = stop_gradient(y) + (z - stop_gradient(z)) * m,   m = stop_gradient(dy / dz),

which has `y`'s value and gradient `m` (the plain gradient f'(z), in closed
form, where `|dz| < 1e-10`, as Captum; `backend.with_gradient`, and `m` in
one compiled kernel, `backend.fused`). When every sample has the same
references (and the model no held input), the references' pass runs once
over them, not once per row. The gradient of the target with respect to the
inputs is then the product of multipliers, and the attributions are
`(x - x_ref) * gradient`: they sum to `F(x) - F(x_ref)` per sample.

Softmax follows Captum's rule (the multipliers minus their mean; per sample
here, see `rescaled_softmax`), and so does max pooling (`rescaled_maxpool`).
Nonlinearities replaced: the `activation` of any layer (Dense, Conv,
Activation...) that is relu, elu, leaky_relu, sigmoid, tanh, softplus or
softmax, and the ReLU, ELU, LeakyReLU, Softmax and MaxPooling1D/2D/3D
layers. Every other nonlinearity (global max pooling, attention, GELU...)
keeps its gradient (as Captum does for modules it does not know); the
result names them in `skipped`.
"""

import contextlib

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain._keras import swapped_attr, swapped_call, walk_layers
from tb_explain.compute.attribution import _cores, _feeding
from tb_explain.compute.attribution._outputs import select
from tb_explain.compute.attribution.gradient_shap import _baseline_rows
from tb_explain.compute.attribution.integrated_gradients import _baseline_sets
from tb_explain.compute.attribution.result import Attribution

OPTIONS = ("baseline",)
SHAP_OPTIONS = ("baselines",)
#: Below this input change, a nonlinearity keeps its gradient (Captum's `eps`).
EPS = 1e-10
ELEMENTWISE = ("relu", "elu", "leaky_relu", "sigmoid", "tanh", "softplus")
#: Layers whose `call` is one supported nonlinearity.
LAYER_RULES = {"ReLU": "elementwise", "ELU": "elementwise", "LeakyReLU": "elementwise",
               "Softmax": "softmax", "MaxPooling1D": "maxpool", "MaxPooling2D": "maxpool",
               "MaxPooling3D": "maxpool"}
#: Nonlinear layers DeepLIFT's rescale rule does not cover here (their gradient is used).
UNCOVERED = ("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
             "MultiHeadAttention", "PReLU")


def _sinhc(d):
    """sinh(d) / d without cancellation near 0."""
    ops = keras.ops
    tiny = ops.abs(d) < 1e-3
    safe = ops.where(tiny, ops.ones_like(d), d)
    return ops.where(tiny, 1.0 + d * d / 6.0, ops.sinh(safe) / safe)


def _multiplier(name, z_x, z_r, dz, dy):
    """`dy / dz` (undefined where `dz` is 0: the caller replaces those); for
    tanh and sigmoid in closed forms free of the float32 cancellation of
    `f(z) - f(z_ref)` when the two are close: tanh a - tanh b =
    sinh(a - b) / (cosh a cosh b), and sigmoid(x) = (1 + tanh(x / 2)) / 2."""
    ops = keras.ops
    plain = dy / dz
    if name == "tanh":
        exact = _sinhc(dz) / (ops.cosh(z_x) * ops.cosh(z_r))
    elif name == "sigmoid":
        exact = _sinhc(dz / 2.0) / (4.0 * ops.cosh(z_x / 2.0) * ops.cosh(z_r / 2.0))
    else:
        return plain
    return ops.where(ops.isfinite(exact), exact, plain)


def _settings(name, layer):
    """`(negative_slope, threshold, max_value, alpha)` of the elementwise
    nonlinearity `name` (an activation's name, or a layer's class with its
    own settings)."""
    if name in ("relu", "leaky_relu", "ReLU", "LeakyReLU"):
        negative = {"relu": 0.0, "leaky_relu": 0.2}.get(
            name, float(getattr(layer, "negative_slope", 0.0) or 0.0))
        threshold = float(getattr(layer, "threshold", 0.0) or 0.0) if name == "ReLU" else 0.0
        ceiling = getattr(layer, "max_value", None) if name == "ReLU" else None
        return negative, threshold, None if ceiling is None else float(ceiling), None
    if name in ("elu", "ELU"):
        return None, None, None, float(getattr(layer, "alpha", 1.0)) if name == "ELU" else 1.0
    return None, None, None, None


def slope(name, settings):
    """`f'(z, y)` of the elementwise nonlinearity `name` with `settings`
    (`_settings`): the plain gradient DeepLIFT keeps where the input did not
    change, as each backend's own gradient defines it."""
    ops = keras.ops
    negative, threshold, ceiling, alpha = settings
    if name in ("relu", "leaky_relu", "ReLU", "LeakyReLU"):
        def relu_slope(z, y):
            inside = z > threshold
            if ceiling is not None:
                inside = ops.logical_and(inside, z < ceiling)
            g = ops.cast(inside, z.dtype)
            return g if not negative else g + negative * ops.cast(z <= threshold, z.dtype)
        return relu_slope
    if name in ("elu", "ELU"):
        return lambda z, y: ops.where(z > 0, ops.ones_like(z), y + alpha)
    if name == "sigmoid":
        return lambda z, y: y * (1.0 - y)
    if name == "tanh":
        return lambda z, y: 1.0 - y * y
    if name == "softplus":
        return lambda z, y: ops.sigmoid(z)
    raise ValueError(f"no DeepLIFT rescale rule for {name!r}")


#: The compiled multipliers (`multiplier_function`), per nonlinearity and settings.
_MULTIPLIERS = {}


def multiplier_function(name, layer=None):
    """`m(z_x, y_x, z_r, y_r)`: the rescale rule's multiplier of the
    elementwise nonlinearity `name` (`dy / dz`; the plain gradient at the
    input where `|dz| < EPS`: a zero reference often sits on ReLU's kink),
    compiled into one kernel (`backend.fused`: a chain of a dozen elementwise
    ops at every nonlinearity otherwise costs more than the model's own
    forward pass), one per nonlinearity and settings."""
    key = (backend.name(), name, _settings(name, layer))
    if key not in _MULTIPLIERS:
        gradient = slope(name, key[2])
        closed = name if name in ("tanh", "sigmoid") else None

        def multiplier(z_x, y_x, z_r, y_r):
            dz = z_x - z_r
            small = keras.ops.abs(dz) < EPS
            m = _multiplier(closed, z_x, z_r, dz, y_x - y_r)
            return keras.ops.where(small, gradient(z_x, y_x), m)
        _MULTIPLIERS[key] = backend.fused(multiplier)
    return _MULTIPLIERS[key]


def rescaled(z_x, y_x, z_r, y_r, multiplier):
    """`y_x = f(z_x)` with the rescale rule's gradient against the
    reference's `z_r`, `y_r = f(z_r)`: `multiplier` (`multiplier_function`)
    as the gradient, and f's own backward pass never runs."""
    stop = keras.ops.stop_gradient
    m = stop(multiplier(stop(z_x), stop(y_x), z_r, y_r))
    return backend.with_gradient(y_x, z_x, m)


def rescaled_softmax(z_x, y_x, z_r, y_r):
    """Softmax (over the last axis) with Captum's DeepLIFT rule: the
    multipliers `g * dy / dz` minus their mean. Captum takes that mean over
    the whole batch it was given (so a sample's result depends on the others
    in its batch); here it is each row's own, which is Captum's result for
    one sample at a time."""
    ops = keras.ops
    dz, dy = z_x - z_r, y_x - y_r
    small = ops.abs(dz) < EPS
    m = ops.stop_gradient(ops.where(small, ops.zeros_like(dz), dy / ops.where(
        small, ops.ones_like(dz), dz)))
    # d/dz_j of sum_k g_k m_k (z_k - mean(z)) = g_j m_j - mean_k(g_k m_k)
    linear = m * (z_x - ops.mean(z_x, axis=-1, keepdims=True))
    return ops.stop_gradient(y_x - linear) + linear


def rescaled_maxpool(pool, z_x, y_x, z_r, y_r):
    """Max pooling (`y = pool(z)`) with Captum's DeepLIFT rule: in each
    window the output's change `y - y_ref` is split between the input's
    argmax, which gets `max(y, y_ref) - y_ref`, and the reference's argmax,
    which gets `y - max(y, y_ref)` (both to the first maximum of a tie, as
    every backend's pooling gradient routes them), each divided by the
    position's own input change (the plain routed gradient where that is
    below `EPS`).

    `T = c1 pool(h) + c2 pool(z_ref with h's gradient) + pool(k)` has exactly
    that gradient: `h` is `z` with gradient `1 / dz`, `k` is `z` with
    gradient 1 where `dz` is small (0 elsewhere), `c1`, `c2` the constants
    above; `y' = stop_gradient(y - T) + T` keeps `y`'s value."""
    ops = keras.ops
    dz = z_x - z_r
    small = ops.abs(dz) < EPS
    inverse = ops.stop_gradient(ops.where(small, ops.zeros_like(dz),
                                          1.0 / ops.where(small, ops.ones_like(dz), dz)))
    plain = ops.stop_gradient(ops.cast(small, z_x.dtype))
    h = ops.stop_gradient(z_x - z_x * inverse) + z_x * inverse
    k = ops.stop_gradient(z_x - z_x * plain) + z_x * plain
    top = ops.maximum(y_x, y_r)
    c1, c2 = ops.stop_gradient(top - y_r), ops.stop_gradient(y_x - top)
    through_ref = ops.stop_gradient(z_r) + (h - ops.stop_gradient(h))
    total = c1 * pool(h) + c2 * pool(through_ref) + pool(k)
    return ops.stop_gradient(y_x - total) + total


class _Pass:
    """The two passes of one DeepLIFT computation: the references' pass
    records each replaced nonlinearity's input and output, in call order;
    the inputs' pass applies the rules against them, in the same order,
    each recorded tensor first taken through `expand` (the references' rows
    to the inputs' rows: None when they are the same rows or the references
    are one row that broadcasts)."""

    def __init__(self, expand=None):
        self.recorded, self.applying, self.next, self.expand = [], False, 0, expand

    def __call__(self, rule, z, y):
        if not self.applying:
            self.recorded.append((keras.ops.stop_gradient(z), keras.ops.stop_gradient(y)))
            return y
        z_r, y_r = self.recorded[self.next]
        self.next += 1
        if self.expand is not None:
            z_r, y_r = self.expand(z_r), self.expand(y_r)
        return rule(z, y, z_r, y_r)


class _Merged:
    """One traversal over the references and the inputs concatenated
    (references first), for backends that run eagerly (`backend.runs_eagerly()`:
    there a model call's cost is mostly Keras's Python per layer, so a
    second traversal for the references costs as much as the gradient
    itself): each replaced nonlinearity splits its batch, applies its rule
    to the inputs' part against the references' (`expand`: as `_Pass`), and
    joins them again. `count`: the references' rows; `total`: all rows (a
    layer folding the batch into its leading axis, batch outermost, is
    split by the same proportion)."""

    def __init__(self, count, total, expand=None):
        self.count, self.total, self.expand = count, total, expand

    def __call__(self, rule, z, y):
        ops = keras.ops
        split = self.count * (int(z.shape[0]) // self.total)
        z_r, y_r = ops.stop_gradient(z[:split]), ops.stop_gradient(y[:split])
        expand = self.expand or (lambda t: t)
        out = rule(z[split:], y[split:], expand(z_r), expand(y_r))
        return ops.concatenate([y_r, out], axis=0)


def elementwise_rule(name, layer=None):
    """The rescale rule of the elementwise nonlinearity `name` (see `slope`)."""
    multiplier = multiplier_function(name, layer)
    return lambda z, y, z_r, y_r: rescaled(z, y, z_r, y_r, multiplier)


def plan_rules(model):
    """`(swaps, uncovered)`: `[(layer, kind, name)]` to replace (`kind`
    `"activation"` or `"call"`), and the paths of nonlinear layers left with
    their gradient."""
    swaps, uncovered = [], []
    for _, path, layer in walk_layers(model):
        if isinstance(layer, keras.Model):
            continue
        kind = type(layer).__name__
        if kind in LAYER_RULES:
            swaps.append((layer, "call", LAYER_RULES[kind]))
            continue
        if kind in UNCOVERED:
            uncovered.append(path)
            continue
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", None)
        if activation is None or name in (None, "linear"):
            continue
        if name in ELEMENTWISE or name == "softmax":
            swaps.append((layer, "activation", name))
        else:
            uncovered.append(f"{path} ({name})")
    return swaps, uncovered


@contextlib.contextmanager
def rescale_rules(swaps, state):
    """Context in which the layers of `swaps` (`plan_rules`) record (the
    references' pass) or apply the rules (the inputs' pass) through `state`
    (a `_Pass`)."""
    def activation(name, original):
        rule = rescaled_softmax if name == "softmax" else elementwise_rule(name)

        def call(z, *args, **kwargs):
            return state(rule, z, original(z, *args, **kwargs))
        return call

    def layer_call(layer, name, original):
        rule = (rescaled_softmax if name == "softmax" else
                elementwise_rule(type(layer).__name__, layer) if name == "elementwise" else None)

        def call(z, *args, **kwargs):
            chosen = rule or (lambda z_x, y_x, z_r, y_r: rescaled_maxpool(
                lambda v: original(v, *args, **kwargs), z_x, y_x, z_r, y_r))
            return state(chosen, z, original(z, *args, **kwargs))
        return call

    with contextlib.ExitStack() as stack:
        for layer, kind, name in swaps:
            if kind == "activation":
                stack.enter_context(swapped_attr(layer, "activation",
                                                 activation(name, layer.activation)))
            else:
                stack.enter_context(swapped_call(layer, layer_call(layer, name, layer.call)))
        yield


def _core(model, key, plan, chunk, per_sample, swaps, shared):
    """`core(xs, ends, bases, held, targets, start) -> (sums, f, f_ref)`:
    rows `(sample, reference)`; the sums of `(x - ref) * multipliers /
    per_sample` per sample, and F at the rows' inputs and references.

    `shared`: every sample has the same `per_sample` references (`bases`
    holds those, `[per_sample, ...]`; no held inputs): the references' pass
    runs once over them, not once per row, and what it records goes to the
    rows by broadcasting (one reference) or a gather. Else `bases` holds
    every row's reference. Where the backend runs eagerly, both go through
    one traversal (`_Merged`), else the references' pass comes first
    (`_Pass`)."""
    ops = keras.ops
    count_sums = _feeding.segments(chunk, per_sample)
    merged = backend.runs_eagerly()

    def build(holder):
        return lambda *args: core(holder, *args)

    def core(holder, xs, ends, bases, held, targets, start):
        index, valid, sample, step = _feeding.chunk_index(start, chunk, per_sample,
                                                          ops.shape(xs[0])[0])
        gather = backend.gather
        rows = [gather(e, index) for e in ends]
        model_xs = [None if h is None else gather(h, sample) for h in held]
        target = gather(targets, sample)
        if shared:
            def expand(t):  # the references' rows to the inputs' rows
                if t.shape[0] == per_sample:  # one row per reference
                    return t if per_sample == 1 else gather(t, step)
                # a layer folding the batch into the leading axis, batch outermost
                # (TimeDistributed, attention heads): `k` rows per reference
                k = ops.shape(t)[0] // per_sample
                return gather(t, ops.reshape(ops.expand_dims(step * k, 1)
                                             + ops.arange(k, dtype="int32"), (-1,)))
            references = bases
            refs = [b if per_sample == 1 else gather(b, step) for b in bases]
        else:
            expand = None
            references = refs = [gather(b, index) for b in bases]

        def f_of_references(selected):  # F at each row's reference
            if shared:
                selected = gather(selected, ops.zeros_like(step) if per_sample == 1 else step)
            return ops.stop_gradient(
                ops.take_along_axis(selected, ops.expand_dims(target, 1), axis=1)[:, 0])

        if merged:
            count = int(references[0].shape[0])
            state = _Merged(count, count + chunk, expand)

            def total_of(points):
                joined = [ops.concatenate([r, p], axis=0) for r, p in zip(references, points)]
                joined_xs = [None if h is None else ops.concatenate([h, h], axis=0)
                             for h in model_xs]  # (shared references: no held input)
                with rescale_rules(swaps, state):
                    out = model(_feeding.feed(plan, joined, joined_xs, holder), training=False)
                selected = select(out, key)
                f_rows = ops.take_along_axis(selected[count:], ops.expand_dims(target, 1),
                                             axis=1)[:, 0]
                return ops.sum(f_rows), (f_rows, selected[:count])

            grads, (f_rows, selected) = backend.input_gradients(total_of, rows)
            f_refs = f_of_references(ops.stop_gradient(selected))
        else:
            state = _Pass(expand)
            with rescale_rules(swaps, state):  # recorded, no gradient needed
                reference = model(_feeding.feed(plan, references, model_xs, holder),
                                  training=False)
            f_refs = f_of_references(select(reference, key))

            def total_of(points):
                state.applying, state.next = True, 0
                with rescale_rules(swaps, state):
                    out = model(_feeding.feed(plan, points, model_xs, holder), training=False)
                f_rows = _feeding.take_targets(out, key, target)
                return ops.sum(f_rows), f_rows

            grads, f_rows = backend.input_gradients(total_of, rows)
        return _feeding.difference_sums(grads, rows, refs, valid, sample, per_sample,
                                        count_sums), f_rows, f_refs

    return _cores.cached_core(model, ("deeplift", key, chunk, per_sample, shared), plan, build)


def _shared(sets, done):
    """Whether every sample has the same references (each set's arrays equal
    along the samples) and the model has no held input (a reference's
    forward pass depends on nothing of its sample)."""
    if any(kind != "float" for kind in done.plan.kinds):
        return False
    return all(np.array_equal(b, np.broadcast_to(b[:1], b.shape)) for s in sets for b in s)


def _attribute(model, inputs, sets, target, output, position, batch_size, done=None):
    done = done or _feeding.setup(model, inputs, target, output, position)
    swaps, uncovered = plan_rules(model)
    m = len(sets)
    rows = done.n * m
    # each chunk runs its rows twice (their references beside them)
    chunk = _feeding.chunk_rows(rows, max(1, _feeding.auto_batch_size(done.xs, batch_size) // 2))
    shared = _shared(sets, done) and m <= chunk
    sample = np.repeat(np.arange(done.n), m)
    pick = np.tile(np.arange(m), done.n)
    ends, bases = [], []
    for j, x in enumerate(done.xs):
        ends.append(np.repeat(x, m, axis=0).astype(np.float32))
        stacked = np.stack([s[j] for s in sets])  # [m, n, ...]
        bases.append((stacked[:, 0] if shared else stacked[pick, sample]).astype(np.float32))
    core = _core(model, done.key, done.plan, chunk, m, swaps, shared)
    args = _cores.as_tensors((list(done.xs), ends, bases, _feeding.held_inputs(done),
                              np.asarray(done.targets)))
    acc = [np.zeros(x.shape, np.float64) for x in done.xs]
    f_rows, f_refs = np.zeros(rows), np.zeros(rows)
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        sums, f, f_ref = core(*args, _feeding.start_index(start))
        _feeding.add_chunk_sums(acc, sums, start, stop, m)
        f_rows[start:stop] = backend.to_numpy(f)[:stop - start]
        f_refs[start:stop] = backend.to_numpy(f_ref)[:stop - start]
    f_x = f_rows.reshape(done.n, m)[:, 0]
    f_b = f_refs.reshape(done.n, m).mean(axis=1)
    total = np.array([sum(a[s].sum() for a in acc) for s in range(done.n)])
    skipped = dict(done.plan.skipped)
    if uncovered:
        skipped["deeplift"] = ("nonlinear layers kept their gradient (no rescale rule): "
                               + ", ".join(uncovered))
    return Attribution(attributions=_feeding.leaves_like(done, acc), delta=total - (f_x - f_b),
                       **done.explained, output=f_x, baseline_output=f_b, skipped=skipped)


def deeplift(model, inputs, *, target=None, output=None, position="last", batch_size=None,
             baseline=None):
    """DeepLIFT (rescale rule) against `baseline`, as Captum's `DeepLift`.

    Args:
        baseline: The reference input: one sample's shape, or the inputs'
            shape (a list or dict for several inputs); default zeros.
    """
    done = _feeding.setup(model, inputs, target, output, position)
    sets = _baseline_sets(baseline, done.plan, done.xs)
    if len(sets) != 1:
        raise ValueError(f"`baseline` must be one reference (one sample's shape or the "
                         f"inputs'), got {len(sets)}; for several use 'deeplift_shap' with "
                         f"`baselines`.")
    return _attribute(model, inputs, sets, target, output, position, batch_size, done)


def deeplift_shap(model, inputs, *, target=None, output=None, position="last",
                  batch_size=None, baselines=None):
    """DeepLIFT averaged over the references `baselines`, as Captum's
    `DeepLiftShap`.

    Args:
        baselines: `(m, ...)` reference inputs, m >= 2 (a list or dict of
            them for several inputs).
    """
    if baselines is None:
        raise ValueError("`baselines` is required for 'deeplift_shap': an array (m, ...) of "
                         "m >= 2 reference inputs.")
    done = _feeding.setup(model, inputs, target, output, position)
    sets = _baseline_rows(baselines, done)
    if len(sets) < 2:
        raise ValueError(f"`baselines` must hold at least 2 references for 'deeplift_shap', "
                         f"got {len(sets)}; for one use 'deeplift' with `baseline`.")
    _validate.check_int("baselines count", len(sets), minimum=2)
    return _attribute(model, inputs, sets, target, output, position, batch_size, done)
