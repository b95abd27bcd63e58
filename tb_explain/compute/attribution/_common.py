"""Parts every attribution method shares: inputs, outputs, targets, compiled functions.

- **Inputs** (`plan_inputs`): which model inputs can be attributed and how.
  Float inputs are attributed directly; integer token ids that an `Embedding`
  layer reads (found anywhere in the model, inside custom layers too) are
  attributed at that layer's output; everything else (strings, categorical
  ids that go through lookups) is held fixed and reported as skipped, with
  the reason.
- **Outputs** (`output_names`, `output_key`, `select`): which output is
  explained, validated against the model's output structure.
- **Targets** (`targets`): the unit of the selected output explained per
  sample.
- **Compiled functions** (`forward`, `cache`): one cache per model (weakly
  keyed), so that each function is traced once per model and input shape,
  and a forward pass shared with the op graph `ModelGraph` writes.
"""

import contextlib
import dataclasses
import weakref

import keras
import numpy as np
import tensorflow as tf

from tb_explain._keras import swapped_call
from tb_explain.compute import tiering
from tb_explain.probe import strings_as_array

_CACHE = weakref.WeakKeyDictionary()
_PLANS = weakref.WeakKeyDictionary()


def cache(model):
    """The dict of compiled functions kept for `model` (dies with the model)."""
    return _CACHE.setdefault(model, {})


# -- input structure -----------------------------------------------------------

def structure_of(inputs):
    """How inputs are nested: `("dict", keys)`, `("list", n)` or `("single",)`."""
    if isinstance(inputs, dict):
        return ("dict", tuple(inputs))
    if isinstance(inputs, (list, tuple)) and inputs and all(hasattr(v, "shape") for v in inputs):
        return ("list", len(inputs))
    return ("single",)


def rebuilder(structure):
    """The inverse of flattening: leaves back into `structure`."""
    if structure[0] == "dict":
        return lambda leaves: dict(zip(structure[1], leaves))
    if structure[0] == "list":
        return list
    return lambda leaves: leaves[0]


def _array(value):
    return strings_as_array(np.asarray(value))


def flatten_inputs(inputs):
    """Returns `(leaves, structure)` for an array, a list or a dict of arrays."""
    structure = structure_of(inputs)
    if structure[0] == "dict":
        return [_array(inputs[k]) for k in structure[1]], structure
    if structure[0] == "list":
        return [_array(v) for v in inputs], structure
    return [_array(inputs)], structure


def input_names(structure):
    """Names of the flattened inputs: dict keys, list indices, or `input`."""
    if structure[0] == "dict":
        return [str(k) for k in structure[1]]
    if structure[0] == "list":
        return [str(i) for i in range(structure[1])]
    return ["input"]


def embedding_layers(model):
    """Every `Embedding` layer of `model`, nested models and custom layers included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.Embedding)]


def _token_consumers(model, leaves, rebuild, layers):
    """Maps input index -> the Embedding layer that reads that input's ids.

    One eager forward pass on the first sample records what each Embedding
    receives; an input whose ids arrive unchanged at a layer is read by it
    (a position embedding receives `arange(length)`, not the input).
    """
    seen = {}

    def recorder(layer, original):
        def call(inputs, *args, **kwargs):
            seen.setdefault(id(layer), np.asarray(inputs))
            return original(inputs, *args, **kwargs)
        return call

    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(swapped_call(layer, recorder(layer, layer.call)))
        model(rebuild([tf.convert_to_tensor(x[:1]) for x in leaves]), training=False)
    consumers = {}
    for i, x in enumerate(leaves):
        if x.dtype.kind not in "iuf":
            continue
        for layer in layers:
            got = seen.get(id(layer))
            if got is not None and got.shape == x[:1].shape and np.array_equal(got, x[:1]) \
                    and all(layer is not other for other in consumers.values()):
                consumers[i] = layer
                break
    return consumers


_SKIP_REASONS = {
    "i": "integer ids that no Embedding layer reads, such as categorical lookups: no gradient",
    "u": "integer ids that no Embedding layer reads, such as categorical lookups: no gradient",
    "b": "booleans: no gradient",
}


@dataclasses.dataclass
class InputPlan:
    """How each flattened model input is attributed.

    Attributes:
        leaves: The inputs as numpy arrays, in flattened order.
        structure: Their nesting (see `structure_of`).
        names: Their names (dict keys, list indices or `input`).
        kinds: Per input, `"float"` (attributed as is), `"token"` (ids,
            attributed at `embeddings[i]`'s output) or `"skip"` (held fixed).
        embeddings: Per input, the Embedding layer of a token input, else None.
        skipped: `{name: reason}` of the inputs held fixed.
    """

    leaves: list
    structure: tuple
    names: list
    kinds: list
    embeddings: list
    skipped: dict

    @property
    def attributed(self):
        """Indices of the attributed inputs."""
        return [i for i, kind in enumerate(self.kinds) if kind != "skip"]

    def rebuild(self, leaves):
        return rebuilder(self.structure)(leaves)

    def skipped_note(self):
        """One line saying which inputs are held fixed and why ('' if none)."""
        if not self.skipped:
            return ""
        return "not attributed (held at their values): " + "; ".join(
            f"{name!r} ({reason})" for name, reason in self.skipped.items())


def plan_inputs(model, inputs):
    """Decides, per input, whether and how it is attributed.

    Args:
        model: A Keras model.
        inputs: An array, or a list / dict of arrays.

    Returns:
        An `InputPlan`.

    Raises:
        ValueError: for empty or ragged inputs, or when no input can be
            attributed (naming every input and the reason).
    """
    leaves, structure = flatten_inputs(inputs)
    n = len(leaves[0])
    if n == 0 or any(len(x) != n for x in leaves):
        raise ValueError(f"`inputs` must hold the same non-zero number of samples in every "
                         f"array, got {[len(x) for x in leaves]}.")
    names = input_names(structure)
    key = ("plan", structure, tuple((x.shape[1:], x.dtype.str) for x in leaves))
    per_model = _PLANS.setdefault(model, {})
    if key not in per_model:
        layers = embedding_layers(model)
        candidates = any(x.dtype.kind in "iu" or (
            x.dtype.kind == "f" and np.array_equal(x, np.round(x))) for x in leaves)
        consumers = _token_consumers(model, leaves, rebuilder(structure), layers) \
            if layers and candidates else {}
        kinds, skipped = [], {}
        for i, (name, x) in enumerate(zip(names, leaves)):
            if i in consumers:
                kinds.append("token")
            elif x.dtype.kind == "f":
                kinds.append("float")
            else:
                kinds.append("skip")
                skipped[name] = _SKIP_REASONS.get(x.dtype.kind, "strings: no gradient")
        per_model[key] = (kinds, [consumers.get(i) for i in range(len(leaves))], skipped)
    kinds, embeddings, skipped = per_model[key]
    plan = InputPlan(leaves, structure, names, list(kinds), list(embeddings), dict(skipped))
    if not plan.attributed:
        raise ValueError(
            f"No input of model {model.name!r} can be attributed: {plan.skipped_note()}. "
            f"Attribution needs float inputs or token ids read by an Embedding layer.")
    return plan


# -- the shared forward pass ---------------------------------------------------

def _declared_dtypes(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return {k: v.dtype for k, v in struct.items()}
    return [t.dtype for t in inputs] if inputs else None


def model_inputs(model, plan):
    """The plan's inputs as tensors of the model's declared input dtypes (as
    Keras converts them), so every caller hits the same compiled forward."""
    return plan.rebuild(model_input_leaves(model, plan))


def model_input_leaves(model, plan):
    """`model_inputs` as a flat list, in the plan's order."""
    declared = _declared_dtypes(model)
    leaves = plan.leaves
    if isinstance(declared, dict) and plan.structure[0] == "dict":
        dtypes = [declared.get(k) for k in plan.structure[1]]
    elif isinstance(declared, list) and len(declared) == len(leaves):
        dtypes = declared
    else:
        dtypes = [None] * len(leaves)
    out = []
    for x, dtype in zip(leaves, dtypes):
        tensor = tf.convert_to_tensor(x)
        if dtype is not None and tensor.dtype != tf.string and tf.as_dtype(dtype) != tf.string:
            tensor = tf.cast(tensor, dtype)
        out.append(tensor)
    return out


def forward(model):
    """`model(x, training=False)`, compiled once per model and input signature.

    The same function traces the op graph `ModelGraph` writes (with a
    batch-agnostic signature), so the probe passes of the attribution
    methods reuse that trace.
    """
    per_model = cache(model)
    fn = per_model.get("forward")
    if fn is None:
        fn = per_model["forward"] = tf.function(
            lambda x: model(x, training=False), autograph=False, reduce_retracing=True)
    return fn


# -- outputs and targets -------------------------------------------------------

def static_outputs(model):
    """The symbolic output structure of Functional/Sequential models, or None."""
    struct = getattr(model, "_outputs_struct", None)
    if struct is not None:
        return struct
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return outputs[0] if outputs and len(outputs) == 1 else None


def output_names(outputs):
    """Keys of a multi-output structure (dict keys or indices), or `[None]`."""
    if isinstance(outputs, dict):
        return list(outputs)
    if isinstance(outputs, (list, tuple)):
        return list(range(len(outputs))) if len(outputs) > 1 else [0]
    return [None]


def output_key(model, outputs, output):
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


def select(outputs, output):
    """The selected output as float32 `[n, units]`."""
    if isinstance(outputs, (dict, list, tuple)):
        outputs = outputs[output]
    outputs = tf.cast(outputs, tf.float32)
    return tf.reshape(outputs, [tf.shape(outputs)[0], -1])


def targets(target, scores):
    """Per-sample target units: validated `target`, or the argmax of `scores`."""
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
        chosen = np.full(n, int(target))
    else:
        chosen = np.asarray(target)
        if chosen.shape != (n,) or chosen.dtype.kind not in "iu":
            raise ValueError(
                f"`target` must be None, an int, or {n} ints (one per sample), got {target!r}."
            )
    if chosen.min() < 0 or chosen.max() >= units:
        raise ValueError(f"`target` must be in [0, {units}), got {target!r}.")
    return chosen.astype(np.int32)


def output_units(model, key, plan=None):
    """Units of the selected output, read off the symbolic outputs, or from one
    forward pass on the first sample when the model has none (subclassed)."""
    static = static_outputs(model)
    if static is not None:
        selected = static[key] if key is not None else static
        selected = tf.nest.flatten(selected)[0]
        dims = selected.shape[1:]
        if all(d is not None for d in dims):
            return int(np.prod(dims))
    if plan is None:
        return None
    first = dataclasses.replace(plan, leaves=[x[:1] for x in plan.leaves])
    return int(select(forward(model)(model_inputs(model, first)), key).shape[1])


def explained_outputs(model, plan, output=None):
    """The outputs to explain: `[output]` when given, else every output of
    the model (`[None]` for a single output), read off the symbolic outputs
    or one forward pass on the first sample."""
    if output is not None:
        return [output]
    static = static_outputs(model)
    if static is None:
        first = dataclasses.replace(plan, leaves=[x[:1] for x in plan.leaves])
        static = forward(model)(model_inputs(model, first))
    return output_names(static)


# -- what every method computes on: the setup, the model feed, chunking ----------

def outputs_and_targets(model, plan, target, output):
    """`(output key, targets)`: one compiled forward pass when the targets
    depend on the predictions or the model has no symbolic outputs."""
    n = len(plan.leaves[0])
    static = static_outputs(model)
    if target is not None and static is not None:
        key = output_key(model, static, output)
        units = output_units(model, key, plan)
        return key, targets(target, np.zeros((n, units)))
    raw = forward(model)(model_inputs(model, plan))
    key = output_key(model, raw, output)
    return key, targets(target, select(raw, key).numpy())


@dataclasses.dataclass
class Setup:
    """What a method computes on: the inputs' plan, the explained output and
    targets, the attributed arrays (token inputs: their embeddings) and the
    model's input leaves."""

    plan: InputPlan
    key: object
    targets: np.ndarray
    xs: list
    feed: list

    @property
    def n(self):
        return len(self.plan.leaves[0])


def setup(model, inputs, target=None, output=None):
    """Plans the inputs, validates `output` and `target`, embeds token ids."""
    plan = plan_inputs(model, inputs)
    key, chosen = outputs_and_targets(model, plan, target, output)
    xs = [np.asarray(plan.embeddings[i](tf.convert_to_tensor(plan.leaves[i])))
          if plan.kinds[i] == "token" else plan.leaves[i] for i in plan.attributed]
    return Setup(plan, key, chosen, xs, model_input_leaves(model, plan))


def feed(plan, points, model_xs, rows, holder):
    """The model's inputs inside a compiled core: attributed float inputs are
    `points`, the others the original leaves gathered at `rows`; token
    inputs' embeddings go to `holder` (returned by their swapped layer)."""
    position = {i: j for j, i in enumerate(plan.attributed)}
    out = []
    for i, kind in enumerate(plan.kinds):
        if kind == "float":
            out.append(points[position[i]])
        else:
            out.append(tf.gather(model_xs[i], rows))
            if kind == "token":
                holder[i] = points[position[i]]
    return plan.rebuild(out)


@contextlib.contextmanager
def embeddings_swapped(plan, holder):
    """Context in which each token input's Embedding returns `holder[i]`."""
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(plan.embeddings):
            if layer is not None:
                stack.enter_context(swapped_call(layer, lambda *a, i=i, **k: holder[i]))
        yield


def chunk_index(start, chunk, total):
    """Inside a compiled core: `(index, valid)` of the rows `start` to
    `start + chunk` of `total` (padding rows beyond the end repeat the last
    row and are not valid)."""
    index = tf.range(start, start + chunk)
    valid = index < total
    return tf.minimum(index, total - 1), valid


def gradient_sums(model, plan, key, points, model_xs, rows, target, holder, weight, acc,
                  reduce=None):
    """Inside a compiled core: F at `points` (one row each, of sample
    `rows`), and `acc` plus each sample's sum of `reduce(dF/dpoint, point)`
    (default: the gradient) times the row's `weight`.

    Returns:
        `(new acc, F per row)`.
    """
    with tf.GradientTape() as tape:
        tape.watch(points)
        outs = model(feed(plan, points, model_xs, rows, holder), training=False)
        f_rows = tf.gather(select(outs, key), tf.gather(target, rows), axis=1, batch_dims=1)
        total = tf.reduce_sum(f_rows)
    grads = tape.gradient(total, points)
    n = tf.shape(acc[0])[0]
    new = []
    for a, g, p in zip(acc, grads, points):
        value = g if reduce is None else reduce(g, p)
        shape = tf.concat([tf.shape(weight), tf.ones([tf.rank(g) - 1], tf.int32)], 0)
        weighted = value * tf.reshape(tf.cast(weight, g.dtype), shape)
        new.append(a + tf.cast(tf.math.unsorted_segment_sum(weighted, rows, n), a.dtype))
    return new, f_rows


def chunk_rows(total_rows, batch_size):
    """Balanced chunks of at most `batch_size` rows: the last is padded least."""
    chunks = -(-total_rows // (batch_size or total_rows))
    return -(-total_rows // chunks)


#: Automatic `batch_size` of the attribution methods: rows holding at most
#: this many input values, and at least `AUTO_MIN_ROWS`.
AUTO_VALUES = 1 << 22
AUTO_MIN_ROWS = 32


def auto_batch_size(xs, batch_size):
    """`batch_size`, or (None) as many rows as hold 4M input values (>= 32)."""
    if batch_size is not None:
        return batch_size
    per_row = sum(int(np.prod(x.shape[1:])) for x in xs)
    return max(AUTO_MIN_ROWS, AUTO_VALUES // max(per_row, 1))


def by_shapes(fn):
    """Calls `fn`'s concrete function for the arguments' shapes (traced once
    per shape; cheaper than tf.function's own dispatch on nested arguments)."""
    concrete = {}

    def call(*args):
        key = tuple((tuple(t.shape), t.dtype) for t in tf.nest.flatten(args)
                    if isinstance(t, (tf.Tensor, np.ndarray)))
        found = concrete.get(key)
        if found is None:
            found = concrete[key] = fn.get_concrete_function(*args)
        return found(*args)
    return call


def register_core(model, key, plan, holder, core):
    """Caches the compiled `core` for `model` under `key`, dispatched by
    argument shapes (`by_shapes`; its Python runs eagerly inside
    `tiering.eager()`), with the token inputs' Embeddings swapped for
    `holder`'s values (see `feed`) while it runs."""
    run = by_shapes(core)

    def call(*args):
        with embeddings_swapped(plan, holder):
            if tiering.is_eager():
                return core.python_function(*args)
            return run(*args)

    call.core = core
    cache(model)[key] = call
    return call


def leaves_like(setup, per_attributed, reduce_tokens=True):
    """Attributions of the attributed inputs back into the inputs' structure:
    token inputs summed over the embedding axis, skipped inputs zeros."""
    plan = setup.plan
    leaves = [np.zeros(x.shape, np.float32) for x in plan.leaves]
    for j, i in enumerate(plan.attributed):
        value = np.asarray(per_attributed[j])
        if plan.kinds[i] == "token" and reduce_tokens:
            value = value.sum(axis=-1)
        leaves[i] = value.astype(np.float32)
    return plan.rebuild(leaves)


def explained_targets(model, plan, output=None, target=None):
    """`{output: target}` for every explained output (see `explained_outputs`):
    `target` applies to the outputs with several units; single-unit outputs
    of a multi-output model need none."""
    outputs = explained_outputs(model, plan, output)
    return {key: None if len(outputs) > 1 and output_units(model, key, plan) == 1 else target
            for key in outputs}
