import os

import keras
import numpy as np
import pytest

import tb_explain as tbx
from conftest import BACKEND, TwoDense
from tb_explain import backend
from tb_explain.render.colormap import LUTS

VIRIDIS = LUTS["viridis"]


def _lut(unit):
    return VIRIDIS[np.clip(np.floor(np.asarray(unit) * 255 + 0.5), 0, 255).astype(int)]


def test_feature_map_tile_equals_normalized_activation(tmp_path, cnn, digits, read_run):
    x, y = digits
    cnn.fit(x, y, epochs=1, verbose=0,
            callbacks=[tbx.ActivationImages(tmp_path, data=(x[:3], y[:3]), max_samples=3)])
    run = read_run(tmp_path)
    conv = keras.Model(cnn.inputs[0], cnn.get_layer("conv").output)
    acts = np.asarray(keras.ops.convert_to_numpy(conv(x[:3], training=False)), np.float64)  # (3, 6, 6, 4)
    low, high = acts.min(axis=(0, 1, 2)), acts.max(axis=(0, 1, 2))
    factor, cols, tile = 8, 2, 6 * 8  # 6x6 maps upscaled x8, 4 channels in 2 columns
    for sample in range(3):
        image = run.image("activations/cnn/conv", index=sample)
        assert image.shape == (2 * (tile + 1) + 1, 2 * (tile + 1) + 1, 3)
        for channel in range(4):
            r, c = divmod(channel, cols)
            for i, j in [(0, 0), (2, 5), (5, 3)]:
                pixel = image[1 + r * (tile + 1) + i * factor + 3, 1 + c * (tile + 1) + j * factor + 3]
                span = high[channel] - low[channel]
                unit = (acts[sample, i, j, channel] - low[channel]) / span if span else 0.0
                np.testing.assert_array_equal(pixel, _lut(unit))
    # the probe itself, as a grayscale image
    probe = run.image("activations/input", index=1)
    assert probe.shape[:2] == (128, 128) and (probe[..., 0] == probe[..., 2]).all()
    # histogram and dead fraction against numpy
    hist = run.value("activations/cnn/conv/histogram")
    assert hist[:, 2].sum() == acts.size
    np.testing.assert_allclose([hist[0, 0], hist[-1, 1]], [acts.min(), acts.max()], rtol=1e-6)
    dead = np.mean(np.all(acts == 0, axis=(0, 1, 2)))
    assert run.value("activations/cnn/conv/dead_fraction") == pytest.approx(dead)
    # default selection skips Input and Flatten
    assert "activations/cnn/flat" not in run.tags and "activations/cnn/out" in run.tags


def test_dead_units_counted_like_numpy(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((6,)),
                              keras.layers.Dense(10, activation="relu", name="h"),
                              keras.layers.Dense(1, activation="sigmoid", name="p")], name="net")
    model.compile("sgd", "mse")
    kernel, bias = model.get_layer("h").get_weights()
    bias[[1, 4, 7]] = -100.0  # three units that never fire
    model.get_layer("h").set_weights([kernel, bias])
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    model.fit(x, np.ones((16, 1)), epochs=1, verbose=0,
              callbacks=[tbx.ActivationImages(tmp_path, data=x[:4], layers=["h", "p"])])
    hidden = np.asarray(keras.ops.convert_to_numpy(model.get_layer("h")(x[:4])))
    run = read_run(tmp_path)
    expected = np.mean(np.all(hidden == 0, axis=0))
    assert expected >= 0.3
    assert run.value("activations/net/h/dead_fraction") == pytest.approx(expected)
    out = np.asarray(keras.ops.convert_to_numpy(model(x[:4])))
    saturated = np.mean((out < 0.01) | (out > 0.99))
    assert run.value("activations/net/p/saturated_fraction") == pytest.approx(saturated)
    assert "activations/net/h/saturated_fraction" not in run.tags  # relu: no bounds
    # 2-D outputs: one strip, a 16-pixel row per sample, normalized over the layer
    strip = run.image("activations/net/h")
    assert strip.shape[0] == 4 * 16
    width = strip.shape[1] // 10
    unit = (hidden - hidden.min()) / (hidden.max() - hidden.min())
    np.testing.assert_array_equal(strip[2 * 16 + 8, 5 * width + width // 2], _lut(unit[2, 5]))


def test_subclassed_model_outputs_captured(tmp_path, tabular, read_run):
    x, y = tabular
    model = TwoDense()
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[tbx.ActivationImages(tmp_path, data=x[:4])])
    run = read_run(tmp_path)
    hidden = np.asarray(keras.ops.convert_to_numpy(model.hidden(x[:4])), np.float64)
    tag = f"activations/{model.hidden.path}"
    assert run.steps(tag) == [0, 1]
    hist = run.value(tag + "/histogram", 1)
    np.testing.assert_allclose([hist[0, 0], hist[-1, 1]], [hidden.min(), hidden.max()], rtol=1e-6)
    saturated = np.mean(np.abs(hidden) > 0.99)
    assert run.value(tag + "/saturated_fraction", 1) == pytest.approx(saturated)


def test_nested_model_shows_inner_layers(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 3))
    inner_out = keras.layers.Conv2D(5, 3, activation="relu", name="inner_conv")(inner_in)
    backbone = keras.Model(inner_in, inner_out, name="backbone")
    inputs = keras.Input((8, 8, 3))
    features = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    outputs = keras.layers.Dense(2, name="head")(pooled)
    model = keras.Model(inputs, outputs, name="outer")
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    model.fit(x, np.zeros((4, 2)), epochs=1, verbose=0,
              callbacks=[tbx.ActivationImages(tmp_path, data=x[:2])])
    run = read_run(tmp_path)
    inner_path = backbone.get_layer("inner_conv").path
    acts = np.asarray(keras.ops.convert_to_numpy(keras.Model(inner_in, inner_out)(x[:2])))
    assert run.value(f"activations/{inner_path}/histogram")[:, 2].sum() == acts.size
    assert len(run.values(f"activations/{inner_path}")[0]) == 2 + 2  # two samples
    assert "activations/gap" in run.tags and "activations/head" in run.tags
    rgb = run.image("activations/input")
    assert rgb.shape[2] == 3 and not (rgb[..., 0] == rgb[..., 1]).all()  # RGB input


def test_multi_input_multi_output_and_rnn(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    seq = keras.Input((7, 3), name="seq")
    meta = keras.Input((4,), name="meta")
    lstm = keras.layers.LSTM(5, return_sequences=True, name="lstm")(seq)
    last = keras.layers.GRU(6, name="gru")(lstm)
    merged = keras.layers.Concatenate(name="merge")([last, meta])
    model = keras.Model({"seq": seq, "meta": meta},
                        {"a": keras.layers.Dense(1, name="a")(merged),
                         "b": keras.layers.Dense(3, activation="softmax", name="b")(merged)})
    model.compile("adam", {"a": "mse", "b": "sparse_categorical_crossentropy"})
    rng = np.random.default_rng(0)
    x = {"seq": rng.normal(size=(8, 7, 3)).astype("float32"),
         "meta": rng.normal(size=(8, 4)).astype("float32")}
    y = {"a": np.zeros((8, 1)), "b": np.zeros(8)}
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[tbx.ActivationImages(tmp_path, data=(x, y), max_samples=2)])
    run = read_run(tmp_path)
    seqs = np.asarray(keras.ops.convert_to_numpy(keras.Model(seq, lstm)(x["seq"][:2])), np.float64)  # (2, 7, 5)
    heat = run.image("activations/lstm", index=1)
    h, w, _ = heat.shape  # units down, time across, same factor
    assert h / 5 == w / 7
    f = h // 5
    unit = (seqs - seqs.min()) / (seqs.max() - seqs.min())
    np.testing.assert_array_equal(heat[3 * f + f // 2, 6 * f + f // 2], _lut(unit[1, 6, 3]))
    for tag in ("activations/gru", "activations/a", "activations/b", "activations/merge",
                "activations/input/seq", "activations/input/meta"):
        assert tag in run.tags, tag


def test_mixed_precision(tmp_path, digits, read_run):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.layers.Input((8, 8, 1)),
                                  keras.layers.Conv2D(3, 3, activation="relu", name="c"),
                                  keras.layers.Flatten(),
                                  keras.layers.Dense(10, dtype="float32", name="o")], name="mp")
        model.compile("sgd", "sparse_categorical_crossentropy")
        x, y = digits
        model.fit(x[:8], y[:8], epochs=1, verbose=0,
                  callbacks=[tbx.ActivationImages(tmp_path, data=x[:2])])
    finally:
        keras.config.set_dtype_policy("float32")
    run = read_run(tmp_path)
    assert run.value("activations/mp/c/histogram")[:, 2].sum() == 2 * 6 * 6 * 3


def test_layer_selection_errors_list_close_matches(tmp_path, cnn, digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"`layers` entry 'convv' matches no layer.*Close matches: \['conv"):
        cnn.fit(x, y, epochs=1, verbose=0,
                callbacks=[tbx.ActivationImages(tmp_path, data=x[:2], layers=["convv"])])
    with pytest.raises(TypeError, match=r"`layers` must be a list"):
        tbx.ActivationImages(tmp_path, data=x, layers="conv")
    with pytest.raises(ValueError, match=r"`max_channels` must be an int >= 1, got 0"):
        tbx.ActivationImages(tmp_path, data=x, max_channels=0)
    with pytest.raises(ValueError, match=r"sample shape \(8, 8, 3\), but the model expects \(8, 8, 1\)"):
        cnn.fit(x, y, epochs=1, verbose=0,
                callbacks=[tbx.ActivationImages(tmp_path, data=np.zeros((2, 8, 8, 3)))])
    with pytest.raises(ValueError, match=r"share one non-zero first \(sample\) dimension"):
        tbx.ActivationImages(tmp_path, data=np.zeros((0, 8, 8, 1)))


def test_regex_selection_max_channels_and_private_inputs(tmp_path, cnn, digits, read_run):
    x, y = digits
    cb = tbx.ActivationImages(tmp_path, data=x[:2], layers=["c.nv", "o.*"], max_channels=1,
                              log_inputs=False)
    cnn.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    run = read_run(tmp_path)
    images = [t for t in run.tags if run.plugin(t) == "images"]
    assert sorted(images) == ["activations/cnn/conv", "activations/cnn/out"]
    assert run.image("activations/cnn/conv").shape == (6 * 8 + 2, 6 * 8 + 2, 3)  # one channel
    assert run.steps("activations/cnn/conv") == [0, 1]


@pytest.mark.slow
def test_resnet50_event_stays_small(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    x = np.random.default_rng(0).random((2, 224, 224, 3)).astype("float32")
    cb = tbx.ActivationImages(tmp_path, data=x)
    cb.set_model(model)
    cb.on_train_begin()
    cb.log_now(0)
    cb.on_train_end()
    size = sum(os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path))
    assert size < 6e6, size
    run = read_run(tmp_path)
    shown = [t for t in run.tags if run.plugin(t) == "images" and t != "activations/input"]
    assert len(shown) == 32 and "activations/predictions" in shown
    # big models show block outputs, not the conv and BN steps inside a block
    assert all(t.endswith(("_relu", "_out", "predictions")) for t in shown), shown


def test_unbuilt_model_is_checked_after_its_first_batch(tmp_path, tabular):
    x, y = tabular
    model = TwoDense()  # built by its first batch: probe shapes are checked then
    model.compile("sgd", "mse")
    seen = {"batches": 0, "epochs": 0}

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["batches"] += 1

        def on_epoch_end(self, epoch, logs=None):
            seen["epochs"] += 1

    with pytest.raises(ValueError, match=r"`layers` entry 'hiden' matches no layer.*'hidden'"):
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[
            Count(), tbx.ActivationImages(tmp_path, data=x[:2], layers=["hiden"])])
    assert seen == {"batches": 0, "epochs": 0}  # names are known before the build
    with pytest.raises(ValueError, match=r"ActivationImages: the model 'two_dense' cannot run "
                                         r"on `data` \(the probe\)"):
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[
            Count(), tbx.ActivationImages(tmp_path, data=x[:2, :3])])  # 3 features, not 5
    # JAX and PyTorch trainers build the model before the first batch: checked then
    assert seen == {"batches": 1 if BACKEND == "tensorflow" else 0, "epochs": 0}


class _Counting(keras.layers.Layer):
    """An identity layer counting the model's eager forward passes."""

    calls = 0

    def call(self, x):
        if backend.executing_eagerly():
            _Counting.calls += 1
        return x


def _counting_cnn():
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)), _Counting(name="count"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, activation="softmax", name="out")], name="cnn")


@pytest.mark.parametrize("order", ["gradients first", "activations first"])
def test_activations_ride_on_the_gradient_pass(tmp_path, digits, read_run, order):
    """In one run, an eager GradientNorms event that comes first captures the
    activations of its probe's first rows for ActivationImages (one forward
    pass instead of two); what is logged is the same as from its own pass."""
    x, y = digits
    logged, passes, served = {}, {}, {}
    for mode in ("separate", "together"):
        keras.utils.set_random_seed(0)
        model = _counting_cnn()
        model.compile("adam", "sparse_categorical_crossentropy")
        directory = tmp_path / mode
        activation = tbx.ActivationImages(directory / "a", data=(x[:8], y[:8]))  # 4 samples
        gradient = tbx.GradientNorms(directory / ("a" if mode == "together" else "g"),
                                     data=(x[:8], y[:8]))  # 8 samples: starts with those 4
        callbacks = [gradient, activation] if order == "gradients first" else [activation,
                                                                                gradient]
        _Counting.calls = 0
        model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=callbacks)
        passes[mode] = _Counting.calls
        served[mode] = activation._capture.served
        logged[mode] = read_run(directory / "a")
    # not on JAX, where GradientNorms' pass runs under jax.value_and_grad
    shared = order == "gradients first" and BACKEND != "jax"
    assert served == {"separate": 0, "together": 3 if shared else 0}
    assert passes["together"] == passes["separate"] - served["together"]
    tags = [t for t in logged["separate"].tags if t.startswith("activations/")]
    assert any(t.endswith("/dead_fraction") for t in tags) and "activations/cnn/conv" in tags
    for tag in tags:
        for step, value in logged["separate"].values(tag).items():
            other = logged["together"].values(tag)[step]
            if value.dtype == object:  # images: PNGs of the same maps, to float rounding
                for i in range(2, len(value)):
                    a = logged["separate"].image(tag, step, index=i - 2).astype(int)
                    b = logged["together"].image(tag, step, index=i - 2).astype(int)
                    assert np.abs(a - b).max() <= 1, tag
            else:
                np.testing.assert_allclose(other, value, rtol=1e-5, atol=1e-6, err_msg=tag)
