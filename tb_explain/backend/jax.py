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

    def call(*args):
        return run([v.value for v in variables], args)
    call.compiled = run
    return call
