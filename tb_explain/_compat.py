"""Import-time checks: Keras 3 on a backend tb_explain runs on."""

import os

_IMPORTED_BACKEND = None

_INSTALL_HINT = (
    "Install tb_explain with the extra of your Keras backend: `pip install 'tb_explain[cpu]'` "
    "(TensorFlow, CPU), `'tb_explain[gpu]'` (TensorFlow with CUDA), `'tb_explain[jax]'` or "
    "`'tb_explain[torch]'`."
)


def check_environment():
    """Checks that Keras 3 runs on a backend tb_explain supports, raising a
    helpful `ImportError` if not, and records that backend
    (`check_backend_unchanged`).

    Returns:
        The active backend's name.
    """
    global _IMPORTED_BACKEND
    env = os.environ.get("KERAS_BACKEND")
    try:
        import keras
    except ImportError as exc:
        if env in (None, "tensorflow") and "tensorflow" in str(exc):
            raise ImportError(
                f"tb_explain needs TensorFlow for Keras's 'tensorflow' backend (the default), "
                f"and it is not installed. {_INSTALL_HINT} With JAX or PyTorch, set "
                f"KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing keras. "
                f"(import failed: {exc})") from exc
        raise ImportError(f"tb_explain needs Keras 3. {_INSTALL_HINT} (import failed: {exc})") \
            from exc
    major = int(str(keras.__version__).split(".")[0])
    if major < 3:
        raise ImportError(f"tb_explain needs Keras 3, found keras {keras.__version__}: "
                          f"`pip install -U 'keras>=3'`.")
    from tb_explain import backend  # noqa: PLC0415

    try:
        backend.check()
        backend.get()
    except ImportError as exc:
        raise ImportError(f"{exc} {_INSTALL_HINT} (KERAS_BACKEND={env!r})") from exc
    _IMPORTED_BACKEND = backend.name()
    return _IMPORTED_BACKEND


def check_backend_unchanged():
    """Raises `RuntimeError` when Keras's backend changed since tb_explain was
    imported (`keras.config.set_backend`): models of the new backend need a
    tb_explain imported after the switch."""
    from tb_explain import backend  # noqa: PLC0415

    if _IMPORTED_BACKEND is not None and backend.name() != _IMPORTED_BACKEND:
        raise RuntimeError(
            f"tb_explain was imported with the Keras backend {_IMPORTED_BACKEND!r}, but the active "
            f"backend is now {backend.name()!r} (keras.config.set_backend). Set KERAS_BACKEND "
            f"before importing keras and tb_explain, in a new process.")
