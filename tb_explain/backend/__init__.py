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
  runs eagerly; TensorFlow's calls run without Grappler's rewrites on the
  CPU, where they cost a first call more than they save later).
  `variables`: every variable `fn` reads. `Function` (below)
  builds on it: the one compiled-function capability the rest of tb_explain
  uses.
- `MODEL_ERRORS`: what a model raises on inputs it cannot take, besides
  `ValueError` and `TypeError`.

and may define (the defaults here serve the backends without them):

- `TRACES_GRADIENTS`: True where gradients trace their function (JAX).
- `EAGER`: True where `compile` runs the function eagerly (PyTorch): each
  model call then pays Keras's Python cost per layer, so one traversal of a
  larger batch beats two traversals (default False).
- `EAGER_FIRST_EVENTS`: whether a callback's first events run eagerly
  before its functions compile (`compute.tiering`; default True). JAX:
  False, its eager operations compile each primitive for each new shape on
  first use, so in a new process eager events cost more than compiling
  ahead, on small models too (the demo CNN's suite at freq=5, the first fit
  of a process: 12 s in its hooks eagerly against 2.3 s compiling ahead;
  ResNet50's gradient statistics: a first eager event of 8.7 s against
  1.2 s for the next ones).
- `FORWARD_VALUES`: the most values of a model's widest layer output that
  one chunk of a forward-only computation (KernelSHAP, Shapley values)
  holds: where each call costs little, chunks whose buffers the allocator
  reuses run faster than one large chunk (default None: no such cap).
- `trace(compiled, *args)`: compiles a `compile` result for `args`' shapes
  without running it, and returns the backend's traced function (TensorFlow:
  the concrete function, whose graph is the op graph; JAX: the future of
  XLA's compile, which runs on a background thread while training goes on,
  the Python having traced on the calling thread); without it, nothing
  is traced ahead of a call. Inputs the function cannot take raise here.
- `statistics`: a module computing `compute.stats`' statistics inside
  compiled functions (`batched_statistics`, `norms`, `nonfinite_counts`,
  `unit_fractions`, `zero`); without it the statistics run in numpy, outside
  compiled functions (`Function(..., statistics=True)` then runs eagerly).

- `fused(fn)`: an elementwise function of tensors compiled into one kernel,
  called inside other compiled functions (TensorFlow: XLA; default `fn`
  itself: JAX's `jit` fuses it with its caller, PyTorch runs eagerly).
- `with_gradient(y, z, m)`: `y`'s value with gradient `m` (elementwise) with
  respect to `z`, and none through `y` (default: `stop_gradient(y) + (z -
  stop_gradient(z)) * m`; TensorFlow: a custom gradient, no forward op).
- `executing_eagerly()`: False while TensorFlow traces a graph (default True).
- `is_chief(model)`: whether this process writes, as far as the backend's own
  distribution says (`tf.distribute`; default True; `keras.distribution`'s
  process 0 is checked above it, in `backend.distribution`).
- `string_tensor(array)`: a string array as a tensor (default: the numpy
  array itself; only TensorFlow has string tensors).
- `numeric_tensor(array)`: a numeric numpy array as a tensor of its dtype
  (default: `keras.ops.convert_to_tensor`; TensorFlow: `tf.constant`, a
  quarter of the cost, which counts on small models' per-call setup).
- `NUMPY_ARGUMENTS`: True where a `compile` result takes numeric numpy
  arguments faster than their conversion ahead (JAX: `jax.jit`'s dispatch
  transfers them in C++, 3 us against 20-30 us for `jnp.asarray`); the
  cores' arguments then stay numpy (`to_argument`). Default False.

Example:

```python
from tb_explain import backend
grads, f = backend.input_gradients(lambda xs: (model(xs[0]).sum(), None), [x])
```
"""

import contextlib
import functools
import importlib
import pkgutil
import sys
import threading

import keras
import numpy as np

#: The Keras backends tb_explain runs on: one module of this package each
#: (a fourth backend is one more module, found by its name).
_FOUND = {info.name for info in pkgutil.iter_modules(__path__)} - {"distribution",
                                                                   "tensorflow_stats"}
SUPPORTED = tuple(n for n in ("tensorflow", "jax", "torch") if n in _FOUND) + tuple(
    sorted(_FOUND - {"tensorflow", "jax", "torch"}))

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


def _widened(array):
    """`array` as numpy; dtypes numpy lacks (ml_dtypes' bfloat16, float8)
    become float32, so every numpy computation has a real float."""
    array = np.asarray(array)
    if array.dtype.kind == "V" and array.dtype.names is None:
        return array.astype(np.float32)
    return array


def to_numpy(x):
    """`x` (a backend tensor, numpy array or number) as a numpy array;
    bfloat16 (which numpy lacks) as float32."""
    return _widened(get().to_numpy(x))


def to_numpy_any(x):
    """A tensor of any framework (a PyTorch tensor from a DataLoader, a
    TensorFlow tensor) as a numpy array, bfloat16 as float32."""
    if type(x).__module__.startswith("torch"):  # the PyTorch backend's own conversion
        return importlib.import_module("tb_explain.backend.torch").to_numpy(x)
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return _widened(x)


def to_tensor(array):
    """`array` as a tensor of the active backend; string arrays become
    TensorFlow string tensors on TensorFlow and stay numpy elsewhere (the
    other backends have no string tensors)."""
    if not isinstance(array, np.ndarray):  # (`is_tensor` costs 10-20 us a call)
        if keras.ops.is_tensor(array):
            return keras.ops.convert_to_tensor(array)  # on the backend's device
        array = np.asarray(array)
    if array.dtype.kind in "USO":
        return getattr(get(), "string_tensor", lambda a: a)(array)
    return getattr(get(), "numeric_tensor", keras.ops.convert_to_tensor)(array)


def to_argument(array):
    """`array` as an argument of a compiled function (`compile`, `Function`):
    a numeric numpy array stays numpy where the backend's compiled calls take
    it directly (`NUMPY_ARGUMENTS`), else `to_tensor(array)`."""
    if (isinstance(array, np.ndarray) and array.dtype.kind not in "USO"
            and getattr(get(), "NUMPY_ARGUMENTS", False)):
        return array
    return to_tensor(array)


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


_state = threading.local()


@contextlib.contextmanager
def eager(enabled=True):
    """Context in which `Function`s run their Python eagerly instead of their
    compiled version (this thread only; `compute.tiering` decides when)."""
    previous = getattr(_state, "eager", False)
    _state.eager = bool(enabled)
    try:
        yield
    finally:
        _state.eager = previous


def is_eager():
    """True inside `eager()`."""
    return getattr(_state, "eager", False)


def traces_gradients():
    """Whether gradients are taken by tracing the function (JAX): values
    seen inside it are tracers, which must not leave it."""
    return getattr(get(), "TRACES_GRADIENTS", False)


def runs_eagerly():
    """`EAGER` of the active backend (see the module docstring)."""
    return getattr(get(), "EAGER", False)


def eager_first_events():
    """`EAGER_FIRST_EVENTS` of the active backend (see the module docstring)."""
    return getattr(get(), "EAGER_FIRST_EVENTS", True)


def forward_values():
    """`FORWARD_VALUES` of the active backend (see the module docstring)."""
    return getattr(get(), "FORWARD_VALUES", None)


def graph_statistics():
    """The active backend's in-graph statistics module (see the module
    docstring), or None where statistics run in numpy."""
    return getattr(get(), "statistics", None)


class Function:
    """A function compiled by the active backend: the one compiled-function
    capability of tb_explain (the attribution cores, the statistics of
    weights, gradients and activations, the forward pass of the op graph).

    Calls run the compiled version, or the Python itself inside `eager()`
    (the first events of a callback: no tracing before them). `trace(*args)`
    compiles for `args`' shapes without running where the backend can
    (TensorFlow's concrete function: `concrete(*args)`; JAX traces at once
    and compiles in the background, the first call waiting for it), and
    raises at once on inputs `fn` cannot take; `trace_count()`
    says how often the compiled version ran its Python (TensorFlow and JAX:
    the traces; PyTorch, which runs eagerly: every compiled call).

    Args:
        fn: A function of tensors (nested lists allowed) returning tensors.
        variables: The Keras variables `fn` reads (its model's `variables`).
        statistics: Whether `fn` computes `compute.stats` statistics: it is
            compiled only where the backend computes them inside compiled
            functions (`graph_statistics()`), and runs eagerly elsewhere.
        follows_eager: Whether calls inside `eager()` run the Python (else
            they always run the compiled version).
        trace_with: For a statistics function that runs eagerly where the
            backend computes statistics in numpy: a function of the same
            arguments that traces its compiled parts (returning their traced
            function, or None), so `trace` compiles those ahead.

    Example:

    ```python
    f = backend.Function(lambda x: model(x, training=False), model.variables)
    f.trace(x)      # TensorFlow: traced now, run later
    y = f(x)
    ```
    """

    def __init__(self, fn, variables=(), statistics=False, follows_eager=True, trace_with=None):
        self.python_function = fn
        self.follows_eager = follows_eager
        self._trace_with = trace_with
        self._count = 0

        @functools.wraps(fn)  # TensorFlow keys its retracing statistics by `fn`'s code
        def counted(*args):
            self._count += 1
            return fn(*args)

        compiles = not statistics or graph_statistics() is not None
        self.compiled = get().compile(counted, list(variables)) if compiles else None

    def __call__(self, *args):
        if self.compiled is None:  # statistics in numpy: its Python, as it is
            return self.python_function(*args)
        if self.follows_eager and is_eager():
            return self.python_function(*args)
        return self.compiled(*args)

    def trace(self, *args):
        """Compiles for `args` without running, where the backend can;
        returns whether it did."""
        return self.concrete(*args) is not None

    def concrete(self, *args):
        """The backend's traced function for `args` (TensorFlow's concrete
        function), or None where there is none."""
        tracer = getattr(get(), "trace", None)
        if tracer is None:
            return None
        if self.compiled is None:  # statistics in numpy: its compiled parts
            return None if self._trace_with is None else self._trace_with(*args)
        return tracer(self.compiled, *args)

    def trace_count(self):
        """How often the compiled version ran its Python (see above)."""
        return self._count


def compile(fn, variables=()):  # noqa: A001 (the backend's word)
    """`fn` compiled for repeated calls, also inside `eager()`: a `Function`
    that does not follow it.

    Args:
        fn: A function of tensors (nested lists allowed) returning tensors.
        variables: The Keras variables `fn` reads (its model's `variables`).

    Returns:
        A `Function` with `fn`'s signature; `.python_function` is `fn`.
    """
    return Function(fn, variables, follows_eager=False)


def fused(fn):
    """`fn` (elementwise, on tensors) compiled into one kernel where the
    backend fuses it apart from its caller (see the module docstring)."""
    maker = getattr(get(), "fused", None)
    return fn if maker is None else maker(fn)


def with_gradient(y, z, m):
    """`y`'s value, with gradient `m` with respect to `z` (elementwise, `z`
    and `y` of one shape; `m` broadcast to it) and none through `y`."""
    own = getattr(get(), "with_gradient", None)
    if own is not None:
        return own(y, z, m)
    stop = keras.ops.stop_gradient
    return stop(y) + (z - stop(z)) * stop(m)


def model_errors():
    """Exception types a model raises on inputs it cannot take, besides
    `ValueError` and `TypeError` (TensorFlow's `InvalidArgumentError`,
    PyTorch's `RuntimeError`)."""
    return get().MODEL_ERRORS


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
