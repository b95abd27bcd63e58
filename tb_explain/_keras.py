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
def swapped_call(layer, call):
    """Context in which `layer.call` is `call`; the original is restored after.

    Keras's `Layer.__call__` runs `self.call`, so an instance attribute set
    here intercepts every call of the layer inside any model, whatever its
    kind (Sequential, Functional, nested, subclassed).
    """
    original = layer.__dict__.get("call")
    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        if original is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", original)
