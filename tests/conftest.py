"""Shared fixtures: small models, data, and reading runs back with TensorBoard."""

import contextlib
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator as ea  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402


BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    """Tests marked `tensorflow_only` are skipped on the other backends, and
    those marked `needs_tensorflow` where TensorFlow is not installed (the
    JAX and PyTorch legs run in a venv without it, as their users do)."""
    from _tf import tf

    other = pytest.mark.skip(reason=f"a TensorFlow feature (Keras backend: {BACKEND})")
    absent = pytest.mark.skip(reason="uses TensorFlow, which is not installed here")
    for item in items:
        if "tensorflow_only" in item.keywords and BACKEND != "tensorflow":
            item.add_marker(other)
        elif "needs_tensorflow" in item.keywords and tf is None:
            item.add_marker(absent)


def pytest_report_header(config):
    return f"Keras backend: {BACKEND}"


class Run:
    """What one run directory holds, read with TensorBoard's own loader."""

    def __init__(self, log_dir):
        self.acc = ea.EventAccumulator(
            str(log_dir),
            size_guidance={ea.TENSORS: 0, ea.GRAPH: 0, ea.IMAGES: 0,
                           ea.HISTOGRAMS: 0, ea.SCALARS: 0},
        )
        self.acc.Reload()

    @property
    def tags(self):
        return self.acc.Tags()["tensors"]

    def steps(self, tag):
        return [e.step for e in self.acc.Tensors(tag)]

    def values(self, tag):
        """Returns `{step: ndarray}` of a tensor-summary tag."""
        return {e.step: tensor_util.make_ndarray(e.tensor_proto) for e in self.acc.Tensors(tag)}

    def value(self, tag, step=None):
        values = self.values(tag)
        return values[max(values) if step is None else step]

    def plugin(self, tag):
        return self.acc.SummaryMetadata(tag).plugin_data.plugin_name

    def text(self, tag, step=None):
        return self.value(tag, step).item().decode()

    def image(self, tag, step=None, index=0):
        import io

        from PIL import Image

        encoded = self.value(tag, step)
        return np.asarray(Image.open(io.BytesIO(encoded[2 + index])).convert("RGB"))


@pytest.fixture
def read_run():
    return Run


@pytest.fixture(scope="session")
def digits():
    """A 64-sample slice of scikit-learn's bundled digits, as 8x8x1 images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[:64] / 16.0).astype("float32")[..., None]
    return x, data.target[:64].astype("int64")


def small_cnn(name="cnn"):
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ],
        name=name,
    )


class TwoDense(keras.Model):
    """A subclassed model (no symbolic layer outputs)."""

    def __init__(self):
        super().__init__(name="two_dense")
        self.hidden = keras.layers.Dense(6, activation="tanh", name="hidden")
        self.out = keras.layers.Dense(3, name="out")

    def call(self, inputs):
        return self.out(self.hidden(inputs))


@pytest.fixture
def cnn():
    keras.utils.set_random_seed(1)
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture
def tabular():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")


def fit_suite(log_dir, lr, digits, epochs=3):
    """A small CNN fit with the whole tb_explain suite (its TrainingCurves
    write the loss curves on every backend; beside it, Keras's TensorBoard
    callback where TensorFlow is installed, which the suite then leaves the
    curves to)."""
    from _tf import tf
    import tb_explain as tbx

    x, y = digits
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
                        validation_data=(x[:16], y[:16]),
                        callbacks=[*([keras.callbacks.TensorBoard(str(log_dir))] if tf else []),
                                   *tbx.explain(str(log_dir), data=(x[:4], y[:4]), freq=2,
                                                steps=8, hparams={"augment": False},
                                                datasets={"train": (x, y),
                                                          "val": (x[:16], y[:16])})])
    return model, history


@contextlib.contextmanager
def serve_tensorboard(logdir, ready, what, *args):
    """A `tensorboard` server on `logdir` (a free local port, extra `args`):
    yields its URL once `ready(url)` is true (OSError: not yet), within 120 s;
    stops it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
         "--host", "127.0.0.1", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if ready(url):
                    break
            except OSError:
                pass
            assert time.time() < deadline, f"TensorBoard did not serve {what} in 120 s"
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
