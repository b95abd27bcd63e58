"""Small helpers over Keras 3 internals, kept in one place."""

import contextlib


def layer_path(layer):
    """Returns the unique Keras 3 path of `layer`.

    `layer.path` is set when a layer is built through its `build` method;
    layers without one (Flatten, pooling, Dropout) keep `path=None`, so their
    path is rebuilt the way Keras builds it: the name scope the layer was
    called in, joined with its name.
    """
    if layer.path:
        return layer.path
    parent = getattr(layer, "_parent_path", None)
    return f"{parent}/{layer.name}" if parent else layer.name


def walk_layers(layer, depth=0):
    """Yields `(depth, path, layer)` for every layer nested in `layer`.

    Containers (nested models) are yielded, then their own layers one level
    deeper.
    """
    for sub in getattr(layer, "layers", None) or []:
        yield depth, layer_path(sub), sub
        if getattr(sub, "layers", None):
            yield from walk_layers(sub, depth + 1)


@contextlib.contextmanager
def swapped_attr(obj, name, value):
    """Context in which the instance attribute `obj.<name>` is `value`; the
    original (or the class's, when the instance had none) is restored after."""
    original = obj.__dict__.get(name)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if original is None:
            object.__delattr__(obj, name)
        else:
            object.__setattr__(obj, name, original)


def swapped_call(layer, call):
    """Context in which `layer.call` is `call`; the original is restored after.

    Keras's `Layer.__call__` runs `self.call`, so an instance attribute set
    here intercepts every call of the layer inside any model, whatever its
    kind (Sequential, Functional, nested, subclassed).
    """
    return swapped_attr(layer, "call", call)


def tokenizer_lookup(model):
    """`token_id -> str` through the model's own tokenizer (a keras_hub task
    with a preprocessor: `preprocessor.tokenizer.id_to_token`; `<id>` for an
    id it does not know), or None when the model has none."""
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "id_to_token"):
        return None

    def lookup(token_id):
        try:
            return str(tokenizer.id_to_token(int(token_id)))
        except Exception:  # noqa: BLE001 (an id the tokenizer does not know)
            return f"<{int(token_id)}>"
    return lookup


def has_call(model):
    """Whether `model` can run forward: Functional and Sequential models, and
    subclassed ones that define `call()` (a GAN of the keras-io guide has
    only a `train_step` of its own, and `keras.Model.call` raises)."""
    import keras  # noqa: PLC0415

    return type(model).call is not keras.Model.call


def is_ready(model):
    """Whether `model`'s weights exist: built, or (a model without `call()`,
    such as a GAN whose sub-models are built) holding weights already."""
    return model.built or (not has_call(model) and bool(model.weights))


def count_params(model):
    """`model.count_params()`, also for a model that holds built sub-models
    but is not built itself (a GAN without `call()`)."""
    if model.built:
        return model.count_params()
    import numpy as np  # noqa: PLC0415

    return int(sum(np.prod(w.shape) for w in model.weights))


def is_mixed(model):
    """Whether some layer of `model` computes in float16 or bfloat16 (a
    `mixed_float16` / `mixed_bfloat16` policy, or a layer's own dtype)."""
    return any(_low_precision(layer) for layer in _layers_and_self(model))


def _layers_and_self(model):
    return [model] + [layer for _, _, layer in walk_layers(model)]


def _low_precision(layer):
    import keras  # noqa: PLC0415

    policy = layer.__dict__.get("_dtype_policy")  # a plain policy, not quantized or a map
    return type(policy) is keras.DTypePolicy and policy.compute_dtype in ("float16", "bfloat16")


@contextlib.contextmanager
def float32_compute(model):
    """Context in which every layer of `model` that computes in float16 or
    bfloat16 computes in float32 (its variables are float32 already under
    Keras's mixed policies); the policies are restored after. Calls (and
    traces) made inside compute in float32."""
    import keras  # noqa: PLC0415

    layers = [layer for layer in _layers_and_self(model) if _low_precision(layer)]
    originals = [layer.__dict__["_dtype_policy"] for layer in layers]
    float32 = keras.DTypePolicy("float32")
    try:
        for layer in layers:
            layer.__dict__["_dtype_policy"] = float32
        yield
    finally:
        for layer, policy in zip(layers, originals):
            layer.__dict__["_dtype_policy"] = policy


def keras_mask(tensor):
    """The Keras mask `tensor` carries, or None: its `_keras_mask`, which
    Keras keeps in a side table for tensors that take no attributes (JAX
    arrays and tracers), so `getattr` alone misses it there."""
    try:
        from keras.src.backend.common.masking import get_keras_mask  # noqa: PLC0415
    except ImportError:  # another Keras layout: the attribute only
        return getattr(tensor, "_keras_mask", None)
    return get_keras_mask(tensor)
