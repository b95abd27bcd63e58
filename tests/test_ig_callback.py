import keras
import numpy as np
import pytest

import tb_explain as tbx
from tb_explain.render import images
from tb_explain.render.colormap import LUTS


def test_image_attributions_rendered_from_the_function(tmp_path, cnn, digits, read_run):
    x, y = digits
    cb = tbx.IntegratedGradients(tmp_path, data=(x[:3], y[:3]), steps=16, freq=2)
    cnn.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    run = read_run(tmp_path)
    assert run.steps("attributions/input/heatmap") == [0, 2]
    expected = tbx.integrated_gradients(cnn, x[:3], steps=16)
    for i in range(3):
        heat = images.attribution_heatmap(expected.attributions[i])  # 8x8, upscaled x16
        image = run.image("attributions/input/heatmap", index=i)
        assert image.shape == (128, 128, 3)
        for r, c in [(0, 0), (3, 4), (7, 7)]:
            unit = heat[r, c]
            got = image[r * 16 + 8, c * 16 + 8].astype(int)
            want = LUTS["viridis"][int(np.floor(unit * 255 + 0.5))].astype(int)
            assert np.abs(got - want).max() <= 3  # float32 noise at the colormap edges
        signed = run.image("attributions/input/signed", index=i)
        total = expected.attributions[i].sum(-1)
        r, c = np.unravel_index(np.argmax(total), total.shape)
        assert signed[r * 16 + 8, c * 16 + 8, 0] > signed[r * 16 + 8, c * 16 + 8, 2]  # red
        probe = run.image("attributions/input/probe", index=i)
        assert probe.shape == (128, 128, 3)
    overlay = run.image("attributions/input/overlay")
    assert overlay.shape == (128, 128, 3)
    delta = run.value("attributions/completeness_delta", 2)
    assert delta == pytest.approx(np.max(expected.relative_delta), rel=1e-3, abs=1e-6)


def test_tabular_feature_scalars_and_markdown(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(1, name="lin")])
    model.compile("sgd", "mse")
    x = np.array([[1.0, -2.0, 0.5], [2.0, 1.0, -1.0]], "float32")
    names = ["age", "dose", "weight"]

    class Freeze(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.get_layer("lin").kernel.assign(np.array([[2.0], [0.5], [-1.5]], "float32"))

    model.fit(x, np.zeros((2, 1)), epochs=1, verbose=0, callbacks=[
        Freeze(), tbx.IntegratedGradients(tmp_path, data=x, feature_names=names, steps=3)])
    run = read_run(tmp_path)
    attr = x * np.array([2.0, 0.5, -1.5])  # exact for a linear model, zero baseline
    for j, name in enumerate(names):
        np.testing.assert_allclose(run.value(f"attributions/input/features/{name}"),
                                   np.abs(attr[:, j]).mean(), rtol=1e-5)
    table = run.text("attributions/input/ranking")
    assert table.index("| age |") < table.index("| weight |") < table.index("| dose |")
    assert "| age | 3 | +2 | +4 |" in table
    heat = run.image("attributions/input/table")
    assert heat.shape == (2 * 16, 3 * 24, 3)
    np.testing.assert_array_equal(heat[16 + 8, 12], LUTS["diverging"][255])  # +4 = max


def test_token_text_uses_vocabulary(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((4,), dtype="int32"),
                              keras.layers.Embedding(5, 3), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    tokens = np.array([[1, 2, 3, 0], [4, 4, 1, 0]], "int32")
    vocab = ["<pad>", "good", "bad", "movie", "very"]
    model.fit(tokens, np.array([0, 1]), epochs=1, verbose=0, callbacks=[
        tbx.IntegratedGradients(tmp_path, data=tokens, vocabulary=vocab, target=1, steps=8)])
    text = read_run(tmp_path).text("attributions/input/tokens")
    expected = tbx.integrated_gradients(model, tokens, target=1, steps=8).attributions
    assert f"| 1 | bad | {expected[0, 1]:+.4g} |" in text
    assert f"| 0 | very | {expected[1, 0]:+.4g} |" in text


def test_low_steps_warn_about_completeness(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32") * 4
    with pytest.warns(RuntimeWarning, match=r"completeness gap .* exceeds 5%: raise `steps` "
                                            r"\(now 1\) or use method='gausslegendre'\."):
        model.fit(x, np.zeros(4), epochs=1, verbose=0, callbacks=[
            tbx.IntegratedGradients(tmp_path, data=x, steps=1, method="riemann_left")])
    assert read_run(tmp_path).value("attributions/completeness_delta") > 0.05
    # Gauss-Legendre already: the advice is the steps alone.
    with pytest.warns(RuntimeWarning, match=r"raise `steps` \(now 1\)\.$"):
        model.fit(x, np.zeros(4), epochs=1, verbose=0, callbacks=[
            tbx.IntegratedGradients(tmp_path / "gl", data=x, steps=1)])


def test_gap_steps_cannot_close_is_named_so(tmp_path, read_run):
    """F(x) = F(baseline) (a parabola symmetric about 0.5, x = 1, baseline 0):
    the relative gap divides by ~0, and the warning says steps will not help."""
    model = keras.Sequential([keras.layers.Input((1,)),
                              keras.layers.Lambda(lambda t: (t - 0.5) ** 2 + 1e-7 * t)])
    model.compile("sgd", "mse")
    x = np.ones((2, 1), "float32")
    assert keras.ops.convert_to_numpy(model(x))[0, 0] == pytest.approx(keras.ops.convert_to_numpy(model(np.zeros((1, 1))))[0, 0])
    with pytest.warns(RuntimeWarning) as record:
        model.fit(x, np.zeros((2, 1)), epochs=1, verbose=0, callbacks=[
            tbx.IntegratedGradients(tmp_path, data=x, steps=1, method="riemann_left")])
    messages = [str(w.message) for w in record if "completeness gap" in str(w.message)]
    assert len(messages) == 1
    assert "F(x) - F(baseline) is near zero" in messages[0]
    assert "no number of steps closes it" in messages[0] and "raise `steps`" not in messages[0]
    assert read_run(tmp_path).value("attributions/completeness_delta") > 0.05


def test_bad_configuration_fails_before_training(tmp_path, cnn, digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"`method` must be one of"):
        tbx.IntegratedGradients(tmp_path, data=x, method="trapz")
    with pytest.raises(ValueError, match=r"`steps` must be >= 2 for riemann_trapezoid, got 1"):
        tbx.IntegratedGradients(tmp_path, data=x, method="riemann_trapezoid", steps=1)
    with pytest.raises(ValueError, match=r"`baseline` must be None, a number"):
        tbx.IntegratedGradients(tmp_path, data=x, baseline="black")

    class Count(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            Count.epochs += 1

    with pytest.raises(ValueError, match=r"`target` must be in \[0, 10\), got 12"):
        cnn.fit(x, y, epochs=3, verbose=0, callbacks=[
            Count(), tbx.IntegratedGradients(tmp_path, data=x[:2], target=12)])
    assert Count.epochs == 0


@pytest.mark.parametrize("callback", ["GradientNorms", "IntegratedGradients"])
def test_probe_that_does_not_fit_an_unbuilt_model_fails_after_one_batch(tmp_path, tabular,
                                                                       callback):
    from conftest import TwoDense

    x, y = tabular
    model = TwoDense()
    model.compile("sgd", "mse")
    epochs = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs.append(epoch)

    cb = getattr(tbx, callback)(tmp_path, data=(x[:2, :3], y[:2]))  # 3 features, not 5
    with pytest.raises(ValueError, match=rf"{callback}: the model 'two_dense' cannot run on "
                                         r"`data` \(the probe\)"):
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[Count(), cb])
    assert epochs == []
