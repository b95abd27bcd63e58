"""tbx.attribute's methods against closed forms, Grad-CAM by hand, the sanity check."""

import keras
import numpy as np
import pytest
from _tf import tf

import tb_explain as tbx

import zoo
from tb_explain.compute.attribution import METHODS


def _linear():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="lin")])


def _cnn(name="cnn"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.Conv2D(6, 3, padding="same", name="conv2"),
                              keras.layers.GlobalAveragePooling2D(name="gap"),
                              keras.layers.Dense(3, name="head")], name=name)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_closed_forms_on_a_linear_model():
    model = _linear()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    w = model.get_layer("lin").kernel.numpy()
    for target in (0, 2):
        sal = tbx.attribute(model, x, "saliency", target=target).attributions
        np.testing.assert_allclose(sal, np.broadcast_to(np.abs(w[:, target]), x.shape), rtol=1e-6)
        gxi = tbx.attribute(model, x, "gradient_x_input", target=target).attributions
        np.testing.assert_allclose(gxi, x * w[:, target], rtol=1e-5, atol=1e-7)
        occ = tbx.attribute(model, x, "occlusion", target=target, window=1, baseline=0.0)
        np.testing.assert_allclose(occ.attributions, x * w[:, target], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"`method` must be one of .*got 'lime'"):
        tbx.attribute(model, x, "lime")
    with pytest.raises(TypeError, match=r"method 'saliency' takes no option\(s\) \['samples'\]"):
        tbx.attribute(model, x, "saliency", samples=3)


def _bilinear_half_pixel(image, height, width):
    """Resize `(h, w)` with half-pixel centres, as written in TensorFlow's kernel."""
    h, w = image.shape

    def weights(out, size):
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, size - 1)
        return low, high, src - low

    ly, hy, fy = weights(height, h)
    lx, hx, fx = weights(width, w)
    top = image[ly][:, lx] * (1 - fx) + image[ly][:, hx] * fx
    bottom = image[hy][:, lx] * (1 - fx) + image[hy][:, hx] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def test_gradcam_by_hand():
    # conv2 -> global average pooling -> dense: dF_c/dA_k(i, j) = W[k, c] / (h w), so
    # Grad-CAM = ReLU(sum_k W[k, c] / (h w) * A_k), upsampled from 6x6 to 8x8.
    model = _cnn()
    x = np.random.default_rng(1).random((3, 8, 8, 1)).astype("float32")
    result = tbx.attribute(model, x, "gradcam", target=1)
    assert result.attributions.shape == (3, 8, 8)
    conv = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], model.get_layer("conv2").output)(x))
    w = model.get_layer("head").kernel.numpy()[:, 1]
    cam = np.maximum((conv * w / 36.0).sum(-1), 0.0)
    expected = np.stack([_bilinear_half_pixel(c, 8, 8) for c in cam])
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-4, atol=1e-7)
    # an explicit layer: the first conv (6x6 as well, valid padding)
    first = tbx.attribute(model, x, "gradcam", target=1, layer="conv")
    assert first.attributions.shape == (3, 8, 8) and not np.allclose(first.attributions,
                                                                       result.attributions)


@pytest.mark.tensorflow_only
def test_smoothgrad_without_noise_is_its_base_and_seeds_reproduce():
    model = _cnn()
    x = np.random.default_rng(2).random((2, 8, 8, 1)).astype("float32")
    for base in ("saliency", "gradient_x_input"):
        plain = tbx.attribute(model, x, base).attributions
        smooth = tbx.attribute(model, x, "smoothgrad", base=base, noise=0.0, samples=4)
        np.testing.assert_allclose(smooth.attributions, plain, rtol=1e-5, atol=1e-8)
    ig = tbx.attribute(model, x, "integrated_gradients", steps=8).attributions
    smooth_ig = tbx.attribute(model, x, "smoothgrad", base="integrated_gradients", noise=0.0,
                              samples=2, steps=8).attributions
    np.testing.assert_allclose(smooth_ig, ig, rtol=1e-4, atol=1e-7)
    one = tbx.attribute(model, x, "smoothgrad", samples=6, seed=3).attributions
    again = tbx.attribute(model, x, "smoothgrad", samples=6, seed=3, batch_size=5).attributions
    other = tbx.attribute(model, x, "smoothgrad", samples=6, seed=4).attributions
    np.testing.assert_allclose(one, again, rtol=1e-5, atol=1e-8)  # chunking does not matter
    assert not np.allclose(one, other)
    # SmoothGrad's mean over noisy copies, by hand with the same noise
    from tb_explain.compute.attribution import _feeding, smoothgrad

    done = _feeding.setup(model, x)
    noise = smoothgrad.noise_for(done, 6, 0.15, 3)[0].reshape(2, 6, 8, 8, 1)
    manual = []
    for s in range(2):
        noisy = tf.constant(x[s] + noise[s])
        with tf.GradientTape() as tape:
            tape.watch(noisy)
            f = tf.reduce_sum(model(noisy)[:, done.targets[s]])
        manual.append(np.abs(tape.gradient(f, noisy).numpy()).mean(0))
    np.testing.assert_allclose(one, np.stack(manual), rtol=1e-4, atol=1e-7)


def test_randomization_test_leaves_the_model_untouched():
    model = _cnn()
    x = np.random.default_rng(3).random((3, 8, 8, 1)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    test = tbx.randomization_test(model, x, "saliency")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert test.layers == ["cnn/head", "cnn/conv2", "cnn/conv"]
    assert test.correlations.shape == (3,) and np.all(np.abs(test.correlations) <= 1)
    assert ("passes" if test.passed else "fails") in test.verdict()
    # a map that does not depend on the model at all never decorrelates
    from tb_explain.compute import metrics

    assert metrics.spearman([1, 2, 3, 3], [10, 20, 30, 30]) == pytest.approx(1.0)
    from scipy.stats import spearmanr

    a, b = np.random.default_rng(0).random((2, 50))
    assert metrics.spearman(a, np.round(b, 1)) == pytest.approx(spearmanr(a, np.round(b, 1))[0])


@pytest.mark.parametrize("kind", ["sequential", "functional_two_inputs", "nested", "subclassed",
                                  "tokens", "transformer"])
def test_every_method_on_every_model_kind(kind):
    rng = np.random.default_rng(4)
    image = rng.random((2, 8, 8, 1)).astype("float32")
    if kind == "sequential":
        model, x = _cnn(), image
    elif kind == "functional_two_inputs":
        keras.utils.set_random_seed(0)
        a, b = keras.Input((8, 8, 1), name="img"), keras.Input((3,), name="meta")
        h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="c")(a))
        model = keras.Model({"img": a, "meta": b}, keras.layers.Dense(2)(
            keras.layers.Concatenate()([h, b])))
        x = {"img": image, "meta": rng.normal(size=(2, 3)).astype("float32")}
    elif kind == "nested":
        keras.utils.set_random_seed(0)
        backbone = keras.applications.MobileNetV2(weights=None, include_top=False,
                                                  input_shape=(32, 32, 3), alpha=0.35)
        inp = keras.Input((32, 32, 3))
        model = keras.Model(inp, keras.layers.Dense(2)(
            keras.layers.GlobalAveragePooling2D()(backbone(inp))))
        x = rng.random((2, 32, 32, 3)).astype("float32")
    elif kind == "subclassed":
        model = zoo.CustomStep()
        x = rng.normal(size=(2, 5)).astype("float32")
        model(x)
    elif kind == "tokens":
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(20, 4),
                                  keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
        x = rng.integers(0, 20, (2, 6)).astype("int32")
    else:
        model, x = zoo.transformer(), rng.integers(1, 50, (2, 12))
    leaves = x if isinstance(x, dict) else {"x": x}
    for method in METHODS:
        options = {"samples": 3} if method == "smoothgrad" else {}
        if method == "smoothgrad" and kind in ("tokens", "transformer"):
            options["base"] = "saliency"
        if method == "deeplift_shap":  # two references: zeros and the second sample
            options["baselines"] = keras.tree.map_structure(
                lambda v: np.stack([np.zeros_like(v[0]), v[1]]), x)
        has_image = any(np.ndim(v) == 4 for v in leaves.values())
        if method == "gradcam" and not has_image:
            with pytest.raises(ValueError, match="Grad-CAM needs an image input"):
                tbx.attribute(model, x, method)
            continue
        result = tbx.attribute(model, x, method, **options)
        if method == "gradcam":
            image_leaf = [v for v in leaves.values() if np.ndim(v) == 4][0]
            assert result.attributions.shape == image_leaf.shape[:3]
            assert np.all(result.attributions >= 0) and np.isfinite(result.attributions).all()
            continue
        got = result.attributions if isinstance(x, dict) else {"x": result.attributions}
        for name, value in leaves.items():
            assert got[name].shape == value.shape, (method, name)
            assert np.isfinite(got[name]).all() and np.abs(got[name]).sum() > 0, (method, name)


def test_attributions_callback_logs_methods_side_by_side(tmp_path, digits, read_run):
    x, y = digits
    model = _cnn()
    model.fit(x, y % 3, epochs=2, verbose=0, callbacks=[tbx.Attributions(
        tmp_path, data=x[:3], samples=4, sanity_check=True,
        methods=("saliency", "smoothgrad", "gradcam", "occlusion"))])
    run = read_run(tmp_path)
    for method in ("saliency", "smoothgrad", "occlusion"):
        assert run.steps(f"attributions/{method}/input/heatmap") == [0, 1]
        assert run.steps(f"attributions/{method}/input/signed") == [0, 1]
    assert "attributions/gradcam/input/signed" not in run.tags
    overlay = run.image("attributions/gradcam/input/overlay")
    assert overlay.shape == (128, 128, 3)
    # the saliency heatmap is the rendering of the function's result
    from tb_explain.render import images

    saliency = tbx.attribute(model, x[:3], "saliency").attributions
    heat = images.colormap.apply(images.attribution_heatmap(saliency[0]), "viridis")
    np.testing.assert_array_equal(run.image("attributions/saliency/input/heatmap")[::16, ::16],
                                  heat)
    comparison = run.image("attributions/comparison/input", index=2)
    assert comparison.shape[1] > 3 * 128 and comparison.shape[0] > 2 * 128  # 5 panels, 3 a row
    assert run.value("attributions/comparison/input")[2:].shape == (3,)  # one image per sample
    text = run.text("attributions/sanity")
    for method in ("saliency", "smoothgrad", "gradcam", "occlusion"):
        assert f"**{method} " in text
        assert run.steps(f"attributions/sanity/{method}/cnn/conv") == [1]
    test = tbx.randomization_test(model, x[:3], "gradcam")
    assert run.value("attributions/sanity/gradcam/cnn/conv") == pytest.approx(
        test.correlations[-1], abs=1e-6)


def test_gradcam_without_an_image_input_fails_before_training(tmp_path):
    model = _linear()
    model.compile("sgd", "mse")
    x = np.zeros((4, 4), "float32")
    epochs = []
    spy = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))
    with pytest.raises(ValueError, match="Grad-CAM needs an image input"):
        model.fit(x, np.zeros((4, 3)), epochs=1, verbose=0, callbacks=[
            spy, tbx.Attributions(tmp_path, data=x, methods=["saliency", "gradcam"])])
    assert epochs == []
    with pytest.raises(TypeError, match=r"no method of \['saliency'\] takes option\(s\) \['window'\]"):
        tbx.Attributions(tmp_path, data=x, methods=["saliency"], window=3)


def test_explain_adds_attributions_with_methods(tmp_path, digits, read_run):
    x, y = digits
    model = _cnn()
    callbacks = tbx.explain(tmp_path, data=(x[:2], y[:2] % 3), methods=["saliency", "occlusion"],
                            window=2, steps=8)
    assert "Attributions" in [type(c).__name__ for c in callbacks]
    model.fit(x, y % 3, epochs=1, verbose=0, callbacks=callbacks)
    run = read_run(tmp_path)
    assert "attributions/occlusion/input/heatmap" in run.tags
    assert "attributions/input/heatmap" in run.tags  # IntegratedGradients' tags unchanged
