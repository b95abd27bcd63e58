"""The few operations that differ per Keras backend, behind one interface.

Everything above this package (compute/, callbacks/, summary/) is written on
`keras.ops`, `keras.tree`, numpy and the functions here; only the modules of
this package import `tensorflow`, `jax` or `torch`, so a backend difference
has one place to hide, and a fourth backend is one more module. The model is
Keras's own `keras/src/backend/` (one module per backend behind one API).

The interface (each backend module defines all of it):

- `to_numpy(x)`: a tensor (or numpy array) as a numpy array.
- `gather(x, indices)`: the rows `indices` (int32, in range) of `x`, inside
  compiled functions (one op; `keras.ops.take` adds a negative-index fix).
- `input_gradients(fn, xs)`: `fn(xs) -> (total, aux)`, `total` a scalar;
  returns `(d total / d xs, aux)`.
- `variable_gradients(fn, variables)`: `fn() -> (loss, aux)`; returns
  `(d loss / d variables, aux)`, zeros for variables the loss does not use.
- `compile(fn, variables)`: `fn` compiled for repeated calls on arrays of the
  same shapes (`tf.function`; `jax.jit` with the variables' current values
  passed in, so weights updated by training are read at each call; PyTorch
  runs eagerly). `variables`: every variable `fn` reads.
- `MODEL_ERRORS`: what a model raises on inputs it cannot take, besides
  `ValueError` and `TypeError`.

and may define (the defaults here serve the backends without them):

- `executing_eagerly()`: False while TensorFlow traces a graph (default True).
- `is_chief(model)`: whether this process writes, as far as the backend's own
  distribution says (`tf.distribute`; default True; `keras.distribution`'s
  process 0 is checked above it, in `backend.distribution`).
- `without_graph_rewrites()`: a context for statistics functions (default:
  nothing).
- `string_tensor(array)`: a string array as a tensor (default: the numpy
  array itself; only TensorFlow has string tensors).

Example:

```python
from tb_explain import backend
grads, f = backend.input_gradients(lambda xs: (model(xs[0]).sum(), None), [x])
```
"""

import contextlib
import importlib
import sys

import keras
import numpy as np

#: The Keras backends tb_explain runs on.
SUPPORTED = ("tensorflow", "jax", "torch")

_MODULES = {}


def name():
    """The active Keras backend's name (`keras.backend.backend()`, of the
    `keras` now imported: `keras.config.set_backend` imports it anew)."""
    return sys.modules.get("keras", keras).backend.backend()


def check():
    """Raises `ImportError` naming what to change when the active backend is
    not one tb_explain runs on."""
    active = name()
    if active not in SUPPORTED:
        raise ImportError(
            f"tb_explain runs on the Keras backends {', '.join(SUPPORTED)}, but the active "
            f"backend is {active!r}. Set KERAS_BACKEND to one of them before importing keras.")


def get():
    """The backend module of the active Keras backend."""
    active = name()
    module = _MODULES.get(active)
    if module is None:
        check()
        module = _MODULES[active] = importlib.import_module(f"tb_explain.backend.{active}")
    return module


def to_numpy(x):
    """`x` (a backend tensor, numpy array or number) as a numpy array."""
    return get().to_numpy(x)


def to_tensor(array):
    """`array` as a tensor of the active backend; string arrays become
    TensorFlow string tensors on TensorFlow and stay numpy elsewhere (the
    other backends have no string tensors)."""
    array = np.asarray(array) if not keras.ops.is_tensor(array) else array
    if isinstance(array, np.ndarray) and array.dtype.kind in "USO":
        return getattr(get(), "string_tensor", lambda a: a)(array)
    return keras.ops.convert_to_tensor(array)


def gather(x, indices):
    """The rows `indices` (int32 tensor, each in `[0, len(x))`) of tensor `x`."""
    return get().gather(x, indices)


def input_gradients(fn, xs):
    """Gradients of `fn(xs)[0]` (a scalar) with respect to the tensors `xs`.

    Args:
        fn: A function of a list of tensors returning `(total, aux)`.
        xs: A list of tensors (or numpy arrays).

    Returns:
        `(gradients, aux)`: one gradient per `xs` entry, and `fn`'s `aux`.
    """
    return get().input_gradients(fn, xs)


def variable_gradients(fn, variables):
    """Gradients of `fn()[0]` (a scalar) with respect to Keras `variables`.

    Args:
        fn: A function of nothing returning `(loss, aux)`; it reads the
            variables through the model as usual.
        variables: A list of Keras variables.

    Returns:
        `(gradients, aux)`: one gradient tensor per variable (zeros for the
        variables `loss` does not depend on), and `fn`'s `aux`.
    """
    return get().variable_gradients(fn, variables)


def compile(fn, variables=()):  # noqa: A001 (the backend's word)
    """`fn` compiled for repeated calls (see the module docstring).

    Args:
        fn: A function of tensors (nested lists allowed) returning tensors.
        variables: The Keras variables `fn` reads (its model's `variables`).

    Returns:
        A callable with `fn`'s signature; `.python_function` is `fn`.
    """
    compiled = get().compile(fn, list(variables))
    compiled.python_function = fn
    return compiled


def model_errors():
    """Exception types a model raises on inputs it cannot take, besides
    `ValueError` and `TypeError` (TensorFlow's `InvalidArgumentError`,
    PyTorch's `RuntimeError`)."""
    return get().MODEL_ERRORS


def without_graph_rewrites():
    """Context for tb_explain's statistics functions: on TensorFlow, calls
    made inside run without Grappler's rewrites (they cost more on a first
    call than they save); elsewhere, nothing."""
    return getattr(get(), "without_graph_rewrites", contextlib.nullcontext)()


def executing_eagerly():
    """False while a TensorFlow graph is traced; True otherwise."""
    return getattr(get(), "executing_eagerly", lambda: True)()


def tensorflow_module():
    """The `tensorflow` module when it is installed and importable, else None
    (tf.data inputs and the op graph need it whatever the backend)."""
    try:
        import tensorflow as tf  # noqa: PLC0415
    except ImportError:
        return None
    return tf


def is_dataset(obj):
    """Whether `obj` is a `tf.data.Dataset` (never, without TensorFlow)."""
    module = type(obj).__module__
    if not module.startswith("tensorflow"):
        return False
    tf = tensorflow_module()
    return tf is not None and isinstance(obj, tf.data.Dataset)


def dataset_elements(dataset):
    """Iterates a `tf.data.Dataset`: its tensors on TensorFlow, numpy arrays
    on the other backends (their models take no TensorFlow tensors)."""
    if name() == "tensorflow":
        return iter(dataset)
    return dataset.as_numpy_iterator()


def is_tensor(obj):
    """Whether `obj` is a tensor of the active backend (not a numpy array)."""
    return keras.ops.is_tensor(obj)
