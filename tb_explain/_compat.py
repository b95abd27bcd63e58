"""Import-time checks: TensorFlow must be installed and Keras must run on it."""

import contextlib
import os

_INSTALL_HINT = (
    "tb_explain needs TensorFlow. Install it with the extra that fits your "
    "machine: `pip install 'tb_explain[cpu]'` (tensorflow-cpu) or "
    "`pip install 'tb_explain[gpu]'` (tensorflow[and-cuda]); an existing "
    "`tensorflow` or `tensorflow-cpu` installation works as it is."
)


def check_environment():
    """Imports TensorFlow and Keras, raising a helpful `ImportError` if unusable.

    Returns:
        The tuple `(tensorflow_module, keras_module)`.
    """
    backend = os.environ.get("KERAS_BACKEND")
    if backend is not None and backend != "tensorflow":
        raise ImportError(
            f"tb_explain works with the TensorFlow backend of Keras, but "
            f"KERAS_BACKEND={backend!r}. Set KERAS_BACKEND=tensorflow before "
            f"importing keras or tb_explain."
        )
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} (import failed: {exc})") from exc
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"tb_explain works with the TensorFlow backend of Keras, but the "
            f"active backend is {keras.backend.backend()!r} (set in "
            f"~/.keras/keras.json or KERAS_BACKEND). Set "
            f"KERAS_BACKEND=tensorflow before importing keras or tb_explain."
        )
    return tf, keras


@contextlib.contextmanager
def without_graph_rewrites():
    """Context in which compiled functions run without Grappler's rewrites.

    For tb_explain's statistics functions (weight and gradient histograms,
    activation capture): Grappler's constant folding and rewrites cost more
    on their first call than they save (ResNet50's gradient statistics: the
    first call takes 1.9 s instead of 3.0 s, and later calls 0.9 s instead of
    1.1 s). It applies to the calls made inside, on this thread only (the
    per-thread function-call options); the training step is never affected.
    Falls back to a no-op where TensorFlow's internals differ.
    """
    try:
        from tensorflow.core.protobuf import config_pb2  # noqa: PLC0415
        from tensorflow.python.eager import context  # noqa: PLC0415

        ctx = context.context()
        old = ctx.function_call_options
        config = config_pb2.ConfigProto()
        if old.config_proto_serialized:
            config.ParseFromString(old.config_proto_serialized)
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        ctx.function_call_options = context.FunctionCallOptions(
            executor_type=old.executor_type, config_proto=config)
    except (ImportError, AttributeError, TypeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        ctx.function_call_options = old
