import warnings

import keras
import numpy as np
import pytest

import tb_explain as tbx
from conftest import TwoDense


def test_histograms_and_norms_match_numpy(tmp_path, cnn, digits, read_run):
    x, y = digits
    cnn.fit(x, y, epochs=2, batch_size=16, verbose=0,
            callbacks=[tbx.WeightHistograms(tmp_path)])
    run = read_run(tmp_path)
    paths = [w.path for w in cnn.weights]
    # trainable and non-trainable (BatchNormalization moving statistics)
    assert "cnn/bn/moving_mean" in paths and "cnn/bn/moving_variance" in paths
    for weight in cnn.weights:
        value = np.asarray(weight.numpy(), np.float64).ravel()
        tag = f"weights/{weight.path}"
        assert run.plugin(tag) == "histograms"
        assert run.steps(tag) == [0, 1]
        buckets = run.value(tag, step=1)
        assert buckets.shape == (30, 3)
        assert buckets[:, 2].sum() == value.size
        if value.min() < value.max():
            counts, edges = np.histogram(value, bins=30, range=(value.min(), value.max()))
            np.testing.assert_allclose(buckets[:, 0], edges[:-1], rtol=1e-12)
            np.testing.assert_allclose(buckets[:, 1], edges[1:], rtol=1e-12)
            np.testing.assert_array_equal(buckets[:, 2], counts)
        else:  # constant weights: all counts in the last zero-width bucket
            assert buckets[-1, 2] == value.size and buckets[0, 0] == value[0]
        norm = run.value(tag + "/norm", step=1)
        assert run.plugin(tag + "/norm") == "scalars"
        np.testing.assert_allclose(norm, np.linalg.norm(value), rtol=1e-6)
    assert run.value("weights/nonfinite_values", step=1) == 0
    assert run.value("timing/weight_histograms_seconds", step=1) > 0


def test_schedule_follows_freq_and_last_epoch(tmp_path, cnn, digits, read_run):
    x, y = digits
    callback = tbx.WeightHistograms(tmp_path, freq=3)
    callback.eager_events = 1  # epoch 0 eager, then compiled once for epochs 3 and 4
    cnn.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[callback])
    if keras.backend.backend() == "tensorflow":
        assert callback._compute_fn.trace_count() == 1
    run = read_run(tmp_path)
    assert run.steps("weights/cnn/out/kernel") == [0, 3, 4]
    assert run.steps("timing/weight_histograms_seconds") == [0, 3, 4]


def test_early_stop_logs_the_last_epoch(tmp_path, cnn, digits, read_run):
    class StopAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    x, y = digits
    cnn.fit(x, y, epochs=10, verbose=0,
            callbacks=[StopAt(), tbx.WeightHistograms(tmp_path, freq=4)])
    assert read_run(tmp_path).steps("weights/cnn/out/kernel") == [0, 1]


def test_subclassed_model_built_during_fit(tmp_path, tabular, read_run):
    x, y = tabular
    model = TwoDense()
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[tbx.WeightHistograms(tmp_path)])
    run = read_run(tmp_path)
    kernel = model.hidden.kernel
    assert run.steps(f"weights/{kernel.path}") == [0, 1]
    assert run.value(f"weights/{kernel.path}")[:, 2].sum() == 5 * 6


def test_nonfinite_weights_are_logged_and_reported(tmp_path, tabular, read_run):
    x, y = tabular
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((5,)), keras.layers.Dense(3, name="d")],
                             name="sequential")
    model.compile("sgd", "mse")

    class Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                k = model.layers[0].kernel.numpy()
                k[0, 0], k[1, 1] = np.nan, np.inf
                model.layers[0].kernel.assign(k)

    with pytest.warns(RuntimeWarning, match=r"non-finite weights at epoch 1: .*d/kernel \(2 of 15"):
        # Poison runs first, so epoch 1's event sees the NaN and the Inf.
        model.fit(x, y, epochs=2, verbose=0,
                  callbacks=[Poison(), tbx.WeightHistograms(tmp_path, images=True)])
    run = read_run(tmp_path)
    tag = "weights/sequential/d/kernel"
    assert run.steps(tag) == [0, 1]
    assert run.value(tag, step=0)[:, 2].sum() == 15
    assert run.value(tag, step=1)[:, 2].sum() == 13  # the finite values
    assert run.value("weights/nonfinite_values", step=0) == 0
    assert run.value("weights/nonfinite_values", step=1) == 2
    assert np.isnan(run.value(tag + "/norm", step=1))
    alert = run.text("weights/alerts", step=1)
    assert "sequential/d/kernel" in alert and "2 of 15" in alert
    # NaN/Inf cells are magenta in the weight image; the rest is not.
    image = run.image(tag + "/image", step=1)
    magenta = np.all(image == [255, 0, 255], axis=-1)
    assert 0 < magenta.mean() < 0.5


def test_weight_image_colours_follow_signs(tmp_path, read_run):
    """A known kernel: its image's cells are red, white and blue as signed."""
    model = keras.Sequential([keras.layers.Input((2,)), keras.layers.Dense(3, name="d")],
                             name="sequential")
    model.compile("sgd", "mse")
    kernel = np.array([[1.0, 0.0, -1.0], [0.5, -0.5, 0.0]], np.float32)
    model.layers[0].kernel.assign(kernel)

    class Freeze(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.layers[0].kernel.assign(kernel)

    model.fit(np.zeros((4, 2)), np.zeros((4, 3)), epochs=1, verbose=0,
              callbacks=[Freeze(), tbx.WeightHistograms(tmp_path, images=True)])
    image = read_run(tmp_path).image("weights/sequential/d/kernel/image")
    h, w, _ = image.shape
    cell = lambda r, c: image[int((r + 0.5) * h / 2), int((c + 0.5) * w / 3)]  # noqa: E731
    from tb_explain.render.colormap import LUTS

    lut = LUTS["diverging"]
    np.testing.assert_array_equal(cell(0, 0), lut[255])  # +max: darkest red
    np.testing.assert_array_equal(cell(0, 2), lut[0])  # -max: darkest blue
    np.testing.assert_array_equal(cell(0, 1), lut[128])  # zero: white
    np.testing.assert_array_equal(cell(1, 0), lut[191])  # +0.5 max
    assert cell(0, 0)[0] > cell(0, 0)[2] and cell(0, 2)[2] > cell(0, 2)[0]


def test_conv_kernel_image_shows_every_filter(tmp_path, cnn, digits, read_run):
    x, y = digits
    cnn.fit(x[:8], y[:8], epochs=1, verbose=0,
            callbacks=[tbx.WeightHistograms(tmp_path, images=True)])
    image = read_run(tmp_path).image("weights/cnn/conv/kernel/image")
    # 1 input channel x 4 filters of 3x3, upscaled x8, 1-pixel gaps.
    assert image.shape == (1 * 25 + 1, 4 * 25 + 1, 3)
    kernel = cnn.get_layer("conv").kernel.numpy()
    scale = np.abs(kernel).max()
    from tb_explain.render.colormap import LUTS

    expected = LUTS["diverging"][np.round((0.5 + 0.5 * kernel[0, 0, 0, 2] / scale) * 255).astype(int)]
    np.testing.assert_array_equal(image[1 + 4, 1 + 2 * 25 + 4], expected)


def test_bad_arguments_fail_at_construction(tmp_path):
    with pytest.raises(TypeError, match=r"`images` must be True or False, got 'yes'"):
        tbx.WeightHistograms(tmp_path, images="yes")
    with pytest.raises(ValueError, match=r"`bins` must be an int >= 1, got 0"):
        tbx.WeightHistograms(tmp_path, bins=0)
    with pytest.raises(ValueError, match=r"`freq` must be an int >= 1, got 0"):
        tbx.WeightHistograms(tmp_path, freq=0)
    with pytest.raises(TypeError, match=r"`freq` must be an int, got 2.5"):
        tbx.WeightHistograms(tmp_path, freq=2.5)


def test_no_warning_on_healthy_fit(tmp_path, cnn, digits):
    x, y = digits
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="tb_explain")
        cnn.fit(x, y, epochs=1, verbose=0, callbacks=[tbx.WeightHistograms(tmp_path)])
