"""Runs for the Explain tab's tests, written by the real callbacks: two runs
with different hyperparameters, a multi-output model, a run whose weights
turn NaN (alerts), a run at privacy="strict" and a table model (feature
attributions, permutation importance, decision rules)."""

import keras
import numpy as np

import tb_explain as tbx
import zoo
from conftest import fit_suite

#: An HTML class name: it must show literally and run nothing.
HTML_NAME = "<img src=x onerror=alert(1)>"


def write_runs(root, digits):
    x, y = digits
    names = [HTML_NAME] + [f"digit {i}" for i in range(1, 10)]
    for lr in (1e-3, 1e-2):
        fit_suite(root / f"lr{lr}", lr, digits)
    keras.utils.set_random_seed(0)
    model = zoo.two_heads()
    labels = {"digit": y, "size": x.mean(axis=(1, 2, 3)).astype("float32")}
    model.fit(x, labels, epochs=2, verbose=0, callbacks=tbx.explain(
        str(root / "heads"), data=(x[:4], {k: v[:4] for k, v in labels.items()}),
        methods=["saliency"], sanity_check=True, steps=8,
        datasets={"val": (x[:32], {k: v[:32] for k, v in labels.items()})}))
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    poison = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 1 and (
        model.get_layer("dense").kernel.assign(np.full((144, 10), np.nan, "float32"))))
    model.fit(x, y, epochs=3, verbose=0, callbacks=[poison, *tbx.explain(
        str(root / "nan"), data=(x[:4], y[:4]), steps=8,
        datasets={"val": (x[:32], y[:32])}, class_names=names)])
    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    model.fit(x, y, epochs=2, verbose=0, callbacks=tbx.explain(
        str(root / "strict"), data=(x[:16], y[:16]), steps=8, privacy="strict",
        methods=["saliency"], datasets={"val": (x[:32], y[:32])}, class_names=names))
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    table = rng.normal(size=(96, 4)).astype("float32")
    label = (table[:, 0] - table[:, 2] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu",
                              name="hidden"), keras.layers.Dense(2, activation="softmax",
                              name="out")], name="mlp")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(table, label, epochs=2, verbose=0, callbacks=tbx.explain(
        str(root / "table"), data=(table[:64], label[:64]), steps=8,
        feature_names=["age", "dose", "weight", "noise"], datasets={"val": (table, label)}))
    return ["heads", "lr0.001", "lr0.01", "nan", "strict", "table"]


def tiny_cnn():
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(10, activation="softmax", name="dense")],
                             name="tiny")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
