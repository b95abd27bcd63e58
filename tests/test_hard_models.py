"""The models and calls a new user tries first: a GAN with its own train_step,
an unlabeled probe, raw text through a TextVectorization inside the model.

`explain()` with defaults completes the fit on each, logs what applies and
names what it left out once (`tb_explain/skipped`); the figures logged are
checked against numpy.
"""

import logging

import keras
import numpy as np
import pytest
from _tf import tf

import tb_explain as tbx
import zoo


def _skipped_lines(run):
    """`{callback: why}` of the `tb_explain/skipped` card, and its steps."""
    steps = run.steps("tb_explain/skipped")
    text = run.text("tb_explain/skipped")
    lines = [line[2:] for line in text.splitlines() if line.startswith("- **")]
    return {line.split("**")[1]: line.split("**: ", 1)[1] for line in lines}, steps


def _left_out_records(caplog):
    return [r for r in caplog.records if r.name == "tb_explain" and "left out" in r.message]


@pytest.mark.tensorflow_only
def test_gan_with_its_own_train_step(tmp_path, read_run, caplog):
    keras.utils.set_random_seed(0)
    model = zoo.gan()
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="tb_explain"):
        history = model.fit(x, epochs=2, batch_size=16, verbose=0,
                            callbacks=tbx.explain(str(tmp_path), data=x[:4]))
    assert len(history.history["d_loss"]) == 2  # the fit completed
    run = read_run(tmp_path)
    skipped, steps = _skipped_lines(run)
    assert set(skipped) == {"ActivationImages", "GradientNorms", "IntegratedGradients",
                            "ModelGraph (op graph)"}
    assert all("defines no `call()`" in why for why in skipped.values())
    assert steps == [0]  # named once, at the first epoch
    assert len(_left_out_records(caplog)) == 1
    # what applies is logged: every weight of both sub-models, at both epochs
    for weight in model.weights:
        norm = run.values(f"weights/{weight.path}/norm")
        assert sorted(norm) == [0, 1]
        np.testing.assert_allclose(norm[1], np.linalg.norm(weight.numpy()), rtol=1e-5)
    summary = run.text("model/summary")
    assert "discriminator" in summary and "generator" in summary
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    assert f"{total:,} parameters" in summary


@pytest.mark.tensorflow_only
def test_gan_discriminator_gets_gradient_health_with_loss(tmp_path, read_run):
    """`GradientNorms(loss=...)` on a model trained by a custom step without a
    compiled loss: a linear model, whose MSE gradient has a closed form."""

    class Linear(keras.Model):
        def __init__(self):
            super().__init__(name="linear")
            self.dense = keras.layers.Dense(1, name="dense")

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self(x) - y) ** 2)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    model = Linear()
    model.compile(keras.optimizers.SGD(0.05))  # no loss
    with pytest.raises(ValueError, match="GradientNorms needs the model's loss"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(str(tmp_path / "no_loss"), data=(x, y))])
    callback = tbx.GradientNorms(str(tmp_path), data=(x[:8], y[:8]),
                                 loss=keras.losses.MeanSquaredError())
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    run = read_run(tmp_path)
    w, b = model.dense.kernel.numpy(), model.dense.bias.numpy()
    residual = x[:8] @ w + b - y[:8]  # d/dw mean(r^2) = 2/n X^T r
    np.testing.assert_allclose(run.value("gradients/loss", 1), np.mean(residual ** 2),
                               rtol=1e-5)
    np.testing.assert_allclose(run.value(f"gradients/{model.dense.kernel.path}/norm", 1),
                               np.linalg.norm(2 / 8 * x[:8].T @ residual), rtol=1e-4)
    np.testing.assert_allclose(run.value(f"gradients/{model.dense.bias.path}/norm", 1),
                               abs(2 * residual.mean()), rtol=1e-4)


def test_loss_must_be_callable():
    with pytest.raises(TypeError, match="`loss` must be None or a callable"):
        tbx.GradientNorms("unused", data=np.zeros((2, 3)), loss="mse")


def test_unlabeled_probe(tmp_path, read_run, digits, caplog):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(10, activation="softmax", name="out")],
                             name="net")
    model.compile("adam", "sparse_categorical_crossentropy")
    with caplog.at_level(logging.WARNING, logger="tb_explain"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=tbx.explain(str(tmp_path), data=x[:8]))
    run = read_run(tmp_path)
    skipped, steps = _skipped_lines(run)
    assert list(skipped) == ["GradientNorms"] and "no labels" in skipped["GradientNorms"]
    assert steps == [0] and len(_left_out_records(caplog)) == 1
    assert not [t for t in run.tags if t.startswith("gradients/")]
    # activations need no labels: the dead fraction of the conv layer, by numpy
    conv = keras.ops.convert_to_numpy(
        keras.Model(model.inputs[0], model.get_layer("conv").output)(x[:4]))
    dead = np.mean(np.all(conv.reshape(4, -1, 4) == 0, axis=(0, 1)))
    assert run.value("activations/net/conv/dead_fraction", 1) == pytest.approx(dead)
    # attributions need no labels either: IG's completeness is logged and small
    assert run.value("attributions/completeness_delta", 1) < 0.05
    assert run.image("attributions/input/heatmap", 1).shape[-1] == 3


def test_explicit_callback_still_raises_before_training(tmp_path, digits):
    x, y = digits
    model = zoo.two_heads()
    with pytest.raises(ValueError, match="has no labels"):
        model.fit(x, {"digit": y, "size": y.astype("float32")}, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(str(tmp_path), data=x[:4])])


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    texts, labels = zoo.reviews()
    model = zoo.text_classifier(texts)
    log_dir = tmp_path_factory.mktemp("text")
    data = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(16)
    model.fit(data, epochs=2, verbose=0, shuffle=False,
              callbacks=tbx.explain(str(log_dir), data=(texts[:4], labels[:4]),
                                    methods=["saliency"]))
    return model, texts, log_dir


@pytest.mark.tensorflow_only
def test_text_vectorization_tokens_are_attributed(text_run, read_run):
    model, texts, log_dir = text_run
    run = read_run(log_dir)
    assert "tb_explain/skipped" not in run.tags  # everything applies
    vectorizer = model.get_layer("vectorizer")
    vocab = vectorizer.get_vocabulary()
    ids = vectorizer(tf.constant(texts[:4])).numpy()
    table = run.text("attributions/input/tokens", 1)
    samples = table.split("**sample ")[1:]
    assert len(samples) == 4
    for i, part in enumerate(samples):
        rows = [line.split(" | ") for line in part.splitlines() if line.startswith("| ")
                and not line.startswith("| position")]
        tokens = [r[1] for r in rows]
        expected = [vocab[t] if vocab[t] else "[PAD]" for t in ids[i]]
        assert tokens == expected
        assert [t for t in tokens if t != "[PAD]"] == texts[i].split()
    assert run.value("attributions/completeness_delta", 1) < 0.05
    assert "attributions/saliency/input/tokens" in run.tags


@pytest.mark.tensorflow_only
def test_text_vectorization_completeness_closed_form(text_run):
    """IG on raw text: one value per token position; its sum equals F(x) - F(0
    embeddings), and F at zero embeddings is softmax(bias) (the pooled
    vector is zero)."""
    model, texts, _ = text_run
    result = tbx.integrated_gradients(model, texts[:4], steps=32)
    assert result.attributions.shape == (4, 8)
    bias = model.get_layer("out").bias.numpy()
    base = np.exp(bias) / np.exp(bias).sum()
    probs = model(tf.constant(texts[:4])).numpy()
    target = probs.argmax(axis=1)
    np.testing.assert_array_equal(result.target, target)
    np.testing.assert_allclose(result.attributions.sum(axis=1),
                               probs[np.arange(4), target] - base[target], atol=1e-5)
