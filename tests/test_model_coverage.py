"""The suite with defaults on the models people copy from keras-io (issue: model coverage).

Each fit must complete with `tbx.explain(..., data=probe)` and log every kind
of data that applies; values are checked against independent computations.
"""

import warnings

import keras
import numpy as np
import pytest
from _tf import tf

import tb_explain as tbx
from tb_explain.callbacks.base import LoggingFailedWarning
from tb_explain.compute import attribution

import zoo


def _hist_total(run, tag):
    return run.value(tag)[:, 2].sum()


@pytest.mark.tensorflow_only
def test_subclassed_model_with_custom_train_step(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.integers(0, 3, 32)
    model = zoo.CustomStep()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0,
                        callbacks=tbx.explain(tmp_path, data=(x[:4], y[:4]), steps=16))
    assert len(history.history["loss"]) == 2
    run = read_run(tmp_path)
    hparams = tbx.load_run(tmp_path).hparams
    assert hparams["parameters"] == model.count_params() == 5 * 8 + 8 + 8 * 3 + 3
    assert _hist_total(run, "weights/custom_step/hidden/kernel") == 40
    assert run.steps("activations/custom_step/hidden/dead_fraction") == [0, 1]
    np.testing.assert_allclose(run.value("gradients/loss"), history.history["loss"][-1] * 0
                               + model.compute_loss(x=x[:4], y=y[:4], y_pred=model(x[:4])),
                               rtol=1e-5)
    expected = tbx.integrated_gradients(model, x[:4], steps=16).attributions
    for j in range(5):
        np.testing.assert_allclose(run.value(f"attributions/input/features/feature_{j}"),
                                   np.abs(expected[:, j]).mean(), rtol=1e-4, atol=1e-7)
    assert "keras" not in run.tags  # no conceptual graph for subclassed models, no crash


def test_multi_output_model_explains_every_output(tmp_path, digits, read_run):
    keras.utils.set_random_seed(0)
    x, y = digits
    sizes = x.reshape(len(x), -1).mean(axis=1)
    model = zoo.two_heads()
    model.fit(x, {"digit": y, "size": sizes}, epochs=2, batch_size=16, verbose=0,
              callbacks=tbx.explain(tmp_path, data=(x[:4], {"digit": y[:4], "size": sizes[:4]}),
                                    steps=32))
    run = read_run(tmp_path)
    for output in ("digit", "size"):
        result = tbx.integrated_gradients(model, x[:4], output=output, steps=32)
        logged = run.value(f"attributions/completeness_delta/{output}", step=1)
        np.testing.assert_allclose(logged, np.max(result.relative_delta), rtol=1e-3, atol=1e-6)
        heat = run.image(f"attributions/input/{output}/heatmap", step=1)
        assert heat.shape[:2] == (128, 128)
    assert "attributions/input/heatmap" not in run.tags  # every output under its name
    # Attributions too, every output under its name
    methods_dir = tmp_path / "methods"
    model.fit(x, {"digit": y, "size": sizes}, epochs=1, verbose=0, callbacks=[
        tbx.Attributions(methods_dir, data=x[:4], methods=["saliency", "gradcam"])])
    tags = read_run(methods_dir).tags
    for output in ("digit", "size"):
        assert f"attributions/saliency/input/{output}/heatmap" in tags
        assert f"attributions/gradcam/input/{output}/overlay" in tags
        assert f"attributions/comparison/input/{output}" in tags
    saliency = tbx.attribute(model, x[:4], "saliency", output="size").attributions
    from tb_explain.render import images

    heat = images.colormap.apply(images.attribution_heatmap(saliency[0]), "viridis")
    np.testing.assert_array_equal(
        read_run(methods_dir).image("attributions/saliency/input/size/heatmap")[::16, ::16], heat)
    # output= narrows it, and the tags stay as for a single-output model
    narrowed = tmp_path / "narrowed"
    model.fit(x, {"digit": y, "size": sizes}, epochs=1, verbose=0, callbacks=[
        tbx.IntegratedGradients(narrowed, data=x[:4], output="digit", steps=8)])
    assert "attributions/input/heatmap" in read_run(narrowed).tags


def test_transformer_text_classifier_attributes_the_token_embedding(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    tokens, labels = rng.integers(1, 50, (32, 12)), rng.integers(0, 2, 32)
    model = zoo.transformer()
    model.fit(tokens, labels, epochs=2, batch_size=8, verbose=0, callbacks=tbx.explain(
        tmp_path, data=(tokens[:3], labels[:3]), steps=64,
        vocabulary={i: f"w{i}" for i in range(50)}))
    layer = model.get_layer("embedding")
    plan = attribution.plan_inputs(model, tokens[:3])
    assert plan.kinds == ["token"] and plan.embeddings[0] is layer.token_emb  # not pos_emb
    text = read_run(tmp_path).text("attributions/input/tokens")
    assert f"| 0 | w{tokens[0, 0]} |" in text
    # Completeness against a direct computation: F(x) - F(zero token embeddings)
    result = tbx.integrated_gradients(model, tokens[:3], steps=64)
    saved = layer.token_emb.embeddings.numpy()
    layer.token_emb.embeddings.assign(np.zeros_like(saved))
    base = model.predict(tokens[:3], verbose=0)[np.arange(3), result.target]
    layer.token_emb.embeddings.assign(saved)
    probs = model.predict(tokens[:3], verbose=0)[np.arange(3), result.target]
    np.testing.assert_allclose(result.attributions.sum(axis=1), probs - base, atol=2e-3)
    logged = [float(line.split("|")[3]) for line in text.splitlines()
              if line.startswith("| ") and line.split("|")[1].strip().isdigit()][:12]
    np.testing.assert_allclose(logged, result.attributions[0], rtol=2e-3, atol=2e-4)


@pytest.mark.tensorflow_only
def test_structured_model_with_strings_skips_what_has_no_gradient(tmp_path, read_run, caplog):
    keras.utils.set_random_seed(0)
    data = zoo.structured_data()
    model = zoo.structured()
    with caplog.at_level("WARNING", logger="tb_explain"):
        history = model.fit(data, epochs=2, verbose=0,
                            callbacks=tbx.explain(tmp_path, data=data.take(1), steps=16))
    assert len(history.history["loss"]) == 2
    run = read_run(tmp_path)
    note = run.text("attributions/skipped_inputs")
    assert "'thal' (strings" in note and "'sex' (integer ids" in note
    assert "thal" in caplog.text  # said once, in one line
    (x, _), = data.take(1).as_numpy_iterator()
    probe = {k: v[:4] for k, v in x.items()}
    result = tbx.integrated_gradients(model, probe, steps=16)
    assert set(result.skipped) == {"thal", "sex"}
    np.testing.assert_array_equal(result.attributions["thal"], 0.0)
    for name in ("age", "chol"):
        np.testing.assert_allclose(run.value(f"attributions/{name}/features/feature_0"),
                                   np.abs(result.attributions[name]).mean(), rtol=1e-4)
    # Completeness with the strings and ids held at their values: the gap is
    # F(x) - F(numbers zeroed, strings and ids as they are), from predict.
    fine = tbx.integrated_gradients(model, probe, steps=1024, method="riemann_trapezoid")
    zeroed = dict(probe, age=np.zeros_like(probe["age"]), chol=np.zeros_like(probe["chol"]))
    as_ds = lambda d: tf.data.Dataset.from_tensor_slices(d).batch(4)  # noqa: E731
    gap = model.predict(as_ds(probe), verbose=0)[:, 0] - model.predict(as_ds(zeroed), verbose=0)[:, 0]
    total = fine.attributions["age"].sum(1) + fine.attributions["chol"].sum(1)
    np.testing.assert_allclose(total, gap, atol=5e-5)
    assert run.steps("activations/thal_lookup/dead_fraction") == [0, 1]
    assert "activations/input/thal" not in run.tags
    assert _hist_total(run, "weights/hidden/kernel") == 9 * 8


def test_a_failing_event_warns_logs_an_alert_and_training_goes_on(tmp_path, digits, read_run,
                                                                  monkeypatch):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = tbx.IntegratedGradients(tmp_path, data=x[:2], steps=4)
    real = attribution.integrated_gradients
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            if tf is None:  # what PyTorch and JAX raise
                raise RuntimeError("out of memory (simulated)")
            raise tf.errors.ResourceExhaustedError(None, None, "out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(attribution, "integrated_gradients", flaky)
    with pytest.warns(LoggingFailedWarning, match=r"failed to log epoch 1 .*out of memory"):
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 3
    run = read_run(tmp_path)
    assert run.steps("attributions/completeness_delta") == [0, 2]  # epoch 1 skipped, not 2
    alert = run.text("attributions/alerts", step=1)
    assert "IntegratedGradients failed to log epoch 1" in alert and (
        "ResourceExhausted" if tf is not None else "out of memory") in alert


def test_logging_failures_are_errors_in_this_test_suite():
    with pytest.raises(LoggingFailedWarning):
        warnings.warn("boom", LoggingFailedWarning)


def test_setup_seconds_logged_once_per_callback(tmp_path, cnn, digits, read_run):
    x, y = digits
    cnn.fit(x, y, epochs=3, verbose=0, callbacks=tbx.explain(tmp_path, data=(x[:4], y[:4]),
                                                          freq=2, steps=8))
    run = read_run(tmp_path)
    for name in ("weight_histograms", "activation_images", "gradient_norms",
                 "integrated_gradients", "model_graph"):
        assert run.steps(f"timing/{name}_setup_seconds") == [0]
        assert run.value(f"timing/{name}_setup_seconds") > 0
        assert run.steps(f"timing/{name}_seconds")[0] == 0
