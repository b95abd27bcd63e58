"""The TensorFlow backend: `tf.GradientTape`, `tf.function`."""

import contextlib
import functools

import numpy as np
import tensorflow as tf

from tb_explain.backend import tensorflow_stats as statistics  # noqa: F401 (the interface)


#: What a model raises on inputs it cannot take, besides ValueError/TypeError.
MODEL_ERRORS = (tf.errors.InvalidArgumentError,)


def to_numpy(x):
    if isinstance(x, (tf.Tensor, tf.Variable)):
        return x.numpy()
    if hasattr(x, "value") and isinstance(getattr(x, "value"), (tf.Tensor, tf.Variable)):
        return x.value.numpy()  # a Keras variable
    return np.asarray(x)


def gather(x, indices):
    return tf.gather(x, indices)


def input_gradients(fn, xs):
    xs = [tf.convert_to_tensor(x) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        total, aux = fn(xs)
    return tape.gradient(total, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO), aux


def variable_gradients(fn, variables):
    with tf.GradientTape() as tape:
        loss, aux = fn()
    # the tf.Variables themselves: a Keras variable's dtype is a string, which
    # the tape cannot make zeros of for a variable the loss does not use
    sources = [getattr(v, "value", v) for v in variables]
    grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [tf.convert_to_tensor(g) for g in grads], aux


def _signature(args):
    """A cheap key of `args`' trace: each leaf's shape and dtype (tensors,
    numpy arrays) or value (None, numbers, strings); None when a leaf is
    anything else (then `tf.function` matches the arguments itself)."""
    key = []
    for leaf in tf.nest.flatten(args):
        if isinstance(leaf, (tf.Tensor, np.ndarray)):
            key.append((type(leaf) is np.ndarray, tuple(leaf.shape), leaf.dtype))
        elif leaf is None or isinstance(leaf, (bool, int, float, str)):
            key.append((type(leaf), leaf))
        else:
            return None
    return tuple(key)


def compile(fn, variables):  # noqa: A001
    compiled = tf.function(fn, autograph=False, reduce_retracing=True)
    concrete = {}

    def concrete_for(args):
        """The concrete function of `args`' shapes and dtypes (traced on
        first use and kept), or None when `args` have no cheap key."""
        key = _signature(args)
        if key is None:
            return None
        function = concrete.get(key)
        if function is None:
            function = concrete[key] = compiled.get_concrete_function(*args)
        return function

    def call(*args):
        # A `tf.function` call matches its arguments against its traces in
        # Python: 0.3-0.4 ms a call, a tenth of a small model's gradient.
        # The concrete function of the same shapes and dtypes runs the same
        # graph without that matching.
        function = concrete_for(args) or compiled
        if not _rewrites_off():
            return function(*args)
        with _without_graph_rewrites():
            return function(*args)
    call.compiled = compiled
    call.concrete_for = concrete_for
    return call


def fused(fn):
    """XLA compiles `fn` into one kernel (TensorFlow runs each op of a graph
    as its own kernel: an elementwise chain reads and writes memory at
    every op)."""
    return tf.function(fn, jit_compile=True, autograph=False, reduce_retracing=True)


def with_gradient(y, z, m):
    m = tf.stop_gradient(m)

    @tf.custom_gradient
    def through(z_in):
        return tf.identity(tf.stop_gradient(y)), lambda upstream: upstream * m

    return through(z)


def trace(compiled, *args):
    """The concrete function of a `compile` result for `args`, traced now
    and kept for the calls of the same shapes and dtypes."""
    return compiled.concrete_for(args) or compiled.compiled.get_concrete_function(*args)


def is_chief(model):
    """Whether this process is the chief of its `tf.distribute` cluster (or
    worker 0 of a cluster without one); True outside a cluster."""
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    else:
        strategy = getattr(model, "distribute_strategy", None)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    if task_type == "worker":
        return "chief" not in cluster and (task_id or 0) == 0
    return False


def executing_eagerly():
    return tf.executing_eagerly()


#: FunctionCallOptions without Grappler's rewrites, by the options they replace.
_NO_REWRITES = {}


@functools.cache
def _rewrites_off():
    """Whether tb_explain's compiled calls run without Grappler's rewrites:
    on a process without GPUs (measured on CPU; on a GPU Grappler's layout
    optimizer may matter), decided once."""
    return not tf.config.list_logical_devices("GPU")


@contextlib.contextmanager
def _without_graph_rewrites():
    """Context in which compiled functions run without Grappler's rewrites.

    On the CPU they cost more on a function's first call than they save
    later: ResNet50's gradient statistics' first call takes 1.9 s instead of
    3.0 s and later calls 0.9 s instead of 1.1 s; integrated gradients over
    52 rows, first call 3.4 s instead of 6.2 s, later calls the same (2.32
    s against 2.28 s); MobileNetV2 96x96 over 204 rows: 1.05 s instead of
    1.47 s, then the same (0.39 s); the demo CNN over 408 rows: 75 ms
    instead of 95 ms, then 4.4 ms instead of 4.8 ms. It applies to the calls
    made inside, on this thread only (the per-thread function-call options,
    kept per options they replace: setting them is two attribute writes);
    the training step is never affected. Falls back to a no-op where
    TensorFlow's internals differ.
    """
    try:
        from tensorflow.python.eager import context  # noqa: PLC0415

        ctx = context.context()
        old = ctx.function_call_options
        key = (old.executor_type, old.config_proto_serialized)
        new = _NO_REWRITES.get(key)
        if new is None:
            from tensorflow.core.protobuf import config_pb2  # noqa: PLC0415

            config = config_pb2.ConfigProto()
            if key[1]:
                config.ParseFromString(key[1])
            config.graph_options.rewrite_options.disable_meta_optimizer = True
            new = _NO_REWRITES[key] = context.FunctionCallOptions(
                executor_type=old.executor_type, config_proto=config)
        ctx.function_call_options = new
    except (ImportError, AttributeError, TypeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        ctx.function_call_options = old


def string_tensor(array):
    return tf.convert_to_tensor(array)


def numeric_tensor(array):
    return tf.constant(array)
