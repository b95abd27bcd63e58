"""Cost of one GradientNorms logging event, as a ratio to one compiled train step.

Usage:
    python bench/gradients.py [--repeats N]

Both are measured on the same probe batch, interleaved, after tracing: the
floor a gradient-health event cannot beat is one forward + backward pass,
which a compiled train step also pays (plus the optimizer update).
"""

import argparse
import os
import statistics
import sys
import tempfile
import itertools
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_model, load_data  # noqa: E402


def measure(name, model, x, y, repeats):
    model.compile("adam", "sparse_categorical_crossentropy")
    model.train_on_batch(x, y)  # trace the train step
    callback = tbx.GradientNorms(tempfile.mkdtemp(prefix="tbx_bench_"), data=(x, y),
                                 max_samples=len(x))
    callback.eager_events = 0  # the steady, compiled event (overhead.py times the eager ones)
    callback.set_model(model)
    callback.on_train_begin()
    with warnings.catch_warnings():  # an untrained net alerts: not what is timed
        warnings.simplefilter("ignore")
        callback.log_now(0)  # trace
    epochs = itertools.count(1)

    def event():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            callback.log_now(next(epochs))

    times = interleaved({"event": event, "step": lambda: model.train_on_batch(x, y)}, repeats)
    callback.on_train_end()
    ratio = statistics.median(times["event"]) / statistics.median(times["step"])
    print(f"{name:48s} {ratio:8.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{'model (probe)':48s} {'GradientNorms event / train step':>8s}")
    (x, y), _ = load_data()
    keras.utils.set_random_seed(0)
    measure("demo CNN (32 digits)", build_model(), x[:32], y[:32], args.repeats)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    xs = np.random.default_rng(0).random((8, 96, 96, 3), dtype=np.float32)
    measure("MobileNetV2 96x96 (8 images)", model, xs, np.arange(8) % 10, max(5, args.repeats // 4))


if __name__ == "__main__":
    main()
