"""TrainingCurves: Keras's epoch scalars on every backend, read back with
TensorBoard's loader and compared with the fit's own history."""

import keras
import numpy as np
import pytest

import tb_explain as tbx


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return x, y


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model, schedule


def test_epoch_scalars_equal_the_history_in_train_and_validation_runs(tmp_path, read_run):
    x, y = _data()
    model, schedule = _model()
    history = model.fit(x[:64], y[:64], epochs=3, batch_size=16, verbose=0,
                        validation_data=(x[64:], y[64:]),
                        callbacks=[tbx.TrainingCurves(str(tmp_path))])
    train, val = read_run(tmp_path / "train"), read_run(tmp_path / "validation")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train.tags)
    assert {"epoch_loss", "epoch_accuracy"} <= set(val.tags)
    assert "epoch_learning_rate" not in val.tags and "epoch_val_loss" not in val.tags
    for epoch in range(3):
        assert train.value("epoch_loss", epoch) == pytest.approx(history.history["loss"][epoch],
                                                                rel=1e-6)
        assert train.value("epoch_accuracy", epoch) == pytest.approx(
            history.history["accuracy"][epoch], rel=1e-6)
        assert val.value("epoch_loss", epoch) == pytest.approx(
            history.history["val_loss"][epoch], rel=1e-6)
        # the schedule at the optimizer's step after the epoch (4 batches each)
        assert train.value("epoch_learning_rate", epoch) == pytest.approx(
            float(schedule(4 * (epoch + 1))), rel=1e-6)
    assert train.plugin("epoch_loss") == "scalars"
    assert val.steps("evaluation_loss_vs_iterations") == [4, 8, 12]
    assert val.value("evaluation_loss_vs_iterations", 12) == pytest.approx(
        history.history["val_loss"][-1], rel=1e-6)


def test_explain_includes_the_curves_and_a_resumed_fit_continues_them(tmp_path, read_run):
    x, y = _data()
    model, _ = _model()
    callbacks = tbx.explain(str(tmp_path))
    assert any(isinstance(c, tbx.TrainingCurves) for c in callbacks)
    first = model.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
    second = model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=callbacks)
    train = read_run(tmp_path / "train")
    assert train.steps("epoch_loss") == [0, 1, 2, 3]
    losses = first.history["loss"] + second.history["loss"]
    np.testing.assert_allclose([train.value("epoch_loss", e) for e in range(4)], losses,
                               rtol=1e-6)
    assert not (tmp_path / "validation").exists() or not read_run(
        tmp_path / "validation").tags  # no validation data, no validation curves


@pytest.mark.needs_tensorflow
def test_keras_tensorboard_on_the_same_log_dir_gets_no_duplicates(tmp_path, read_run):
    """Keras's callback beside the suite: its curves, once; the same tags as
    TrainingCurves writes alone."""
    x, y = _data()
    model, _ = _model()
    both = tmp_path / "both"
    model.fit(x[:64], y[:64], epochs=2, verbose=0, validation_data=(x[64:], y[64:]),
              callbacks=[keras.callbacks.TensorBoard(str(both)), *tbx.explain(str(both))])
    train = read_run(both / "train")
    assert train.steps("epoch_loss") == [0, 1]  # one event per epoch, not two
    ours = tmp_path / "ours"
    model, _ = _model()
    model.fit(x[:64], y[:64], epochs=2, verbose=0, validation_data=(x[64:], y[64:]),
              callbacks=[tbx.TrainingCurves(str(ours))])
    for run in ("train", "validation"):
        keras_tags = {t for t in read_run(both / run).tags if t.startswith(("epoch_", "eval"))}
        assert keras_tags == set(read_run(ours / run).tags)


def test_log_dir_is_checked_at_construction():
    with pytest.raises((TypeError, ValueError), match="log_dir"):
        tbx.TrainingCurves(3)
