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

from tb_explain import _threads


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
#: compile ahead instead (`trace`; 0.5-0.7 s in the hooks since XLA compiles
#: in the background).
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

    pending = []  # background compiles started by `trace`
    executables = []  # what they compiled

    def call(*args):
        while pending:  # its compile, finished first: not a second one here
            future = pending.pop(0)
            if future.exception() is None:  # a failed one fails again below, on this thread
                executables.append(future.result())
        now = values()
        for executable in executables:
            try:
                return executable(now, args)
            except (TypeError, ValueError):  # compiled for other shapes or shardings
                pass
        return run(now, args)
    call.compiled = run
    call.values = values
    call.pending = pending
    return call


#: XLA options of `trace`'s compiles of small functions (at most
#: `QUICK_COMPILE_VALUES`): its lowest backend optimization level, and XLA's
#: CPU compiler without its new fusion emitters (MLIR), with its older LLVM
#: IR ones. A callback's function runs a few times a fit, and on a small
#: model compiling costs more than all its runs. The demo CNN's suite
#: compiles its five functions in 0.4 s of CPU time, against 2.1-2.6 s with
#: XLA's defaults and 1.2-1.4 s with either option alone (on two cores, what
#: training leaves idle is less than that); its calls run 41-48 ms an event
#: in all, against 12-14 ms (integrated gradients' core, 416 rows: 38 ms
#: against 18 ms at the lowest level alone). The suite's fit (freq=5, 3
#: epochs, medians of 5 in one process): 1.03x the plain fit, against 1.08x
#: with either option alone. Bigger models keep XLA's defaults: on
#: MobileNetV2 (96x96) the older emitters change neither compile nor run
#: time, and with them ResNet50's first epoch cost 1.88 IG floors and its
#: steady epochs 1.25x (one run; 1.71 / 1.12 and 1.56 / 1.07 in two with
#: the defaults). CPU only: other platforms ignore the emitters option.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

#: Variable and argument values of a function at most which `trace` compiles
#: with `QUICK_COMPILE` (the demo CNN's: 0.1M; MobileNetV2's: 3.5M).
QUICK_COMPILE_VALUES = 1 << 20


def _compile(traced, options):
    """XLA's compile of a traced function with `options`, or with XLA's
    defaults where this jaxlib knows one of the options no more."""
    lowered = traced.lower()
    try:
        return lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as exc:
        if "compile option" not in str(exc):
            raise
        return lowered.compile()


def trace(compiled, *args):
    """Compiles a `compile` result for `args`' shapes without running it
    (`jax.jit`'s ahead-of-time compile; its calls run the executable). The
    Python traces here, so inputs the model cannot take raise now; XLA
    lowers and compiles on a background thread (`_threads.background`)
    while training runs, and a call waits for it. Small functions compile
    quickly (`QUICK_COMPILE`). Returns that compile's future."""
    values = compiled.values()
    traced = compiled.compiled.trace(values, args)
    size = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves((values, args)))
    options = QUICK_COMPILE if size <= QUICK_COMPILE_VALUES else None
    future = _threads.background(lambda: _compile(traced, options))
    compiled.pending.append(future)
    return future
