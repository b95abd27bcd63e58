"""Import-time checks: TensorFlow must be installed and Keras must run on it."""

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
