"""Cost of one Predictions event on a big dataset, as a ratio to model.predict.

Usage:
    python bench/predictions.py [--samples N] [--repeats N]

The demo CNN at 32x32 (10 classes), 50,000 random images: one
`tbx.Predictions` logging event (the whole dataset through one compiled
function, outputs and compiled loss, then every metric, the PR curves, the
confusion matrix, the reliability diagram and the mistakes gallery, written)
against `model.predict` on the same data with the same batch size,
interleaved; the ratio of the medians (target: <= 1.25).
"""

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 32, 32, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    model = build_model((32, 32, 1))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    batch_size = 256
    callback = tbx.Predictions(tempfile.mkdtemp(prefix="tbx_bench_"), {"eval": (x, y)},
                               batch_size=batch_size)
    callback.set_model(model)
    callback.params = {"epochs": 1}
    callback.on_train_begin()
    callback.log_now(0)  # traced, warmed up (as predict is below)
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
    epochs = iter(range(1, 10_000))
    times = interleaved({
        "predict": lambda: model.predict(x, batch_size=batch_size, verbose=0),
        "Predictions event": lambda: callback.log_now(next(epochs)),
    }, args.repeats)
    callback.on_train_end()
    ratio = statistics.median(times["Predictions event"]) / statistics.median(times["predict"])
    print(f"{args.samples:,} images 32x32, batch {batch_size}, median of {args.repeats} "
          f"interleaved runs")
    print(f"model.predict: {statistics.median(times['predict']):.2f} s; Predictions event: "
          f"{statistics.median(times['Predictions event']):.2f} s")
    print(f"Predictions event / model.predict: {ratio:.3f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
