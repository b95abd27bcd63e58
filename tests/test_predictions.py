"""Predictions: every logged metric against scikit-learn on the same predictions."""

import keras
import numpy as np
import pytest
from _tf import tf
from sklearn import metrics as skm
from tensorboard.plugins.pr_curve import metadata as pr_metadata

import tb_explain as tbx
from tb_explain.compute import metrics


def _probs(model, x):
    return model.predict(x, verbose=0, batch_size=256)


def _ece(confidence, correct, bins=15):
    """ECE computed directly, bin by bin."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence >= low) & ((confidence < high) if b < bins - 1 else (confidence <= high))
        if inside.any():
            total += inside.sum() / len(confidence) * abs(correct[inside].mean()
                                                          - confidence[inside].mean())
    return total


@pytest.fixture(scope="module")
def digit_sets():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    return (x[:600], y[:600]), (x[600:900], y[600:900]), (x[900:1000][..., ::-1, :], y[900:1000])


def _cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_multiclass_metrics_match_scikit_learn_on_two_datasets(tmp_path, digit_sets, read_run):
    (x, y), (xv, yv), (xs, ys) = digit_sets
    model = _cnn()
    names = [f"digit{i}" for i in range(10)]
    model.fit(x, y, epochs=2, verbose=0, callbacks=[tbx.Predictions(
        tmp_path, {"train": (x, y), "val": (xv, yv), "flipped": (xs, ys)}, class_names=names,
        batch_size=128)])
    run = read_run(tmp_path)
    for name, (xd, yd) in {"train": (x, y), "val": (xv, yv), "flipped": (xs, ys)}.items():
        probs = _probs(model, xd)
        pred = probs.argmax(1)
        tag = f"outputs/{name}"
        assert run.value(f"{tag}/accuracy") == pytest.approx(skm.accuracy_score(yd, pred), abs=1e-6)
        labels = list(range(10))
        p, r, f, _ = skm.precision_recall_fscore_support(yd, pred, labels=labels, zero_division=0)
        for c in range(10):
            assert run.value(f"{tag}/precision/digit{c}") == pytest.approx(p[c], abs=1e-6)
            assert run.value(f"{tag}/recall/digit{c}") == pytest.approx(r[c], abs=1e-6)
            assert run.value(f"{tag}/f1/digit{c}") == pytest.approx(f[c], abs=1e-6)
            if 0 < (yd == c).sum() < len(yd):
                auc = skm.roc_auc_score(yd == c, probs[:, c])
                assert run.value(f"{tag}/roc_auc/digit{c}") == pytest.approx(auc, abs=1e-6)
        assert run.value(f"{tag}/macro_f1") == pytest.approx(
            skm.f1_score(yd, pred, labels=labels, average="macro", zero_division=0), abs=1e-6)
        conf = probs.max(1)
        assert run.value(f"{tag}/ece") == pytest.approx(_ece(conf, pred == yd), abs=1e-6)
        evaluated = model.evaluate(xd, yd, verbose=0, batch_size=128, return_dict=True)["loss"]
        assert run.value(f"{tag}/loss") == pytest.approx(evaluated, rel=1e-5)
        matrix = skm.confusion_matrix(yd, pred, labels=labels)
        text = run.text(f"{tag}/confusion")
        for c in (0, 7):
            row = "| " + " | ".join([names[c]] + [str(v) for v in matrix[c]]) + " |"
            assert row in text
        # PR curve of class 3 against a direct count at threshold index 100 (0.5)
        curve = run.value(f"{tag}/pr_curve/digit3")
        i = 100
        bucket = np.floor(probs[:, 3] * 200).astype(int)
        assert curve[0, i] == ((yd == 3) & (bucket >= i)).sum()  # true positives
        assert curve[1, i] == ((yd != 3) & (bucket >= i)).sum()  # false positives
        assert run.plugin(f"{tag}/pr_curve/digit3") == pr_metadata.PLUGIN_NAME
        hist = run.value(f"{tag}/confidence")
        assert hist[:, 2].sum() == len(yd)
        assert run.image(f"{tag}/confusion_matrix").shape[0] > 200
        assert run.image(f"{tag}/calibration").shape == (385, 370, 3)
    mistakes = run.image("outputs/val/mistakes")
    assert mistakes.shape[0] > 96 and mistakes.shape[1] > 4 * 96
    diagnostics = run.text("outputs/diagnostics")
    acc = {d: run.value(f"outputs/{d}/accuracy") for d in ("train", "val", "flipped")}
    assert f"{acc['flipped']:.4f} ({acc['flipped'] - acc['train']:+.4f})" in diagnostics
    assert "lowest recall" in diagnostics


def test_binary_with_logits_and_one_hot_multiclass(tmp_path, read_run):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=300) > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])  # a logit
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[tbx.Predictions(
        tmp_path, (x, y), class_names=["neg", "pos"])])
    run = read_run(tmp_path)
    p = 1 / (1 + np.exp(-model.predict(x, verbose=0)[:, 0]))
    pred = (p >= 0.5).astype(int)
    assert run.value("outputs/eval/accuracy") == pytest.approx(skm.accuracy_score(y, pred))
    assert run.value("outputs/eval/precision") == pytest.approx(skm.precision_score(y, pred))
    assert run.value("outputs/eval/recall") == pytest.approx(skm.recall_score(y, pred))
    assert run.value("outputs/eval/f1") == pytest.approx(skm.f1_score(y, pred))
    assert run.value("outputs/eval/roc_auc") == pytest.approx(skm.roc_auc_score(y, p), abs=1e-6)
    conf = np.maximum(p, 1 - p)
    assert run.value("outputs/eval/ece") == pytest.approx(_ece(conf, pred == y), abs=1e-6)
    assert "| neg |" in run.text("outputs/eval/confusion")
    assert "outputs/eval/pr_curve" in run.tags
    table = run.text("outputs/eval/mistakes")  # a table input: feature values
    assert table.count("\n| ") == 8 and "| pos | neg |" in table or "| neg | pos |" in table


def test_multilabel_and_regression_outputs_of_one_model(tmp_path, read_run):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 6)).astype("float32")
    tags = (x[:, :3] > 0).astype("float32")
    value = (x[:, 3] * 2 + x[:, 4]).astype("float32")
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    model = keras.Model(inp, {"tags": keras.layers.Dense(3, activation="sigmoid", name="tags")(h),
                              "value": keras.layers.Dense(1, name="value")(h)})
    model.compile("adam", {"tags": "binary_crossentropy", "value": "mse"})
    data = {"a": (x[:128], {"tags": tags[:128], "value": value[:128]}),
            "b": (x[128:], {"tags": tags[128:], "value": value[128:]})}
    if tf is not None:  # streamed from a dataset where TensorFlow is installed
        data["b"] = tf.data.Dataset.from_tensor_slices(data["b"]).batch(50)
    model.fit(x, {"tags": tags, "value": value}, epochs=2, verbose=0,
              callbacks=[tbx.Predictions(tmp_path, data, class_names={"tags": ["p", "q", "r"]})])
    run = read_run(tmp_path)
    for name, rows in (("a", slice(0, 128)), ("b", slice(128, 256))):
        out = model.predict(x[rows], verbose=0)
        pred = (out["tags"] >= 0.5).astype(int)
        truth = tags[rows].astype(int)
        assert run.value(f"outputs/{name}/tags/accuracy") == pytest.approx(
            skm.accuracy_score(truth, pred))
        f1 = skm.f1_score(truth, pred, average=None, zero_division=0)
        for c, label in enumerate("pqr"):
            assert run.value(f"outputs/{name}/tags/f1/{label}") == pytest.approx(f1[c])
            assert run.value(f"outputs/{name}/tags/roc_auc/{label}") == pytest.approx(
                skm.roc_auc_score(truth[:, c], out["tags"][:, c]), abs=1e-6)
        v = out["value"][:, 0]
        assert run.value(f"outputs/{name}/value/mae") == pytest.approx(
            skm.mean_absolute_error(value[rows], v), rel=1e-5)
        assert run.value(f"outputs/{name}/value/rmse") == pytest.approx(
            skm.root_mean_squared_error(value[rows], v), rel=1e-5)
        assert run.value(f"outputs/{name}/value/r2") == pytest.approx(
            skm.r2_score(value[rows], v), rel=1e-5, abs=1e-6)
        assert run.value(f"outputs/{name}/value/residuals")[:, 2].sum() == rows.stop - rows.start
        assert run.image(f"outputs/{name}/value/predicted_vs_true").shape == (375, 380, 3)
        evaluated = model.evaluate(x[rows], {"tags": tags[rows], "value": value[rows]}, verbose=0,
                                   batch_size=256 if name == "a" else 50, return_dict=True)
        assert run.value(f"outputs/{name}/loss") == pytest.approx(evaluated["loss"], rel=1e-5)
    assert "Output `value` (regression)" in run.text("outputs/diagnostics")


def test_metric_helpers_against_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500), 2)  # many ties
    assert metrics.roc_auc(y == 1, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
    t, p = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    mae, rmse, r2 = metrics.regression(t, p)
    assert (mae, rmse, r2) == pytest.approx((skm.mean_absolute_error(t, p),
                                             skm.root_mean_squared_error(t, p), skm.r2_score(t, p)))


def test_bad_input_fails_before_any_epoch(tmp_path, digit_sets):
    (x, y), _, _ = digit_sets
    with pytest.raises(ValueError, match=r"dataset 'val' has no labels"):
        tbx.Predictions(tmp_path, {"train": (x, y), "val": (x,)})
    model = _cnn()
    epochs = []
    spy = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))
    cases = [
        ({"val": (x, np.where(y == 9, 12, y))}, {}, r"dataset 'val'.*class ids in \[0, 10\)"),
        ({"val": (x, y)}, {"class_names": ["a", "b"]}, r"`class_names` has 2 names .* 10 classes"),
        ({"val": (x, (keras.utils.to_categorical(y, 10) + keras.utils.to_categorical(
            (y + 1) % 10, 10)))}, {}, r"dataset 'val'.*not one-hot"),
    ]
    for data, options, message in cases:
        with pytest.raises(ValueError, match=message):
            model.fit(x, y, epochs=1, verbose=0,
                      callbacks=[spy, tbx.Predictions(tmp_path, data, **options)])
    assert epochs == []
    unlabelled = x if tf is None else tf.data.Dataset.from_tensor_slices(x).batch(8)
    with pytest.raises(ValueError, match=r"dataset 'eval' (has no labels|must be \(x, y\).*"
                                         r"without labels)"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[spy, tbx.Predictions(tmp_path, unlabelled)])
    assert epochs == []


def test_log_inputs_false_writes_no_mistakes(tmp_path, digit_sets, read_run):
    (x, y), (xv, yv), _ = digit_sets
    model = _cnn()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[tbx.Predictions(tmp_path, (xv, yv),
                                                                    log_inputs=False)])
    tags = read_run(tmp_path).tags
    assert "outputs/eval/accuracy" in tags and not any("mistakes" in t for t in tags)


def test_compare_shows_each_datasets_headline_metrics(tmp_path, digit_sets, capsys):
    import json

    from tb_explain import cli

    (x, y), (xv, yv), _ = digit_sets
    model = _cnn()
    model.fit(x, y, epochs=1, verbose=0, callbacks=tbx.explain(
        tmp_path / "run", datasets={"train": (x, y), "val": (xv, yv)}))
    assert cli.main(["compare", str(tmp_path / "run"), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    run = tbx.load_run(tmp_path / "run")
    for name in ("train", "val"):
        for metric in ("accuracy", "loss", "macro_f1", "ece"):
            assert row[f"{name}/{metric}"] == pytest.approx(run.last(f"outputs/{name}/{metric}"))


def test_a_model_without_a_compiled_loss_gets_no_loss_card(tmp_path, read_run):
    import zoo

    rng = np.random.default_rng(0)
    table, labels = rng.normal(size=(64, 5)).astype("float32"), rng.integers(0, 3, 64)
    model = zoo.CustomStep()  # never compiled: no loss
    model(table[:2])
    callback = tbx.Predictions(tmp_path, (table, labels))
    callback.set_model(model)
    callback.params = {"epochs": 1}
    callback.on_train_begin()
    callback.log_now(0)
    callback.on_train_end()
    run = read_run(tmp_path)
    assert "outputs/eval/loss" not in run.tags
    pred = np.argmax(model.predict(table, verbose=0), axis=1)
    assert run.value("outputs/eval/accuracy") == pytest.approx(np.mean(pred == labels))
    assert "| loss | nan |" in run.text("outputs/diagnostics")


def test_pr_curve_from_numpy_equals_tensorboards_own():
    """`ops.pr_curve_data` (no TensorFlow) equals TensorBoard's
    `pr_curve.summary.pb` where TensorFlow is installed, and a direct count
    and scikit-learn's precision and recall at every threshold elsewhere."""
    from tb_explain.summary import ops

    rng = np.random.default_rng(3)
    labels = rng.random(500) < 0.3
    scores = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1).astype(np.float32)
    scores[:5] = [0.0, 1.0, 0.5, 0.995, 0.005]  # the ends and bucket edges
    scores[5] = np.nan  # a diverged model's score: in no bucket, as TensorBoard's pb
    data = ops.pr_curve_data(labels, scores, 201)
    assert data.shape == (6, 201) and data.dtype == np.float32
    given = labels, scores
    labels, scores = np.delete(labels, 5), np.delete(scores, 5)
    bucket = np.floor(scores * 200).astype(int)
    for i in (0, 1, 57, 100, 199, 200):
        predicted = bucket >= i
        assert data[0, i] == (labels & predicted).sum()
        assert data[1, i] == (~labels & predicted).sum()
        assert data[2, i] == (~labels & ~predicted).sum()
        assert data[3, i] == (labels & ~predicted).sum()
        if predicted.any():
            assert data[4, i] == pytest.approx(skm.precision_score(labels, predicted), abs=1e-6)
        assert data[5, i] == pytest.approx(skm.recall_score(labels, predicted), abs=1e-6)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return
    from tensorboard.plugins.pr_curve import summary as pr_summary
    from tensorboard.util import tensor_util

    value = pr_summary.pb("t", labels=given[0], predictions=given[1], num_thresholds=201).value[0]
    np.testing.assert_array_equal(data, tensor_util.make_ndarray(value.tensor))


def _bn_model(momentum):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(16, name="dense"),
        keras.layers.BatchNormalization(momentum=momentum, name="bn"),
        keras.layers.Activation("relu"), keras.layers.Dense(3, activation="softmax", name="head")])


def _numpy_losses(model, x, y):
    """Cross-entropy with BN's moving statistics and with the batch's own."""
    w1, b1 = model.get_layer("dense").get_weights()
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    w2, b2 = model.get_layer("head").get_weights()
    eps = model.get_layer("bn").epsilon
    h = x.astype(np.float64) @ w1 + b1
    losses = []
    for m, v in ((mean, var), (h.mean(0), h.var(0))):
        z = np.maximum((h - m) / np.sqrt(v + eps) * gamma + beta, 0) @ w2 + b2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        if keras.backend.backend() != "tensorflow":  # TensorFlow reads the softmax's logits
            p = np.clip(p, 1e-7, 1 - 1e-7)  # the others clip, as Keras's cross-entropy does
        losses.append(-np.mean(np.log(p[np.arange(len(y)), y])))
    return losses


@pytest.mark.parametrize("momentum, alerted", [(0.99, True), (0.0, False)])
def test_batchnorm_lag_is_measured_and_said_once(tmp_path, read_run, momentum, alerted):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 6)) * 3 + 10).astype("float32")  # far from BN's initial stats
    y = (x[:, 0] > 10).astype("int64") + (x[:, 1] > 10)
    model = _bn_model(momentum)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=50, verbose=0,
              callbacks=[tbx.Predictions(tmp_path, {"train": (x, y)})])
    run = read_run(tmp_path)
    inference, batch = _numpy_losses(model, x, y)
    assert float(run.value("outputs/batchnorm_lag", 2)) == pytest.approx(inference / batch,
                                                                          rel=1e-3)
    ratios = run.values("outputs/batchnorm_lag")
    if alerted:
        assert float(ratios[0]) > 2  # four steps at momentum 0.99: far behind
        texts = run.values("outputs/alerts")
        assert len(texts) == 1  # once per fit
        text = next(iter(texts.values())).item().decode()
        assert "BatchNormalization lag" in text and "bn` (momentum 0.99)" in text
    else:
        assert all(float(r) == pytest.approx(1.0, abs=0.05) for r in ratios.values())
        assert "outputs/alerts" not in run.tags
