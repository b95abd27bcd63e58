"""Small helpers over Keras 3 internals, kept in one place."""


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
