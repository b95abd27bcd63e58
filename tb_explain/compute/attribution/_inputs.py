"""Input plans: which model inputs can be attributed, and how.


Float inputs are attributed directly; integer token ids that an `Embedding`
layer reads (found anywhere in the model, inside custom layers too) are
attributed at that layer's output, and so is raw text that a
`TextVectorization` inside the model turns into the ids an `Embedding`
reads (tokens shown through the vectorizer's vocabulary); everything else
(strings, categorical ids that go through lookups) is held fixed and
reported as skipped, with the reason. Also: the inputs as the model takes
them (`model_inputs`).
"""

import contextlib
import dataclasses
import weakref

import keras
import numpy as np

from tb_explain import backend
from tb_explain._errors import NotApplicable
from tb_explain._keras import swapped_call
from tb_explain.probe import strings_as_array


_PLANS = weakref.WeakKeyDictionary()


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


def text_vectorizers(model):
    """Every `TextVectorization` layer of `model` (raw text in, token ids out)."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.TextVectorization)]


def _as_bytes(array):
    """Strings as a numpy bytes array (how TensorFlow's strings read back)."""
    array = np.asarray(array)
    return np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array


def _token_consumers(model, leaves, rebuild, layers, vectorizers=()):
    """Maps input index -> `(Embedding layer, vectorizer or None)`: the layer
    that reads that input's token ids, and for raw text the
    `TextVectorization` that makes those ids.

    One eager forward pass on the first sample records what each Embedding
    receives (and what each vectorizer receives and returns); an input whose
    ids arrive unchanged at a layer is read by it (a position embedding
    receives `arange(length)`, not the input); a text input is read by the
    Embedding that receives its vectorizer's ids unchanged.
    """
    seen, made = {}, {}

    def recorder(layer, original):
        def call(inputs, *args, **kwargs):
            seen.setdefault(id(layer), backend.to_numpy(inputs))
            out = original(inputs, *args, **kwargs)
            made.setdefault(id(layer), backend.to_numpy(out))
            return out
        return call

    with contextlib.ExitStack() as stack:
        for layer in (*layers, *vectorizers):
            stack.enter_context(swapped_call(layer, recorder(layer, layer.call)))
        model(rebuild([backend.to_tensor(x[:1]) for x in leaves]), training=False)

    def reader(ids):
        for layer in layers:
            got = seen.get(id(layer))
            if got is not None and got.shape == ids.shape and np.array_equal(got, ids) \
                    and all(layer is not other for other, _ in consumers.values()):
                return layer
        return None

    consumers = {}
    for i, x in enumerate(leaves):
        if x.dtype.kind in "iuf":
            layer = reader(x[:1])
            if layer is not None:
                consumers[i] = (layer, None)
        elif x.dtype.kind in "USO":
            for vectorizer in vectorizers:
                got = seen.get(id(vectorizer))
                if got is not None and got.shape == x[:1].shape and np.array_equal(
                        _as_bytes(got), _as_bytes(x[:1])):
                    layer = reader(made[id(vectorizer)])
                    if layer is not None:
                        consumers[i] = (layer, vectorizer)
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
            or raw text turned into ids inside the model, attributed at
            `embeddings[i]`'s output) or `"skip"` (held fixed).
        embeddings: Per input, the Embedding layer of a token input, else None.
        skipped: `{name: reason}` of the inputs held fixed.
        vectorizers: Per input, the `TextVectorization` layer that turns a
            text input into the ids `embeddings[i]` reads, else None.
        ids: Per input, the token ids `embeddings[i]` reads for each sample
            (`[n, length]`; the input itself for id inputs), else None.
    """

    leaves: list
    structure: tuple
    names: list
    kinds: list
    embeddings: list
    skipped: dict
    vectorizers: list = None
    ids: list = None

    def __post_init__(self):
        if self.vectorizers is None:
            self.vectorizers = [None] * len(self.leaves)
        if self.ids is None:
            self.ids = [None if kind != "token" else (
                x if vec is None else backend.to_numpy(vec(backend.to_tensor(x))))
                for kind, x, vec in zip(self.kinds, self.leaves, self.vectorizers)]

    def vocabulary(self, i):
        """The vocabulary of input `i`'s vectorizer (token strings by id), or None."""
        vectorizer = self.vectorizers[i]
        return None if vectorizer is None else list(vectorizer.get_vocabulary())

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
        ValueError: for empty or ragged inputs; `NotApplicable` (a
            `ValueError`) when no input can be attributed (naming every
            input and the reason).
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
        vectorizers = text_vectorizers(model) if any(
            x.dtype.kind in "USO" for x in leaves) else []
        candidates = bool(vectorizers) or any(x.dtype.kind in "iu" or (
            x.dtype.kind == "f" and np.array_equal(x, np.round(x))) for x in leaves)
        consumers = _token_consumers(model, leaves, rebuilder(structure), layers,
                                     vectorizers) if layers and candidates else {}
        kinds, skipped = [], {}
        for i, (name, x) in enumerate(zip(names, leaves)):
            if i in consumers:
                kinds.append("token")
            elif x.dtype.kind == "f":
                kinds.append("float")
            else:
                kinds.append("skip")
                skipped[name] = _SKIP_REASONS.get(x.dtype.kind, "strings: no gradient")
        readers = [consumers.get(i, (None, None)) for i in range(len(leaves))]
        per_model[key] = (kinds, [r[0] for r in readers], skipped, [r[1] for r in readers])
    kinds, embeddings, skipped, vectorizers = per_model[key]
    plan = InputPlan(leaves, structure, names, list(kinds), list(embeddings), dict(skipped),
                     list(vectorizers))
    if not plan.attributed:
        raise NotApplicable(
            f"No input of model {model.name!r} can be attributed: {plan.skipped_note()}. "
            f"Attribution needs float inputs, token ids read by an Embedding layer, or text "
            f"that a TextVectorization layer turns into such ids.")
    return plan


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
        x = np.asarray(x)
        if dtype is not None and x.dtype.kind not in "USO" and dtype != "string":
            x = x.astype(keras.backend.standardize_dtype(dtype))
        out.append(x)
    return out
