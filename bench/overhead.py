"""Cost of each tb_explain callback on a real fit, as ratios measured side by side.

Usage:
    python bench/overhead.py [--epochs N] [--repeats N]

Part 1 fits the demo CNN on the bundled digits with each configuration, the
configurations interleaved in every repeat, and prints each fit's median time
as a ratio to the same fit without callbacks.

Part 2 isolates the weight-histogram logging event itself on a larger model
(keras.applications.MobileNetV2, weights=None, ~3.5M parameters): our
`WeightHistograms` event against the histogram logging of
`keras.callbacks.TensorBoard(histogram_freq=1)` for the same weights,
interleaved, as a ratio (target: <= 1.0).
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_model, load_data  # noqa: E402


def fit_seconds(make_callbacks, data, epochs):
    (x, y), (x_val, y_val) = data
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:64], y[:64], epochs=1, verbose=0)  # trace the train step
    callbacks = make_callbacks(tempfile.mkdtemp(prefix="tbx_bench_"), (x_val[:8], y_val[:8]))
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


CONFIGS = {
    "no callbacks": lambda d, probe: [],
    "keras TensorBoard": lambda d, probe: [keras.callbacks.TensorBoard(d)],
    "keras TensorBoard(histogram_freq=1)": lambda d, probe: [
        keras.callbacks.TensorBoard(d, histogram_freq=1)],
    "tbx.ModelGraph": lambda d, probe: [tbx.ModelGraph(d)],
    "tbx.WeightHistograms": lambda d, probe: [tbx.WeightHistograms(d)],
    "tbx.WeightHistograms(images=True)": lambda d, probe: [tbx.WeightHistograms(d, images=True)],
    "tbx.explain (whole suite)": lambda d, probe: tbx.explain(d, data=probe),
    "tbx.explain (whole suite, freq=3)": lambda d, probe: tbx.explain(d, data=probe, freq=3),
}


def part1(epochs, repeats):
    data = load_data()
    times = {name: [] for name in CONFIGS}
    for _ in range(repeats):
        for name, make in CONFIGS.items():
            times[name].append(fit_seconds(make, data, epochs))
    base = statistics.median(times["no callbacks"])
    print(f"\nPart 1: demo CNN, {epochs} epochs of fit, median of {repeats} interleaved runs")
    print(f"{'configuration':40s} {'ratio to no callbacks':>22s}")
    for name, values in times.items():
        print(f"{name:40s} {statistics.median(values) / base:22.3f}")


def part2(repeats):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.rand(4, 96, 96, 3).astype("float32")
    y = np.zeros(4, "int64")
    ours = tbx.WeightHistograms(tempfile.mkdtemp(prefix="tbx_bench_"))
    theirs = keras.callbacks.TensorBoard(tempfile.mkdtemp(prefix="tbx_bench_"),
                                         histogram_freq=1, write_graph=False)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ours, theirs])  # set up both
    ours.on_train_begin()
    theirs.set_model(model)  # fit closed its writers: open new ones
    ours_epochs, theirs_epochs = itertools.count(), itertools.count()
    times = interleaved({"ours": lambda: ours.log_now(next(ours_epochs)),
                         "theirs": lambda: theirs._log_weights(next(theirs_epochs))}, repeats)
    ours.on_train_end()
    n = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"\nPart 2: one weight-histogram event, MobileNetV2 ({len(model.weights)} weights, "
          f"{n:,} values), median of {repeats} interleaved events")
    print(f"tbx.WeightHistograms / keras TensorBoard(histogram_freq=1): "
          f"{statistics.median(times['ours']) / statistics.median(times['theirs']):.3f}"
          "  (target <= 1.0)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    part1(args.epochs, args.repeats)
    part2(max(5, args.repeats))


if __name__ == "__main__":
    main()
