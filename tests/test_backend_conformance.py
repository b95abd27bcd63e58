"""The backend interface (`tb_explain/backend/`), pinned on the active
backend: every backend module must pass this file (the suite runs it on
TensorFlow, JAX and PyTorch), so a fourth backend is one module that does."""

import keras
import numpy as np
import pytest

from tb_explain import _threads, backend
from tb_explain.compute import stats


def _linear():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    model.get_layer("d").kernel.assign(np.array([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]], "float32"))
    model.get_layer("d").bias.assign(np.array([0.25, -0.5], "float32"))
    return model


def test_the_active_backend_is_a_module_of_the_package():
    assert backend.name() in backend.SUPPORTED
    module = backend.get()
    for name in ("to_numpy", "gather", "input_gradients", "variable_gradients", "compile",
                 "MODEL_ERRORS"):
        assert hasattr(module, name), name
    assert isinstance(backend.model_errors(), tuple)
    assert isinstance(backend.traces_gradients(), bool)
    assert backend.executing_eagerly()


def test_conversions_and_gather():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    tensor = backend.to_tensor(x)
    assert backend.is_tensor(tensor)
    np.testing.assert_array_equal(backend.to_numpy(tensor), x)
    rows = backend.gather(tensor, backend.to_tensor(np.array([3, 0, 3], np.int32)))
    np.testing.assert_array_equal(backend.to_numpy(rows), x[[3, 0, 3]])
    variable = keras.Variable(x)
    np.testing.assert_array_equal(backend.to_numpy(variable), x)
    words = backend.to_tensor(np.array(["a", "b"]))
    assert [str(w.decode() if isinstance(w, bytes) else w)
            for w in np.asarray(backend.to_numpy(words)).tolist()] == ["a", "b"]


def test_input_and_variable_gradients_equal_closed_forms():
    model = _linear()
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], np.float32)
    kernel = backend.to_numpy(model.get_layer("d").kernel)

    def total(xs):
        out = model(xs[0], training=False)
        return keras.ops.sum(out[:, 1] ** 2), out

    (grad,), out = backend.input_gradients(total, [x])
    f1 = x @ kernel[:, 1] - 0.5
    np.testing.assert_allclose(backend.to_numpy(grad), 2 * f1[:, None] * kernel[:, 1][None],
                               rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(out)[:, 1], f1, rtol=1e-6)
    unused = keras.Variable(np.ones(3, np.float32))
    grads, value = backend.variable_gradients(
        lambda: (lambda v: (v, v))(keras.ops.sum(model(x, training=False)[:, 0])),
        [model.get_layer("d").kernel, unused])
    expected = np.zeros_like(kernel)
    expected[:, 0] = x.sum(axis=0)
    np.testing.assert_allclose(backend.to_numpy(grads[0]), expected, rtol=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(grads[1]), 0.0)  # zeros, not None
    assert float(backend.to_numpy(value)) == pytest.approx(float((x @ kernel[:, 0] + 0.25).sum()))


def test_function_compiles_once_reads_updated_weights_and_follows_eager():
    model = _linear()
    x = np.ones((2, 3), np.float32)
    fn = backend.Function(lambda a: model(a, training=False), model.variables)
    first = backend.to_numpy(fn(x))
    np.testing.assert_allclose(first, x @ backend.to_numpy(model.get_layer("d").kernel)
                               + [0.25, -0.5], rtol=1e-6)
    model.get_layer("d").bias.assign(np.array([10.0, 20.0], "float32"))  # training moved on
    second = backend.to_numpy(fn(x))
    np.testing.assert_allclose(second - first, np.broadcast_to([9.75, 20.5], first.shape),
                               rtol=1e-6)
    runs = fn.trace_count()
    assert runs == (2 if backend.get().__name__.endswith("torch") else 1)  # torch: eager
    with backend.eager():
        assert backend.is_eager()
        np.testing.assert_allclose(backend.to_numpy(fn(x)), second, rtol=1e-6)
        with backend.eager(False):
            assert not backend.is_eager()
    assert not backend.is_eager()
    assert fn.trace_count() == runs  # the eager call ran the Python, not the compiled one
    always = backend.compile(lambda a: a * 2)
    with backend.eager():
        np.testing.assert_array_equal(backend.to_numpy(always(x)), 2 * x)
    assert always.trace_count() == 1 and always.python_function(3) == 6


def test_to_argument_feeds_compiled_and_eager_calls_alike():
    """`to_argument` keeps numeric numpy arrays numpy exactly where the
    backend says its compiled calls take them (`NUMPY_ARGUMENTS`), else makes
    tensors; either way a `Function` computes the same, compiled (traced once
    for repeated calls) and eagerly."""
    model = _linear()
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], np.float32)
    rows = np.array([1, 0], np.int32)
    args = [backend.to_argument(x), backend.to_argument(rows)]
    takes_numpy = getattr(backend.get(), "NUMPY_ARGUMENTS", False)
    for arg in args:
        assert isinstance(arg, np.ndarray) == takes_numpy
        assert takes_numpy or backend.is_tensor(arg)
    kernel = backend.to_numpy(model.get_layer("d").kernel)
    expected = (x @ kernel + [0.25, -0.5])[[1, 0]]
    fn = backend.Function(lambda a, r: backend.gather(model(a, training=False),
                                                      keras.ops.cast(r, "int32")),
                          model.variables)
    for _ in range(2):
        np.testing.assert_allclose(backend.to_numpy(fn(*args)), expected, rtol=1e-6)
    if not backend.runs_eagerly():
        assert fn.trace_count() == 1
    with backend.eager():
        np.testing.assert_allclose(backend.to_numpy(fn(*args)), expected, rtol=1e-6)
    text = backend.to_argument(np.array(["a", "b"]))  # strings: as `to_tensor` makes them
    assert type(text) is type(backend.to_tensor(np.array(["a", "b"])))


def test_trace_without_running_where_the_backend_can():
    calls = []
    fn = backend.Function(lambda a: (calls.append(1), a + 1)[1])
    traced = fn.trace(backend.to_tensor(np.zeros(3, np.float32)))
    assert traced == (getattr(backend.get(), "trace", None) is not None)
    if traced:  # traced once, and the call reuses it
        assert fn.concrete(backend.to_tensor(np.zeros(3, np.float32))) is not None
        np.testing.assert_array_equal(backend.to_numpy(fn(np.zeros(3, np.float32))), 1.0)
        assert fn.trace_count() == 1
    else:
        assert fn.concrete(np.zeros(3)) is None and calls == []


def test_trace_checks_inputs_at_once_and_calls_read_later_weights():
    """Where a backend compiles ahead (`trace`), the Python traces on the
    calling thread, so inputs the function cannot take raise there (in a
    callback's `on_train_begin`), also where XLA compiles in the background
    (JAX); and a later call computes with the weights of its own time."""
    if getattr(backend.get(), "trace", None) is None:
        pytest.skip("the backend compiles nothing ahead (PyTorch runs eagerly)")
    model = _linear()
    fn = backend.Function(lambda a: model(a, training=False), model.variables)
    with pytest.raises((ValueError, TypeError, *backend.model_errors())):
        fn.trace(backend.to_argument(np.zeros((2, 4), np.float32)))  # 4 features, not 3
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]], np.float32)
    assert fn.trace(backend.to_argument(x))
    model.get_layer("d").bias.assign(np.array([10.0, 20.0], np.float32))  # after the trace
    kernel = backend.to_numpy(model.get_layer("d").kernel)
    np.testing.assert_allclose(backend.to_numpy(fn(backend.to_argument(x))),
                               x @ kernel + [10.0, 20.0], rtol=1e-6)
    runs = fn.trace_count()
    fn(backend.to_argument(x))
    assert fn.trace_count() == runs  # the call reused what the trace compiled


@pytest.mark.skipif(backend.name() != "jax", reason="JAX compiles ahead in the background")
def test_jax_compiles_ahead_on_a_background_thread_once(caplog):
    """JAX: `trace` returns while XLA compiles on tb_explain's background
    thread, and the first call waits for that compile instead of compiling
    again (jax_log_compiles: one compile of the function, off the caller's
    thread)."""
    import threading  # noqa: PLC0415

    import jax  # noqa: PLC0415

    model = _linear()
    fn = backend.Function(lambda a: keras.ops.tanh(model(a, training=False)), model.variables)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    _threads.background(lambda: None).result()  # earlier tests' compiles: done, unlogged
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level("WARNING"):
            assert fn.trace(x)
            y = backend.to_numpy(fn(x))
    finally:
        jax.config.update("jax_log_compiles", False)
    compiles = [r for r in caplog.records
                if "XLA compilation of jit(run)" in r.getMessage()]
    assert len(compiles) == 1, [r.getMessage() for r in caplog.records]
    assert compiles[0].thread != threading.get_ident()
    assert compiles[0].threadName.startswith("tb_explain-background")
    kernel = backend.to_numpy(model.get_layer("d").kernel)
    np.testing.assert_allclose(y, np.tanh(x @ kernel + [0.25, -0.5]), rtol=1e-6)


@pytest.mark.skipif(backend.name() != "jax", reason="XLA compile options of JAX's trace")
@pytest.mark.parametrize("options", ["QUICK_COMPILE", "unknown"])
def test_jax_trace_compile_options_compute_the_same_values(options):
    """The XLA options `trace` compiles small functions with (the lowest
    optimization level, the older CPU emitters) give numpy's values, and
    an option this jaxlib does not know falls back to XLA's defaults
    instead of failing the compile."""
    import jax  # noqa: PLC0415

    from tb_explain.backend import jax as jax_backend  # noqa: PLC0415

    chosen = ({"xla_no_such_option_anywhere": True} if options == "unknown"
              else getattr(jax_backend, options))
    model = _linear()
    fn = backend.Function(lambda a: keras.ops.tanh(model(a, training=False)), model.variables)
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], np.float32)
    traced = fn.compiled.compiled.trace(fn.compiled.values(), (x,))
    if options == "unknown":  # the option does fail a plain compile
        with pytest.raises(jax.errors.JaxRuntimeError, match="compile option"):
            traced.lower().compile(compiler_options=chosen)
    executable = jax_backend._compile(traced, chosen)
    kernel = backend.to_numpy(model.get_layer("d").kernel)
    np.testing.assert_allclose(np.asarray(executable(fn.compiled.values(), (x,))),
                               np.tanh(x @ kernel + [0.25, -0.5]), rtol=1e-6)


@pytest.mark.skipif(backend.name() != "tensorflow", reason="Grappler is TensorFlow's")
def test_tensorflow_compiled_calls_run_without_grappler_and_restore_the_options(monkeypatch):
    """TensorFlow: a compiled call runs under this thread's function-call
    options with Grappler's meta optimizer off and the rest of the config
    kept (on a machine without GPUs), and leaves the options as they were
    (the training step's calls are never affected)."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.core.protobuf import config_pb2  # noqa: PLC0415
    from tensorflow.python.eager import context  # noqa: PLC0415

    from tb_explain.backend import tensorflow as tf_backend  # noqa: PLC0415

    assert tf_backend._rewrites_off() == (not tf.config.list_logical_devices("GPU"))
    model = _linear()
    fn = backend.Function(lambda a: keras.ops.tanh(model(a, training=False)), model.variables)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    concrete = fn.concrete(x)
    seen = []
    call = type(concrete).__call__

    def recording(self, *args, **kwargs):
        seen.append(context.context().function_call_options)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(concrete), "__call__", recording)
    before = context.context().function_call_options
    y = backend.to_numpy(fn(x))
    assert context.context().function_call_options is before
    kernel = backend.to_numpy(model.get_layer("d").kernel)
    np.testing.assert_allclose(y, np.tanh(x @ kernel + [0.25, -0.5]), rtol=1e-6)
    config = config_pb2.ConfigProto.FromString(seen[0].config_proto_serialized)
    old = config_pb2.ConfigProto.FromString(before.config_proto_serialized)
    assert config.graph_options.rewrite_options.disable_meta_optimizer == tf_backend._rewrites_off()
    for c in (config, old):  # nothing else changed
        c.graph_options.rewrite_options.disable_meta_optimizer = True
    assert config == old
    assert seen[0].executor_type == before.executor_type


def test_statistics_functions_compile_only_with_in_graph_statistics():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(5, 4)).astype(np.float32), np.array([1.0, np.nan], np.float32)]
    fn = backend.Function(lambda zero: stats.batched_statistics(
        [keras.ops.convert_to_tensor(a) for a in arrays], 7, zero=zero), statistics=True)
    assert (fn.compiled is None) == (backend.graph_statistics() is None)
    buckets, norms, nonfinite = (backend.to_numpy(t) for t in fn(stats.zero()))
    with backend.eager():
        eager = [backend.to_numpy(t) for t in fn(stats.zero())]
    np.testing.assert_allclose(buckets, eager[0], rtol=1e-12)
    np.testing.assert_array_equal(nonfinite, [0, 1])
    np.testing.assert_allclose(norms[0], np.linalg.norm(arrays[0].astype(np.float64)), rtol=1e-7)
    counts, _ = np.histogram(arrays[0].astype(np.float64), bins=7)
    np.testing.assert_array_equal(buckets[0, :, 2], counts)


def test_fused_and_with_gradient_inside_a_compiled_gradient():
    """`fused` computes what its function computes, eagerly and inside a
    compiled function; `with_gradient(y, z, m)` has `y`'s value and
    gradient `m` with respect to `z` (none through `y`)."""
    ops = keras.ops
    fused = backend.fused(lambda a, b: ops.where(ops.abs(a - b) < 0.5, a * b, (a - b) / 2.0))
    a = np.array([[0.0, 1.0, -2.0], [3.0, 0.25, 5.0]], np.float32)
    b = np.array([[0.25, -1.0, -2.0], [1.0, 0.5, -5.0]], np.float32)
    want = np.where(np.abs(a - b) < 0.5, a * b, (a - b) / 2.0)
    weights = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(backend.to_numpy(fused(backend.to_tensor(a), backend.to_tensor(b))),
                               want, rtol=1e-6)

    def core(z, y):
        m = fused(z, y)

        def total(xs):
            out = backend.with_gradient(ops.tanh(xs[1]) * 7.0, xs[0], m)
            return ops.sum(ops.multiply(out, ops.convert_to_tensor(weights))), out
        (dz, dy), out = backend.input_gradients(total, [z, y])
        return dz, dy, out

    dz, dy, out = backend.compile(core)(backend.to_tensor(a), backend.to_tensor(b))
    np.testing.assert_allclose(backend.to_numpy(out), np.tanh(b) * 7.0, rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(dz), want * weights, rtol=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(dy), np.zeros_like(b))


def test_forward_values_is_a_positive_int_or_none():
    budget = backend.forward_values()
    assert budget is None or (isinstance(budget, int) and budget > 0)
