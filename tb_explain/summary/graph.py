"""Graph summaries: Keras conceptual graph, traced op graph, model summary."""

import warnings

import keras
import numpy as np

from tb_explain import backend
from tb_explain._errors import SkippedWorkWarning
from tb_explain._keras import walk_layers
from tb_explain.compute.attribution._cores import forward
from tb_explain.summary import ops

def is_graph_model(model):
    """True for Sequential and Functional models (layer graph in the config)."""
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - keras moved it
        return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"
    return isinstance(model, (keras.Sequential, Functional))


def write_conceptual_graph(model, step=0, tag="keras"):
    """Writes the model's JSON config as TensorBoard's conceptual graph.

    Only Sequential and Functional models have a layer graph in their config;
    for other models nothing is written and False is returned.
    """
    if not is_graph_model(model):
        return False
    try:
        json_string = model.to_json()
    except Exception as exc:  # A model that cannot serialize must not stop fit.
        warnings.warn(f"tb_explain: conceptual graph skipped, model.to_json() failed: {exc}",
                      SkippedWorkWarning)
        return False
    # The plugin name and version the Graphs dashboard reads.
    ops.write_tensor(tag, np.array(json_string.encode(), dtype=object), step,
                     "graph_keras_model", b"1")
    return True


def _spec(shape, dtype):
    shape = list(shape)
    if shape:
        shape[0] = None  # any batch size
    return backend.tensorflow_module().TensorSpec(shape, dtype)


def input_signature(model):
    """Returns `tf.TensorSpec`s (nested like the model's inputs), or None.

    Uses the symbolic inputs of Functional and built Sequential models, and
    the recorded build shapes of subclassed models.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        struct = getattr(model, "_inputs_struct", None)
        if struct is None:
            struct = inputs[0] if len(inputs) == 1 else inputs
        return keras.tree.map_structure(lambda t: _spec(t.shape, t.dtype), struct)
    config = model.get_build_config() if model.built else None
    shapes = (config or {}).get("input_shape")
    if shapes is None:
        return None
    dtype = model.input_dtype or "float32"
    return _map_shapes(shapes, dtype)


def _map_shapes(shapes, dtype):
    if isinstance(shapes, dict):
        return {k: _map_shapes(v, dtype) for k, v in shapes.items()}
    if isinstance(shapes, (list, tuple)) and shapes and all(
        d is None or isinstance(d, int) for d in shapes
    ):
        return _spec(shapes, dtype)
    return [_map_shapes(v, dtype) for v in shapes]  # several inputs


def trace_forward_graph(model):
    """Traces `model(inputs, training=False)` and returns its `tf.Graph`.

    Returns None on the backends other than TensorFlow (the op graph is a
    TensorFlow feature), and (with a warning) when the input signature is
    unknown.
    """
    if backend.name() != "tensorflow":
        return None
    signature = input_signature(model)
    if signature is None:
        warnings.warn("tb_explain: op graph skipped, the model's input shapes are unknown.",
                      SkippedWorkWarning)
        return None
    # The forward pass the attribution methods run: traced once for both.
    concrete = forward(model).concrete(signature)
    return concrete.graph


def write_op_graph(model):
    """Writes the traced forward-pass op graph; returns whether it did."""
    try:
        graph = trace_forward_graph(model)
    except Exception as exc:  # Tracing must not stop fit.
        warnings.warn(f"tb_explain: op graph skipped, tracing the forward pass failed: {exc}",
                      SkippedWorkWarning)
        return False
    if graph is None:
        return False
    ops.current_writer().write_graph(graph.as_graph_def().SerializeToString())
    return True


def _output_shape(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return "?"
    shapes = [tuple(t.shape) for t in keras.tree.flatten(output)]
    return ", ".join(str(s) for s in shapes)


def summary_markdown(model):
    """Returns a Markdown description of `model`: layers, shapes, parameters."""
    def count(weights):
        return int(sum(np.prod(w.shape) for w in weights))

    rows = []
    for depth, path, layer in walk_layers(model):
        rows.append((
            "&nbsp;&nbsp;" * depth + path,
            type(layer).__name__,
            _output_shape(layer),
            f"{count(layer.weights):,}",
        ))
    trainable = count(model.trainable_weights)
    total = count(model.weights)
    head = (f"**{model.name}** ({type(model).__name__}): {total:,} parameters, "
            f"{trainable:,} trainable, {total - trainable:,} non-trainable.\n\n")
    return head + ops.markdown_table(["layer (path)", "class", "output shape", "parameters"], rows)
