"""Cost of one ActivationImages logging event, as a ratio to one forward pass.

Usage:
    python bench/activations.py [--repeats N]

Both run on the same probe, interleaved, after tracing: the event is a
compiled forward pass capturing every selected layer, statistics, rendering
and PNG encoding; the reference is `model(probe, training=False)` compiled.
Also prints the event data written per event.
"""

import argparse
import os
import statistics
import sys
import itertools
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_model, load_data  # noqa: E402


def measure(name, model, x, repeats):
    log_dir = tempfile.mkdtemp(prefix="tbx_bench_")
    callback = tbx.ActivationImages(log_dir, data=x, max_samples=len(x))
    callback.eager_events = 0  # the steady, compiled event (overhead.py times the eager ones)
    callback.set_model(model)
    callback.on_train_begin()
    forward = tf.function(lambda inputs: model(inputs, training=False))
    probe = tf.convert_to_tensor(x)
    forward(probe)
    callback.log_now(0)  # trace both
    size0 = sum(os.path.getsize(os.path.join(log_dir, f)) for f in os.listdir(log_dir))
    epochs = itertools.count(1)
    times = interleaved({"event": lambda: callback.log_now(next(epochs)),
                         "forward": lambda: forward(probe).numpy()}, repeats)
    callback.on_train_end()
    size = sum(os.path.getsize(os.path.join(log_dir, f)) for f in os.listdir(log_dir))
    per_event = (size - size0) / repeats
    ratio = statistics.median(times["event"]) / statistics.median(times["forward"])
    print(f"{name:40s} {ratio:10.1f} {per_event / 1e6:12.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"{'model (probe)':40s} {'event/fwd':>10s} {'MB/event':>12s}")
    (x, _), _ = load_data()
    keras.utils.set_random_seed(0)
    measure("demo CNN (4 digits)", build_model(), x[:4], args.repeats)
    resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    xs = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    measure("ResNet50 224x224 (2 images)", resnet, xs, max(3, args.repeats // 3))


if __name__ == "__main__":
    main()
