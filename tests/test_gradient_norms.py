import keras
import numpy as np
import pytest
from _tf import tf

import tb_explain as tbx


class Snapshots(keras.callbacks.Callback):
    """Copies the trainable weights at every epoch end (runs before ours)."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [np.asarray(v.numpy(), np.float64) for v in self.model.trainable_variables]


def _mlp(name="m", reg=None, activation="relu"):
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.layers.Input((5,)),
        keras.layers.Dense(4, activation=activation, name="h", kernel_regularizer=reg),
        keras.layers.Dense(3, name="o"),
    ], name=name)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("eager_events", [3, 0], ids=["eager", "compiled"])
def test_norms_match_an_independent_gradient_tape(tmp_path, tabular, read_run, eager_events):
    x, y = tabular
    model = _mlp(reg=keras.regularizers.L2(0.05))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    probe_x, probe_y, sw = x[:8], y[:8], np.linspace(0.5, 2.0, 8).astype("float32")
    callback = tbx.GradientNorms(tmp_path, data=(probe_x, probe_y, sw))
    callback.eager_events = eager_events  # the three events run eagerly, or compiled
    model.fit(x, y, epochs=3, verbose=0, callbacks=[callback])
    assert callback._compute.trace_count() == (eager_events == 0)

    # Independent: the loss written out by hand (weighted MSE + L2 penalty).
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        pred = model(probe_x, training=False)
        per_sample = tf.reduce_mean(tf.square(pred - probe_y), axis=-1)
        loss = tf.reduce_sum(per_sample * sw) / 8.0
        loss += 0.05 * tf.reduce_sum(tf.square(model.get_layer("h").kernel))
    grads = [np.asarray(g, np.float64) for g in tape.gradient(loss, variables)]
    run = read_run(tmp_path)
    np.testing.assert_allclose(run.value("gradients/loss", 2), float(loss), rtol=1e-5)
    for v, g in zip(variables, grads):
        np.testing.assert_allclose(run.value(f"gradients/{v.path}/norm", 2),
                                   np.linalg.norm(g), rtol=1e-5)
        hist = run.value(f"gradients/{v.path}", 2)
        assert hist[:, 2].sum() == g.size
        np.testing.assert_allclose([hist[0, 0], hist[-1, 1]], [g.min(), g.max()], rtol=1e-5)
    for layer in ("m/h", "m/o"):
        expected = np.sqrt(sum(np.sum(g ** 2) for v, g in zip(variables, grads)
                               if v.path.startswith(layer + "/")))
        np.testing.assert_allclose(run.value(f"gradients/{layer}/norm", 2), expected, rtol=1e-5)
    np.testing.assert_allclose(run.value("gradients/global_norm", 2),
                               np.sqrt(sum(np.sum(g ** 2) for g in grads)), rtol=1e-5)
    assert run.steps("gradients/global_norm") == [0, 1, 2]


def test_update_ratio_matches_weight_snapshots(tmp_path, tabular, read_run):
    x, y = tabular
    model = _mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    snaps = Snapshots()
    model.fit(x, y, epochs=5, verbose=0,
              callbacks=[snaps, tbx.GradientNorms(tmp_path, data=(x[:4], y[:4]), freq=2)])
    run = read_run(tmp_path)
    assert run.steps("gradients/m/h/update_ratio") == [2, 4]  # none at the first event
    paths = [v.path for v in model.trainable_variables]
    for step, previous in ((2, 0), (4, 2)):
        for layer in ("m/h", "m/o"):
            idx = [i for i, p in enumerate(paths) if p.startswith(layer + "/")]
            update = np.sqrt(sum(np.sum((snaps.weights[step][i] - snaps.weights[previous][i]) ** 2)
                                 for i in idx))
            base = np.sqrt(sum(np.sum(snaps.weights[previous][i] ** 2) for i in idx))
            np.testing.assert_allclose(run.value(f"gradients/{layer}/update_ratio", step),
                                       update / base, rtol=1e-5)


@pytest.mark.tensorflow_only
def test_multi_output_loss_dict_and_sample_weights(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    reg = keras.layers.Dense(1, name="reg")(hidden)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(hidden)
    model = keras.Model(inputs, {"reg": reg, "cls": cls})
    model.compile("sgd", loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
                  loss_weights={"reg": 2.0, "cls": 0.5})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = {"reg": rng.normal(size=(16, 1)).astype("float32"), "cls": rng.integers(0, 3, 16)}
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[tbx.GradientNorms(tmp_path, data=(x[:6], {k: v[:6] for k, v in y.items()}))])
    with tf.GradientTape() as tape:
        out = model(x[:6], training=False)
        mse = tf.reduce_mean(tf.square(out["reg"] - y["reg"][:6]))
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y["cls"][:6], out["cls"]))
        loss = 2.0 * mse + 0.5 * ce
    grads = tape.gradient(loss, model.trainable_variables)
    run = read_run(tmp_path)
    np.testing.assert_allclose(run.value("gradients/loss"), float(loss), rtol=1e-5)
    for v, g in zip(model.trainable_variables, grads):
        np.testing.assert_allclose(run.value(f"gradients/{v.path}/norm"), np.linalg.norm(g),
                                   rtol=1e-5)


def test_vanishing_alert_names_the_layer(tmp_path, tabular, read_run):
    x, y = tabular
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Input((5,))]
    for i in range(6):  # saturated sigmoids: gradients shrink layer after layer
        layers.append(keras.layers.Dense(8, activation="sigmoid", name=f"s{i}",
                                         kernel_initializer=keras.initializers.Constant(0.8)))
    layers.append(keras.layers.Dense(3, name="out"))
    model = keras.Sequential(layers, name="deep")
    model.compile(keras.optimizers.SGD(0.0), "mse")
    with pytest.warns(RuntimeWarning, match=r"vanishing gradients: deep/s0 norm \S+ is \S+ x the"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(tmp_path, data=(x[:8], y[:8]))])
    run = read_run(tmp_path)
    alert = run.text("gradients/alerts", 0)
    assert "deep/s0" in alert and "deep/out" in alert
    first, last = run.value("gradients/deep/s0/norm"), run.value("gradients/deep/out/norm")
    assert 0 < first < 1e-4 * last
    assert "deep/s5" not in alert  # the layer next to the output is healthy


def test_exploding_alert(tmp_path, tabular, read_run):
    x, y = tabular
    model = _mlp(activation="linear")
    model.compile(keras.optimizers.SGD(0.0), "mse")

    class Blow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                for v in model.trainable_variables:
                    v.assign(v * 30.0)

    with pytest.warns(RuntimeWarning, match=r"exploding gradients: global norm .* running median"):
        model.fit(x, y, epochs=4, verbose=0,
                  callbacks=[Blow(), tbx.GradientNorms(tmp_path, data=(x[:8], y[:8]))])
    run = read_run(tmp_path)
    assert run.steps("gradients/alerts") == [3]
    norms = run.values("gradients/global_norm")
    assert norms[3] > 10 * np.median([norms[0], norms[1], norms[2]])


def test_nonfinite_alert_and_stop_on_nonfinite(tmp_path, tabular, read_run):
    x, y = tabular
    model = _mlp()
    model.compile("sgd", "mse")

    class Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                k = model.get_layer("o").kernel
                k.assign(np.full(k.shape, np.nan, "float32"))

    with pytest.warns(RuntimeWarning, match="non-finite gradients"):
        history = model.fit(x, y, epochs=10, verbose=0, callbacks=[
            Poison(), tbx.GradientNorms(tmp_path, data=(x[:8], y[:8]), stop_on_nonfinite=True)])
    assert len(history.history["loss"]) == 2  # stopped after epoch 1
    run = read_run(tmp_path)
    assert run.steps("gradients/global_norm") == [0, 1]
    alert = run.text("gradients/alerts", 1)
    assert "non-finite weights: m/o/kernel (12 NaN/Inf values)" in alert
    assert "non-finite gradients" in alert and "training stopped" in alert
    assert run.value("gradients/nonfinite_values", 1) > 0


def test_probe_errors_are_clear(tmp_path, tabular):
    x, y = tabular
    model = _mlp()
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"has no labels, but the model's compiled loss needs"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tbx.GradientNorms(tmp_path, data=x[:4])])
    with pytest.raises(ValueError, match=r"sample shape \(4,\), but the model expects \(5,\)"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(tmp_path, data=(x[:4, :4], y[:4]))])
    with pytest.raises(ValueError, match=r"`data` x holds 1 NaN/Inf values"):
        bad = x[:4].copy()
        bad[0, 0] = np.nan
        tbx.GradientNorms(tmp_path, data=(bad, y[:4]))
    with pytest.raises(ValueError, match=r"`data` y has \[3\] samples but x has 4"):
        tbx.GradientNorms(tmp_path, data=(x[:4], y[:3]))
    with pytest.raises(ValueError, match=r"`vanishing_ratio` must be in \(0.0, 1.0\), got 2.0"):
        tbx.GradientNorms(tmp_path, data=(x, y), vanishing_ratio=2)
    with pytest.raises(ValueError, match=r"`max_samples` must be an int >= 1, got 0"):
        tbx.GradientNorms(tmp_path, data=(x, y), max_samples=0)
    with pytest.raises(ValueError, match=r"tuple must be \(x,\), \(x, y\) or \(x, y, sample_w"):
        tbx.GradientNorms(tmp_path, data=(x, y, y, y))
    uncompiled = _mlp()
    uncompiled.compile("sgd")  # no loss
    with pytest.raises(ValueError, match=r"needs the model's loss"):
        cb = tbx.GradientNorms(tmp_path, data=(x, y))
        cb.set_model(uncompiled)
        cb.on_train_begin()


@pytest.mark.needs_tensorflow
def test_probe_from_dataset_keeps_first_samples(tmp_path, tabular, read_run):
    x, y = tabular
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    cb = tbx.GradientNorms(tmp_path, data=ds, max_samples=7)
    assert cb.probe.num_samples == 7
    np.testing.assert_array_equal(cb.probe.x, x[:7])
    np.testing.assert_array_equal(cb.probe.y, y[:7])


def test_explain_includes_gradients_only_with_data(tmp_path, tabular):
    x, y = tabular
    assert "GradientNorms" not in [type(c).__name__ for c in tbx.explain(tmp_path)]
    suite = tbx.explain(tmp_path, data=(x, y), histograms=False, stop_on_nonfinite=True)
    grad = [c for c in suite if isinstance(c, tbx.GradientNorms)][0]
    assert grad.histograms is False and grad.stop_on_nonfinite is True


def test_probe_dict_inputs_checked_by_name(tmp_path):
    a = keras.Input((2,), name="a")
    b = keras.Input((3,), name="b")
    out = keras.layers.Dense(1, name="o")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, out)
    model.compile("sgd", "mse")
    x = {"a": np.ones((4, 2), "float32"), "b": np.ones((4, 3), "float32")}
    y = np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match=r"`data` x lacks the model input\(s\) \['b'\]"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(tmp_path, data=({"a": x["a"]}, y))])
    with pytest.raises(ValueError, match=r"input 'b' has sample shape \(2,\), but the model"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(tmp_path, data=({"a": x["a"], "b": x["a"]}, y))])


@pytest.mark.needs_tensorflow
def test_probe_from_unbatched_dataset(tmp_path, tabular, read_run):
    x, y = tabular
    model = _mlp()
    model.compile("sgd", "mse")
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))  # single samples, not batches
    cb = tbx.GradientNorms(tmp_path, data=unbatched, max_samples=5)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.probe.num_samples == 5
    np.testing.assert_array_equal(cb.probe.x, x[:5])
    np.testing.assert_array_equal(cb.probe.y, y[:5])
    assert read_run(tmp_path).steps("gradients/global_norm") == [0]


@pytest.mark.needs_tensorflow
def test_probe_from_unbatched_dataset_recognized_by_input_rank(tmp_path, tabular):
    x, _ = tabular
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((5,)), keras.layers.Dense(5, name="d")])
    model.compile("sgd", "mse")
    # x and y both (5,) per sample: the first read (as batches) is consistent
    # but has rank 1; the model's input rank 2 tells it is single samples.
    unbatched = tf.data.Dataset.from_tensor_slices((x, x))
    cb = tbx.GradientNorms(tmp_path, data=unbatched, max_samples=3)
    model.fit(x, x, epochs=1, verbose=0, callbacks=[cb])
    np.testing.assert_array_equal(cb.probe.x, x[:3])
    assert cb.probe.num_samples == 3
