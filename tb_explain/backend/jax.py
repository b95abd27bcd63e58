"""The JAX backend: `jax.value_and_grad` over the model's variables in a
`keras.StatelessScope`, `jax.jit` with the variables' values as arguments.

A function that reads Keras variables directly inside `jax.jit` would bake
their values into the trace as constants (stale after the next training
step); here the values are arguments, mapped to the variables by a
`StatelessScope` while the function runs, as Keras's own JAX trainer does
with `stateless_call`.
"""

import jax
import keras
import numpy as np


#: What a model raises on inputs it cannot take, besides ValueError/TypeError.
MODEL_ERRORS = ()

#: `jax.value_and_grad` traces its function: values seen inside are tracers.
TRACES_GRADIENTS = True

#: `jax.jit` takes numpy arrays as arguments and transfers them in its C++
#: dispatch (3 us) faster than `jnp.asarray` ahead of the call (20-30 us): a
#: core's arguments stay numpy (`backend.to_argument`).
NUMPY_ARGUMENTS = True

#: Eager operations compile each primitive for each new shape on first use,
#: so a process's first eager events cost more than compiling ahead, on
#: every model: ResNet50's first eager gradient statistics cost 8.7 s, the
#: next 1.2 s, and the compiled ones 2-3 s to compile; the demo CNN's suite
#: at freq=5 (3 epochs) spent 12 s in its hooks in a process's first fit
#: eagerly, 2.3 s compiling ahead (0.45 s eagerly in a later fit of the same
#: shapes, whose primitives were compiled: scripts fit once). Callbacks
#: compile ahead instead.
EAGER_FIRST_EVENTS = False

#: Forward-only chunks of at most 4M values (16 MB) in the widest layer
#: output (see the PyTorch backend's): 1.2x faster than one chunk of the demo
#: CNN's 16,384 coalitions.
FORWARD_VALUES = 1 << 22


def to_numpy(x):
    if hasattr(x, "value") and not isinstance(x, (np.ndarray, jax.Array)):
        x = x.value  # a Keras variable
    return np.asarray(x)


def gather(x, indices):
    return jax.numpy.asarray(x)[indices]


def input_gradients(fn, xs):
    xs = [jax.numpy.asarray(x) for x in xs]
    (_, aux), grads = jax.value_and_grad(fn, has_aux=True)(xs)
    return list(grads), aux


def _scope(variables, values):
    return keras.StatelessScope(state_mapping=list(zip(variables, values)))


def variable_gradients(fn, variables):
    def loss_of(values):
        with _scope(variables, values):
            return fn()
    (_, aux), grads = jax.value_and_grad(loss_of, has_aux=True)([v.value for v in variables])
    return list(grads), aux


def compile(fn, variables):  # noqa: A001
    @jax.jit
    def run(values, args):
        with _scope(variables, values):
            return fn(*args)

    def values():
        return [v.value for v in variables]

    def call(*args):
        return run(values(), args)
    call.compiled = run
    call.values = values
    return call


def trace(compiled, *args):
    """Compiles a `compile` result for `args`' shapes without running it
    (`jax.jit`'s ahead-of-time lowering; later calls of the same shapes reuse
    the executable: MobileNetV2's first call 0.2 s after it, against 1.1 s
    without); returns the executable."""
    return compiled.compiled.lower(compiled.values(), args).compile()
