import keras
import numpy as np
import pytest

import tb_explain as tbx
from tb_explain.compute import attribution
from tb_explain.compute.quadrature import METHODS, quadrature


def _linear(units=3, features=4):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Input((features,)), keras.layers.Dense(units, name="lin")],
                            name="linear")


def _nonlinear():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.layers.Input((6,)),
                             keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(8, activation="softplus"),
                             keras.layers.Dense(3, activation="softmax")], name="nonlin")


@pytest.mark.parametrize("method", METHODS)
def test_quadrature_weights_sum_to_one_and_integrate_polynomials(method):
    alphas, weights = quadrature(method, 40)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all((alphas >= 0) & (alphas <= 1))
    # integral of a^2 on [0, 1] is 1/3
    tolerance = 1e-12 if method == "gausslegendre" else 2e-2
    assert np.sum(weights * alphas ** 2) == pytest.approx(1 / 3, abs=tolerance)


@pytest.mark.parametrize("method", METHODS)
def test_exact_on_a_linear_model(method):
    model = _linear()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)).astype("float32")
    base = rng.normal(size=(4,)).astype("float32")
    w = model.get_layer("lin").kernel.numpy()
    for target in (0, 2):
        result = tbx.integrated_gradients(model, x, target=target, baseline=base, steps=5,
                                          method=method)
        np.testing.assert_allclose(result.attributions, (x - base) * w[:, target], atol=1e-6)
        np.testing.assert_allclose(result.delta, 0.0, atol=1e-5)
        assert (result.target == target).all()


def test_completeness_on_a_nonlinear_model():
    model = _nonlinear()
    x = np.random.default_rng(2).normal(size=(6, 6)).astype("float32")
    result = tbx.integrated_gradients(model, x, steps=64)
    np.testing.assert_array_equal(result.target, np.argmax(model.predict(x, verbose=0), axis=1))
    probs = model.predict(x, verbose=0)
    base = model.predict(np.zeros_like(x), verbose=0)
    gap = probs[np.arange(6), result.target] - base[np.arange(6), result.target]
    np.testing.assert_allclose(result.attributions.reshape(6, -1).sum(1), gap, atol=1e-4)
    assert np.all(result.relative_delta < 1e-3)


def test_methods_converge_as_steps_grow():
    model = _nonlinear()
    x = np.random.default_rng(3).normal(size=(4, 6)).astype("float32") * 2
    reference = tbx.integrated_gradients(model, x, target=1, steps=128).attributions
    for method in METHODS:
        errors = [np.abs(tbx.integrated_gradients(model, x, target=1, steps=s, method=method)
                         .attributions - reference).max() for s in (4, 32, 256)]
        assert errors[2] < errors[0] and errors[2] < 2e-3, (method, errors)


def test_chunking_gives_identical_results():
    model = _nonlinear()
    x = np.random.default_rng(4).normal(size=(5, 6)).astype("float32")
    whole = tbx.integrated_gradients(model, x, steps=20)
    chunked = tbx.integrated_gradients(model, x, steps=20, batch_size=7)  # 100 rows, ragged
    np.testing.assert_allclose(chunked.attributions, whole.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked.delta, whole.delta, atol=1e-6)


@pytest.mark.tensorflow_only
def test_compiled_once_per_model_and_shape():
    model = _nonlinear()
    x = np.random.default_rng(5).normal(size=(3, 6)).astype("float32")
    for steps in (8, 8, 8):  # as the callback does, event after event
        tbx.integrated_gradients(model, x, steps=steps, batch_size=8)
    cache = attribution._CACHE[model]
    (core,) = [v for k, v in cache.items() if k != "forward"]
    assert core.function.trace_count() == 1
    assert cache["forward"].trace_count() == 1  # F(x), F(baseline)


def test_targets_baselines_and_errors():
    model = _linear()
    x = np.random.default_rng(6).normal(size=(3, 4)).astype("float32")
    w = model.get_layer("lin").kernel.numpy()
    per_sample = tbx.integrated_gradients(model, x, target=[2, 0, 1], baseline=0.5, steps=3)
    np.testing.assert_allclose(per_sample.attributions, (x - 0.5) * w[:, [2, 0, 1]].T, atol=1e-6)
    several = tbx.integrated_gradients(model, x, target=0, baseline=[0.0, np.ones(4, "float32")],
                                       steps=3)
    np.testing.assert_allclose(several.attributions, (x - 0.5) * w[:, 0], atol=1e-6)
    noise = tbx.integrated_gradients(model, x, target=0, baseline="uniform", steps=3)
    np.testing.assert_allclose(noise.delta, 0.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"`target` must be in \[0, 3\), got 3"):
        tbx.integrated_gradients(model, x, target=3)
    with pytest.raises(ValueError, match=r"`method` must be one of .*got 'simpson'"):
        tbx.integrated_gradients(model, x, method="simpson")
    with pytest.raises(ValueError, match=r"`steps` must be an int >= 1, got 0"):
        tbx.integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match=r"`baseline` of shape \(3,\) does not broadcast"):
        tbx.integrated_gradients(model, x, baseline=np.zeros(3))
    with pytest.raises(ValueError, match=r"'blur'.* needs image inputs"):
        tbx.integrated_gradients(model, x, baseline="blur")


def test_blur_baseline_and_single_unit_output():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                              keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    result = tbx.integrated_gradients(model, x, baseline="blur", steps=64)
    assert result.attributions.shape == x.shape and (result.target == 0).all()
    assert np.all(result.relative_delta < 1e-3)
    blurred = attribution._blur(x)
    assert blurred.std() < x.std() and blurred.mean() == pytest.approx(x.mean(), rel=0.05)


def test_multi_input_and_multi_output_models():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, {"score": keras.layers.Dense(1)(h),
                                           "cls": keras.layers.Dense(4)(h)})
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(3, 3)).astype("float32"), "b": rng.normal(size=(3, 2)).astype("float32")}
    with pytest.raises(ValueError, match=r"has 2 outputs: pass `output=`"):
        tbx.integrated_gradients(model, x)
    result = tbx.integrated_gradients(model, x, output="cls", target=2, steps=64)
    assert result.attributions["a"].shape == (3, 3) and result.attributions["b"].shape == (3, 2)
    out = keras.ops.convert_to_numpy(model(x)["cls"])[:, 2] - keras.ops.convert_to_numpy(model({k: np.zeros_like(v) for k, v in x.items()})["cls"])[:, 2]
    total = result.attributions["a"].sum(1) + result.attributions["b"].sum(1)
    np.testing.assert_allclose(total, out, atol=1e-4)


def test_token_inputs_attributed_per_token():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((6,), dtype="int32"),
                              keras.layers.Embedding(20, 4, name="emb"),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(2, name="head")])
    tokens = np.array([[1, 5, 7, 0, 0, 0], [3, 3, 19, 2, 8, 1]], "int32")
    result = tbx.integrated_gradients(model, tokens, target=1, steps=4)
    assert result.attributions.shape == (2, 6)
    # Linear in the embeddings: IG per token = e_t . w[:, 1] / T (zero-embedding baseline)
    e = keras.ops.convert_to_numpy(model.get_layer("emb")(tokens))
    w = model.get_layer("head").kernel.numpy()[:, 1]
    np.testing.assert_allclose(result.attributions, e @ w / 6, atol=1e-6)
    np.testing.assert_allclose(result.delta, 0.0, atol=1e-6)


def test_token_inputs_complete_through_a_nonlinear_head():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((5,), dtype="int32"),
                              keras.layers.Embedding(10, 3), keras.layers.LSTM(4),
                              keras.layers.Dense(3, activation="softmax")])
    tokens = np.array([[1, 2, 3, 4, 5], [9, 0, 9, 0, 9]], "int32")
    result = tbx.integrated_gradients(model, tokens, steps=64)
    assert result.attributions.shape == (2, 5)
    assert np.all(result.relative_delta < 1e-2)


def test_path_end_points_equal_a_forward_pass():
    """With explicit targets and a rule that includes alpha = 0 and 1, F(x) and
    F(baseline) are read off the gradient pass: they must equal the model's."""
    model = _nonlinear()
    x = np.random.default_rng(7).normal(size=(4, 6)).astype("float32")
    probs = model.predict(x, verbose=0)
    targets = np.argmax(probs, axis=1)
    fast = tbx.integrated_gradients(model, x, target=targets, baseline=0.3, steps=33,
                                    method="riemann_trapezoid")
    slow = tbx.integrated_gradients(model, x, baseline=0.3, steps=33, method="riemann_trapezoid")
    np.testing.assert_allclose(fast.output, probs[np.arange(4), targets], rtol=1e-5)
    base = model.predict(np.full_like(x, 0.3), verbose=0)[np.arange(4), targets]
    np.testing.assert_allclose(fast.baseline_output, base, rtol=1e-5)
    np.testing.assert_allclose(fast.delta, slow.delta, atol=1e-6)
    np.testing.assert_allclose(fast.attributions, slow.attributions, rtol=1e-6)
