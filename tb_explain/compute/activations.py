"""Layer outputs of any Keras model in one compiled forward pass (pure TF).

Sequential and Functional models expose symbolic layer outputs, subclassed
models do not, and a nested model's inner layers are not reachable from the
outer model's inputs. One mechanism covers all of them: while the forward
pass is traced, each selected layer's `call` is wrapped to record its output;
the traced graph keeps those outputs, and the wrappers are removed at once.
The concrete function is traced once per probe and never again.
"""

import contextlib
import difflib
import functools
import re

import keras
import numpy as np

from tb_explain import backend
from tb_explain._keras import layer_path, swapped_call, walk_layers
from tb_explain.compute import stats, tiering

#: Layers skipped by the default selection: inputs, pure reshapes and
#: identities at inference.
SKIPPED_CLASSES = (
    "InputLayer", "Reshape", "Flatten", "Permute", "RepeatVector", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "Identity", "Cropping1D", "Cropping2D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
)


def blocks(layer):
    """The repeated blocks inside a custom (non-model) layer, in order: its
    direct sublayers of a class that occurs at least twice and holds layers
    of its own (keras_hub's `ViTEncoder` holds its `ViTEncoderBlock`s), else
    `[]`."""
    if isinstance(layer, keras.Model):
        return []
    subs = [s for s in layer._flatten_layers(include_self=False, recursive=False)]
    counts = {}
    for sub in subs:
        counts[type(sub)] = counts.get(type(sub), 0) + 1
    return [s for s in subs if counts[type(s)] >= 2
            and any(True for _ in s._flatten_layers(include_self=False, recursive=False))]


def all_layers(model):
    """Returns `[(path, layer)]` of every non-model layer, nested ones
    included; a custom layer made of repeated blocks (a backbone's encoder)
    is followed by its blocks, one row each."""
    out = []
    for _, path, layer in walk_layers(model):
        if isinstance(layer, keras.Model):
            continue
        out.append((path, layer))
        out.extend((layer_path(block), block) for block in blocks(layer))
    return out


#: Layers that finish what the layer before them started: a layer whose
#: outputs only feed these is an intermediate step (conv -> BN -> ReLU).
ABSORBING_CLASSES = (
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Add",
)


def _is_intermediate(layer):
    consumers = [getattr(node, "operation", None)
                 for node in getattr(layer, "_outbound_nodes", None) or []]
    return bool(consumers) and all(type(c).__name__ in ABSORBING_CLASSES for c in consumers)


def default_selection(model, max_layers=32):
    """Layers worth showing: no inputs or pure reshapes; at most `max_layers`.

    When more remain, intermediate steps are dropped first (a layer whose
    outputs only feed normalization, activation or residual-add layers:
    the conv and BN of conv -> BN -> ReLU), so big models show block
    outputs; then an evenly spaced subset is kept, always with the last.
    """
    layers = [(p, l) for p, l in all_layers(model) if type(l).__name__ not in SKIPPED_CLASSES]
    if len(layers) <= max_layers:
        return layers
    finished = [(p, l) for p, l in layers[:-1] if not _is_intermediate(l)] + layers[-1:]
    if len(finished) >= max_layers // 2:
        layers = finished
        if len(layers) <= max_layers:
            return layers
    if max_layers == 1:
        return layers[-1:]
    step = (len(layers) - 1) / (max_layers - 1)
    return [layers[round(i * step)] for i in range(max_layers)]


def select_layers(model, patterns):
    """Resolves `layers=` (names, paths or regular expressions) to layers.

    Raises:
        ValueError: for a pattern that matches nothing, listing close matches.
    """
    candidates = all_layers(model)
    chosen = {}
    for pattern in patterns:
        hits = [(p, l) for p, l in candidates if pattern in (p, l.name)]
        if not hits:
            try:
                regex = re.compile(pattern)
            except re.error:
                regex = None
            if regex is not None:
                hits = [(p, l) for p, l in candidates if regex.fullmatch(p) or regex.fullmatch(l.name)]
        if not hits:
            names = [p for p, _ in candidates] + [l.name for _, l in candidates]
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise ValueError(
                f"`layers` entry {pattern!r} matches no layer of model {model.name!r}.{hint} "
                f"Layers: {[p for p, _ in candidates][:40]}"
            )
        for path, layer in hits:
            chosen.setdefault(path, layer)
    order = [p for p, _ in candidates]
    return sorted(chosen.items(), key=lambda item: order.index(item[0]))


def saturating_kind(layer):
    """`"tanh"`, `"sigmoid"` or None: the activation applied to the output."""
    if hasattr(layer, "recurrent_activation"):
        return None  # LSTM/GRU outputs are gated, not a plain activation
    activation = getattr(layer, "activation", None)
    if activation is keras.activations.tanh:
        return "tanh"
    if activation is keras.activations.sigmoid:
        return "sigmoid"
    return None


def _first_tensor(output):
    """RNNs with `return_state` and other multi-output layers: the first output."""
    flat = keras.tree.flatten(output)
    return flat[0] if flat else None


def _numpy_fractions(values, kinds):
    """`(dead, saturated)` float32 `[k]`: the fraction of units zero for every
    sample and position, and of values within 0.01 of a tanh or sigmoid
    bound (-1 for other layers); in numpy (`backend.graph_statistics()` has the
    graph twin)."""
    dead, saturated = [], []
    for value, kind in zip(values, kinds):
        value = backend.to_numpy(value)
        dead.append(np.mean(np.all(value == 0.0, axis=tuple(range(value.ndim - 1))))
                    if value.ndim >= 2 else 0.0)
        if kind == "tanh":
            saturated.append(np.mean(np.abs(value) > 0.99))
        elif kind == "sigmoid":
            saturated.append(np.mean((value < 0.01) | (value > 0.99)))
        else:
            saturated.append(-1.0)
    return np.asarray(dead, np.float32).reshape(-1), np.asarray(saturated, np.float32).reshape(-1)


def _is_number(tensor):
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    return keras.backend.is_float_dtype(dtype) or keras.backend.is_int_dtype(dtype)


@contextlib.contextmanager
def recording(layers, captured):
    """Context in which each of `layers` (`[(path, layer)]`) records what its
    `call` returns in `captured[path]` (every model kind: see `swapped_call`)."""
    def wrap(path, original):
        @functools.wraps(original)
        def call(*args, **kwargs):
            output = original(*args, **kwargs)
            captured[path] = output
            return output
        return call

    with contextlib.ExitStack() as stack:
        for path, layer in layers:
            stack.enter_context(swapped_call(layer, wrap(path, layer.call)))
        yield captured


def make_layer_outputs(model, layers, x, max_channels=16, bins=stats.DEFAULT_BINS):
    """Builds the compiled probe pass for `layers` of `model`.

    Args:
        model: A Keras model of any kind.
        layers: `[(path, layer)]` to capture.
        x: The probe inputs (a nest of tensors); fixes the traced shapes.
        max_channels: Channels (last axis) kept for display.
        bins: Histogram buckets.

    Runs the model once on `x` (eagerly inside `tiering.eager()`, else
    tracing `fn`); `fn` traces at its first call outside `tiering.eager()`.

    Returns:
        `(fn, paths)`: `fn(x, stats.zero())` returns a dict with `display` (path -> float32
        output, last axis cut to `max_channels`), `buckets` `[k, bins, 3]`,
        `dead` `[k]` (fraction of units zero for every sample and position)
        and `saturated` `[k]` (fraction of values within 0.01 of a tanh or
        sigmoid bound, -1 for other layers); `paths` lists the layers actually
        reached by the forward pass, in order.
    """
    captured = {}
    kinds = {path: saturating_kind(layer) for path, layer in layers}

    reached = []

    def layer_outputs(inputs):
        captured.clear()
        model(inputs, training=False)
        outputs = {}
        for path, _ in layers:
            tensor = _first_tensor(captured.get(path))
            if tensor is not None and _is_number(tensor):
                outputs[path] = keras.ops.cast(tensor, "float32")
        reached[:] = list(outputs)
        return outputs

    def summarize(outputs, zero):
        values = [outputs[p] for p in reached]
        buckets, _, _ = stats.batched_statistics(values, bins, zero=zero)
        # Eagerly, numpy does the same arithmetic with far fewer calls.
        if backend.executing_eagerly():
            dead, saturated = _numpy_fractions(values, [kinds[p] for p in reached])
        else:
            dead, saturated = backend.graph_statistics().unit_fractions(
                values, [kinds[p] for p in reached])
        display = {p: v[..., :max_channels] if len(v.shape) >= 3 else v
                   for p, v in zip(reached, values)}
        return {"display": display, "buckets": buckets, "dead": dead, "saturated": saturated}

    def forward(inputs, zero):
        return summarize(layer_outputs(inputs), zero)

    def capturing():
        return recording(layers, captured)

    functions = {}  # the compiled pass, made at the first compiled call

    def call(inputs, zero):
        if tiering.is_eager():
            with capturing():
                return forward(inputs, zero)
        if backend.graph_statistics() is None:  # a compiled pass, numpy statistics
            if not functions:
                functions["outputs"] = backend.compile(layer_outputs, model.variables)
            with capturing():
                outputs = functions["outputs"](inputs)
            # numpy from here: on JAX each eager slice of a new shape
            # compiles first (0.04 s per layer in a process's first fit)
            return summarize({p: backend.to_numpy(v) for p, v in outputs.items()}, zero)
        with capturing():  # the pass and its statistics in one compiled function
            if not functions:
                functions["forward"] = backend.Function(forward, model.variables,
                                                        statistics=True)
                functions["forward"].trace(x, stats.zero())
            return functions["forward"](inputs, zero)

    def outputs_of(captured_outputs, rows):
        """The captured outputs of `reached`, their first `rows` rows."""
        outputs = {}
        for path in reached:
            tensor = _first_tensor(captured_outputs.get(path))
            if tensor is None:
                return None
            outputs[path] = keras.ops.cast(tensor[:rows], "float32")
        return outputs

    call.functions = functions
    call.capturing = capturing
    call.captured = captured
    call.outputs_of = outputs_of
    call.from_captured = summarize  # the result of outputs captured elsewhere
    # The layers reached, and a check that the probe fits.
    if tiering.is_eager():
        with capturing():
            layer_outputs(x)
    elif backend.graph_statistics() is None:  # the compiled pass: ahead where it can
        functions["outputs"] = backend.compile(layer_outputs, model.variables)
        with capturing():
            traced = functions["outputs"].trace(x)
        captured.clear()  # the trace's values: none may leave it
        if not traced:
            call(x, stats.zero())
    else:
        call(x, stats.zero())
    return call, list(reached)


class SharedCapture:
    """Layer captures taken during another callback's eager forward pass.

    `ActivationImages` and `GradientNorms` each run the model forward on
    their probe at an event (eagerly, for a big model's first events: 0.3 s
    of Python for ResNet50). When the gradient pass runs first on a probe
    that starts with the activation probe's samples (as in `tbx.explain`,
    where both come from the same `data`), it installs the activation
    callback's capture wrappers (`during`), and the activation event takes
    the first rows of what they recorded (`take`) instead of a pass of its
    own. Layers at inference compute each sample on its own, so those rows
    are the activation probe's outputs (to float rounding).

    Args:
        fn: `make_layer_outputs`'s function.
        x: The activation probe's inputs (a nest of tensors).
        wants: `wants(step)`: whether an eager activation event at `step`
            is still to come.
    """

    def __init__(self, fn, x, wants):
        self.fn, self.x, self.wants = fn, x, wants
        self.rows = int(keras.tree.flatten(x)[0].shape[0])
        self._outputs = None
        self._step = None
        self._checked = {}  # id of the other probe -> whether it starts with `x`
        #: Events served from another pass (for tests and timing).
        self.served = 0

    def _starts_with_x(self, other):
        key = id(other)
        if key not in self._checked:
            mine, theirs = keras.tree.flatten(self.x), keras.tree.flatten(other)
            try:
                keras.tree.assert_same_structure(self.x, other)
                same = all(
                    a.dtype == b.dtype and a.shape[1:] == b.shape[1:]
                    and b.shape[0] >= self.rows
                    and np.array_equal(backend.to_numpy(a), backend.to_numpy(b[:self.rows]))
                    for a, b in zip(mine, theirs))
            except (TypeError, ValueError):
                same = False
            self._checked[key] = (other, same)  # `other` kept: its id stays unique
        return self._checked[key][1]

    @contextlib.contextmanager
    def during(self, step, x):
        """Context of another callback's eager forward pass of `x` at `step`:
        captures the activation layers' outputs when an activation event at
        `step` is to come and `x` starts with its probe."""
        # Where gradients trace their function (JAX's `value_and_grad`),
        # what the other pass captures are tracers, which must not leave it.
        if not (tiering.is_eager() and not backend.traces_gradients() and self.wants(step)
                and self._starts_with_x(x)):
            yield
            return
        self.fn.captured.clear()
        with self.fn.capturing():
            yield
        self._outputs = self.fn.outputs_of(self.fn.captured, self.rows)
        self._step = step if self._outputs is not None else None
        self.fn.captured.clear()

    def take(self, step):
        """The captured outputs for `step` (then forgotten), or None."""
        outputs, ready = self._outputs, self._step == step
        self._outputs = self._step = None
        if ready:
            self.served += 1
            return outputs
        return None
