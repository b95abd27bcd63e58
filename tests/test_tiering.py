"""Tiered execution: the first events run eagerly, then the compiled functions."""

import threading

import keras
import numpy as np
import pytest
from _tf import tf

import tb_explain as tbx
from conftest import TwoDense, small_cnn
from tb_explain import _threads, backend
from tb_explain.compute import attribution, stats, tiering


def graph(fn):
    """`fn` as a TensorFlow graph, as tb_explain's compiled tier runs it."""
    return tf.function(fn, autograph=False)


def _one_event(log_dir, model, callbacks, eager_events):
    """Sets up `callbacks` and logs one event at the model's current weights."""
    for callback in callbacks:
        callback.eager_events = eager_events
    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=1, steps=1, verbose=0)
    hooks.on_train_begin()
    hooks.on_epoch_end(0)
    hooks.on_train_end()
    return callbacks


def _compare_runs(eager_run, compiled_run):
    tags = [t for t in eager_run.tags if not t.startswith("timing/")]
    assert sorted(tags) == sorted(t for t in compiled_run.tags if not t.startswith("timing/"))
    compared = 0
    for tag in tags:
        plugin = eager_run.plugin(tag)
        a, b = eager_run.value(tag), compiled_run.value(tag)
        if plugin in ("scalars", "histograms"):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=tag)
            compared += 1
        elif plugin == "images":
            for index in range(len(a) - 2):
                diff = np.abs(eager_run.image(tag, index=index).astype(int)
                              - compiled_run.image(tag, index=index).astype(int))
                assert diff.max() <= 1, tag  # the same picture, up to float rounding
            compared += 1
    return compared


@pytest.mark.parametrize("kind", ["cnn", "subclassed"])
def test_eager_events_log_what_compiled_events_log(tmp_path, digits, tabular, read_run, kind):
    if kind == "cnn":
        x, y = digits[0][:4], digits[1][:4]
        keras.utils.set_random_seed(0)
        model = small_cnn()
        model.compile("adam", "sparse_categorical_crossentropy")
    else:
        x, y = tabular[0][:8], tabular[1][:8]
        keras.utils.set_random_seed(0)
        model = TwoDense()
        model.compile("adam", "mse")
    model.fit(x, y, epochs=1, verbose=0)
    runs = {}
    for eager_events in (3, 0):
        log_dir = tmp_path / str(eager_events)
        callbacks = _one_event(log_dir, model, tbx.explain(log_dir, data=(x, y), steps=8,
                                                           target=0), eager_events)
        traced = {type(c).__name__: _traces(c) for c in callbacks}
        # eager: nothing traced; compiled: each function once
        assert all(n == (eager_events == 0) for n in traced.values() if n is not None), traced
        runs[eager_events] = read_run(log_dir)
    compared = _compare_runs(runs[3], runs[0])
    assert compared >= 10
    weights = model.trainable_variables[0]
    np.testing.assert_allclose(  # and both are right
        runs[3].value(f"weights/{weights.path}/norm"), np.linalg.norm(weights.numpy()), rtol=1e-6)


def _traces(callback):
    """How many times the callback's compiled function was traced (None: none,
    or a backend other than TensorFlow, whose compiled functions have no
    tracing count)."""
    if keras.backend.backend() != "tensorflow":
        return None
    if isinstance(callback, tbx.WeightHistograms):
        return callback._compute_fn.trace_count()
    if isinstance(callback, tbx.GradientNorms):
        return callback._compute.trace_count()
    if isinstance(callback, tbx.ActivationImages):
        return sum(f.trace_count() for f in callback._fn.functions.values())
    if isinstance(callback, tbx.IntegratedGradients):
        return sum(v.function.trace_count() for k, v in attribution._CACHE[callback.model].items()
                   if isinstance(k, tuple) and k[0] == "ig")  # one core per chunk size
    return None


@pytest.mark.tensorflow_only
def test_functions_trace_once_after_the_eager_events(tmp_path, digits):
    x, y = digits
    counts = {}
    for epochs in (3, 5):
        keras.utils.set_random_seed(0)
        model = small_cnn()
        model.compile("adam", "sparse_categorical_crossentropy")
        callbacks = tbx.explain(tmp_path / str(epochs), data=(x[:4], y[:4]), steps=8)
        for callback in callbacks:
            callback.eager_events = 3
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
        counts[epochs] = {type(c).__name__: _traces(c) for c in callbacks
                          if _traces(c) is not None}
    assert set(counts[3]) == {"WeightHistograms", "ActivationImages", "GradientNorms",
                              "IntegratedGradients"}
    assert all(n == 0 for n in counts[3].values()), counts  # a short fit never traces
    assert all(n == 1 for n in counts[5].values()), counts  # a long one once, at event 4


def test_automatic_eager_events_follow_the_model_size(tmp_path, digits):
    x, y = digits
    callback = tbx.GradientNorms(tmp_path, data=(x[:4], y[:4]))
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert callback.eager_events is None
    # JAX's eager operations compile each primitive on first use: a process's
    # first eager events cost more than compiling ahead, so none run there
    jax = keras.backend.backend() == "jax"
    assert backend.eager_first_events() is not jax
    assert callback._eager_limit == (0 if jax else tiering.SMALL_MODEL_EAGER_EVENTS)
    big = keras.Sequential([keras.layers.Input((600,)), keras.layers.Dense(2000)])
    assert tiering.eager_events(big) == (0 if jax else tiering.EAGER_EVENTS)


def test_big_models_compile_their_attribution_cores_from_the_start(tmp_path, read_run):
    if getattr(backend.get(), "trace", None) is None:
        pytest.skip("the backend runs eagerly: nothing to compile ahead")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 600)).astype("float32")
    model = keras.Sequential([keras.layers.Input((600,)), keras.layers.Dense(2000),
                              keras.layers.Dense(3)])
    assert model.count_params() > tiering.SMALL_PARAMS
    assert not tiering.small_model(model, [x])
    assert tiering.small_model(small_cnn(), [np.zeros((2, 8, 8, 1))])
    assert not tiering.small_model(small_cnn(), [np.zeros((2, 256, 256, 3))])
    model.compile("sgd", "mse")
    callback = tbx.IntegratedGradients(tmp_path, data=(x, np.zeros((2, 3), "float32")),
                                       steps=4, target=0,
                                       feature_names=[f"f{j}" for j in range(600)])
    hooks = keras.callbacks.CallbackList([callback], model=model, epochs=5, steps=1)
    hooks.on_train_begin()  # compiled here without running, as before tiering
    (core,) = [v.function for k, v in attribution._CACHE[model].items()
               if isinstance(k, tuple) and k[0] == "ig"]
    assert callback._eager_limit == 0 and core.trace_count() == 1
    hooks.on_epoch_end(0)
    hooks.on_train_end()
    assert core.trace_count() == 1  # the event ran what the warm-up compiled
    # a linear model: IG is exact, (x - 0) * the target's weights
    w = backend.to_numpy(model.layers[0].kernel) @ backend.to_numpy(model.layers[1].kernel)
    attr = x.astype(np.float64) * w[:, 0]
    run = read_run(tmp_path)
    for j in (0, 1, 599):
        np.testing.assert_allclose(run.value(f"attributions/input/features/f{j}", 0),
                                   np.abs(attr[:, j]).mean(), rtol=2e-3)


def test_integrated_gradients_compiles_from_the_start_on_small_models_too(tmp_path, digits):
    """Its core traces in `on_train_begin` on the demo CNN as well (tracing
    costs about two eager events there, and a compiled event a third to
    half of an eager one), and the events run what it compiled."""
    if getattr(backend.get(), "trace", None) is None:
        pytest.skip("the backend runs eagerly: nothing to compile ahead")
    x, y = digits
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    assert tiering.small_model(model, [x[:4]])
    callback = tbx.IntegratedGradients(tmp_path, data=(x[:4], y[:4]), steps=8)
    model.fit(x[:64], y[:64], epochs=3, verbose=0, callbacks=[callback])
    (core,) = [v.function for k, v in attribution._CACHE[model].items()
               if isinstance(k, tuple) and k[0] == "ig"]
    assert callback._eager_limit == 0 and core.trace_count() == 1


def test_gradient_statistics_of_big_models_compile_ahead(tmp_path, read_run):
    """Where the backend traces ahead (TensorFlow's concrete function, JAX's
    ahead-of-time compile), a big model's gradient statistics compile in
    `on_train_begin` without computing; on JAX, whose eager operations
    compile on first use, the first event already runs compiled."""
    if getattr(backend.get(), "trace", None) is None:
        pytest.skip("the backend runs eagerly: nothing to compile ahead")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 600)).astype("float32")
    y = rng.normal(size=(4, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((600,)), keras.layers.Dense(2000),
                              keras.layers.Dense(3)])
    model.compile("sgd", "mse")
    callback = tbx.GradientNorms(tmp_path, data=(x, y))
    hooks = keras.callbacks.CallbackList([callback], model=model, epochs=1, steps=1)
    hooks.on_train_begin()
    assert callback._eager_limit == (0 if keras.backend.backend() == "jax"
                                     else tiering.EAGER_EVENTS)
    compiled = callback._compute if callback._compute.compiled is not None else None
    traced = callback._compute.concrete(*callback._inputs, stats.zero())
    assert traced is not None
    hooks.on_epoch_end(0)
    hooks.on_train_end()
    if compiled is not None:  # TensorFlow: the statistics are in the compiled function
        assert compiled.trace_count() == 1
    # the logged loss and norms against an independent gradient (numpy, closed form)
    w1, b1 = (backend.to_numpy(v) for v in model.layers[0].weights)
    w2, b2 = (backend.to_numpy(v) for v in model.layers[1].weights)
    h = x.astype(np.float64) @ w1 + b1
    pred = h @ w2 + b2
    d_pred = 2 * (pred - y) / pred.size
    run = read_run(tmp_path)
    np.testing.assert_allclose(run.value("gradients/loss", 0), np.mean((pred - y) ** 2),
                               rtol=1e-4)
    np.testing.assert_allclose(run.value(f"gradients/{model.layers[1].kernel.path}/norm", 0),
                               np.linalg.norm(h.T @ d_pred), rtol=1e-3)


@pytest.mark.tensorflow_only
def test_eager_scope_is_per_thread_and_restored():
    calls = []
    fn = tiering.function(lambda v: (calls.append(tf.executing_eagerly()), v * 2)[1])
    with tiering.eager():
        assert tiering.is_eager()
        fn(tf.constant(1.0))
        with tiering.eager(False):
            fn(tf.constant(1.0))
        assert tiering.is_eager()
    assert not tiering.is_eager()
    assert calls == [True, False]  # the compiled call traced (not eager inside)
    assert fn.trace_count() == 1


@pytest.mark.tensorflow_only
def test_eager_statistics_equal_the_compiled_ones():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(300, 300)).astype("float32")  # own reductions when compiled
    big[5, 7] = np.inf
    tensors = [rng.normal(size=(3, 4)).astype("float32"), np.full((5,), 2.5, "float32"),
               np.array([np.nan, 1.0, -np.inf, 3.0], "float32"),
               np.array([np.nan, np.nan], "float32"), big,
               rng.integers(-5, 5, size=(7,)).astype("float64")]
    tensors = [tf.constant(t) for t in tensors]
    compiled = graph(lambda zero: stats.batched_statistics(tensors, 12, zero=zero))
    for a, b in zip(stats.batched_statistics(tensors, 12), compiled(stats.zero())):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=0)
    minus = [t * 0.5 for t in tensors]
    both = graph(lambda: (stats.norms(tensors, minus), stats.nonfinite_counts(tensors)))
    for a, b in zip((stats.norms(tensors, minus), stats.nonfinite_counts(tensors)), both()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    # and against numpy's own histogram, for the finite tensor
    counts, edges = np.histogram(tensors[0].numpy().astype(np.float64), bins=12)
    buckets = np.asarray(stats.batched_statistics(tensors, 12)[0])[0]
    np.testing.assert_array_equal(buckets[:, 2], counts)
    np.testing.assert_allclose(buckets[:, 0], edges[:-1], rtol=1e-12)


@pytest.mark.tensorflow_only
def test_pooled_statistics_equal_the_serial_and_compiled_ones(monkeypatch):
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(40, 50)).astype("float32") for _ in range(4)]
    arrays[1][3, 4] = np.nan
    arrays[2][:] = 1.5  # constant: every count in the last bucket
    arrays += [np.array([np.inf, -np.inf, 2.0], "float32"), rng.normal(size=(7,))]
    tensors = [tf.constant(a) for a in arrays]
    previous = [tf.Variable(t * 0.5) for t in tensors]
    previous[4].assign([np.inf, 1.0, 2.0])  # inf - inf: NaN, as in TensorFlow
    serial = stats._numpy_statistics(tensors, 12)
    serial_updates = [np.asarray(t) for t in stats.update_norms(tensors, previous)]
    threads = []
    original = stats._numpy_tensor_statistics

    def recording(tensor, bins):
        threads.append(threading.current_thread().name)
        return original(tensor, bins)

    monkeypatch.setattr(stats, "_numpy_tensor_statistics", recording)
    monkeypatch.setattr(_threads, "PARALLEL_VALUES", 0)
    monkeypatch.setattr(_threads, "LARGE_ITEM", 1000)  # the four 2000-value tensors
    pooled = stats._numpy_statistics(tensors, 12)
    for a, b in zip(serial, pooled):
        np.testing.assert_array_equal(a, b)
    if _threads.workers() > 1:
        assert sum(name.startswith("tb_explain") for name in threads) == 4, threads
        assert threads.count(threading.current_thread().name) == 2, threads
    assert pooled[2][1] == 1 and pooled[2][4] == 2  # NaN and +/-Inf counted
    np.testing.assert_array_equal(pooled[0][2, :, 2], [0] * 11 + [2000])
    compiled = graph(lambda zero: stats.batched_statistics(tensors, 12, zero=zero))
    for a, b in zip(pooled, compiled(stats.zero())):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=0)
    updates = [np.asarray(t) for t in stats.update_norms(tensors, previous)]
    compiled_updates = graph(lambda: stats.update_norms(tensors, previous))()
    for a, b, c in zip(updates, serial_updates, compiled_updates):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, np.asarray(c), rtol=1e-12)
    assert np.isnan(updates[0][4]) and updates[1][4] == np.inf  # ||[inf-inf, .5, 1]||, ||prev||
    with np.errstate(invalid="ignore"):
        expected = [np.linalg.norm(np.float64(a) - np.float64(p.numpy())) for a, p in
                    zip(arrays, previous)]
    np.testing.assert_allclose(updates[0], expected, rtol=1e-12)
