"""Cost of each tb_explain callback on a real fit, as ratios measured side by side.

Usage:
    python bench/overhead.py [--epochs N] [--repeats N]

Part 1 fits the demo CNN on the bundled digits with each configuration, the
configurations interleaved in every repeat, and prints each fit's median time
as a ratio to the same fit without callbacks. It also reports the suite's
one-time setup and each event's cost, read from the `timing/*` scalars the
callbacks log. Beside each fit's ratio, it prints one plus the time spent
inside the configuration's hooks (timed by two clock callbacks around it)
over the plain fit: the same figure, free of the training's run-to-run
noise (a 0.7 s fit varies by 0.1 s). A second pass repeats the digits
`--scale` times (default 13: a plain fit of about 4.2 s, the workload the
issue measured) for the plain fit and the whole suite at freq=1 and freq=5.

Part 2 isolates the weight-histogram logging event itself on a larger model
(keras.applications.MobileNetV2, weights=None, ~3.5M parameters): our
`WeightHistograms` event against the histogram logging of
`keras.callbacks.TensorBoard(histogram_freq=1)` for the same weights,
interleaved, as a ratio (target: <= 1.0).

Part 3 fits ResNet50 (weights=None, 224x224, 32 random images, batch 16)
for 7 epochs twice, interleaved: with the whole suite (`tbx.explain`
defaults, 2-sample probe, every epoch) and without it, each with two clock
callbacks first and last in the list. Per epoch it prints both wall times,
the extra, the time inside the hooks and the rest (spent outside the
callbacks), and the extra as a ratio to the compute floor of one
integrated-gradients event (the same 2 x 52 input gradients, compiled and
already traced, in the chunks the callback cuts them into: 4 calls of 26
rows); the median of 3 calls before and 3 after each pair of
fits); then the first epoch's extra (setup + first event,
target <= 2x), the median steady extra of the last 3 epochs (<= 1.25x), the
amortized extra per event (<= 1.4x) and the share outside the callbacks
(<= 5%). `--resnet-repeats N` takes the median over N pairs of fits.
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
from tb_explain.callbacks import _fit_iterators  # noqa: E402
from tb_explain.compute.attribution import _feeding  # noqa: E402
from bench._timing import compiled_input_gradient, interleaved  # noqa: E402
from demo_train import build_model, load_data  # noqa: E402


LOG_DIRS = {}


class _Clock(keras.callbacks.Callback):
    """Two of these, first and last in the callback list (`_clocked`), add
    up, per epoch, the time spent between them in every hook (the measured
    callbacks' own time, free of the training's run-to-run noise), and stamp
    each epoch's end after every callback's `on_epoch_end`. An epoch's wall
    time runs from the previous epoch's end (from the first clock's
    `on_train_begin` for epoch 0, so it holds the setup); what it has beyond
    the plain fit's same epoch and beyond the hooks was spent outside the
    callbacks (stalls in the training itself). The first clock also keeps
    each epoch's input iterator off the training thread
    (`tb_explain.callbacks._fit_iterators`), in the plain fit too: deleting
    it stalls plain Keras fits at random (up to a third of the iterator's
    life, 5 s per epoch here), which would flatter the suite."""

    def __init__(self, shared, last):
        super().__init__()
        self.shared, self.last = shared, last

    def _tick(self, epoch_end=False):
        now = time.perf_counter()
        s = self.shared
        if not self.last:
            s["start"] = now
            s.setdefault("begin", now)
            return
        s["hooks"][s["epoch"]] = s["hooks"].get(s["epoch"], 0.0) + now - s["start"]
        if epoch_end:
            s["ends"].append(now)
            s["epoch"] += 1

    def on_train_begin(self, logs=None):
        self._tick()

    def on_epoch_begin(self, epoch, logs=None):
        self._tick()

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and not self.last:  # as tb_explain's callbacks do, in both fits
            _fit_iterators.hold()
        self._tick()

    def on_epoch_end(self, epoch, logs=None):
        self._tick(epoch_end=True)

    def on_train_end(self, logs=None):
        self._tick()  # counted after the last epoch (part 1's total holds it)
        if self.last:
            _fit_iterators.release_all()


def _clocked(callbacks):
    """`(shared, callbacks between two clocks)`: `shared["hooks"]` maps each
    epoch (then `epochs`, for `on_train_end`) to the seconds in its hooks,
    `shared["begin"]` and `shared["ends"]` stamp the fit's start and each
    epoch's end."""
    shared = {"hooks": {}, "ends": [], "epoch": 0}
    return shared, [_Clock(shared, False), *callbacks, _Clock(shared, True)]


def fit_seconds(name, make_callbacks, data, epochs, scale=1):
    (x, y), (x_val, y_val) = data
    x, y = np.concatenate([x] * scale), np.concatenate([y] * scale)
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:64], y[:64], epochs=1, verbose=0)  # trace the train step
    log_dir = LOG_DIRS[name] = tempfile.mkdtemp(prefix="tbx_bench_")
    shared, callbacks = _clocked(make_callbacks(log_dir, (x_val[:8], y_val[:8])))
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start, sum(shared["hooks"].values())


def _suite_timing(log_dir):
    """`(setup seconds, seconds of each event)` of the suite, from its scalars."""
    run = tbx.load_run(log_dir)
    setup = sum(run.last(t) for t in run.tags("scalars") if t.endswith("_setup_seconds"))
    per_event = {}
    for tag in run.tags("scalars"):
        if tag.startswith("timing/") and not tag.endswith("_setup_seconds"):
            for step, value in zip(*run.scalars(tag)):
                per_event[step] = per_event.get(step, 0.0) + value
    return setup, [per_event[step] for step in sorted(per_event)]


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
    "tbx.explain (whole suite, freq=5)": lambda d, probe: tbx.explain(d, data=probe, freq=5),
}


#: Part 1's second pass: the issue's workload, a fit of about 4 s.
SCALED = ["no callbacks", "tbx.explain (whole suite)", "tbx.explain (whole suite, freq=5)"]


def part1(epochs, repeats, scale):
    data = load_data()
    for factor, names, runs in ((1, list(CONFIGS), repeats), (scale, SCALED, max(7, repeats))):
        times = {name: [] for name in names}
        hooks = {name: [] for name in names}
        for _ in range(runs):
            for name in names:
                total, inside = fit_seconds(name, CONFIGS[name], data, epochs, factor)
                times[name].append(total)
                hooks[name].append(inside)
        base = statistics.median(times["no callbacks"])
        print(f"\nPart 1: demo CNN, {epochs} epochs of fit on the digits x {factor} "
              f"(plain fit {base:.2f} s), median of {runs} interleaved runs")
        print(f"{'configuration':40s} {'ratio to no callbacks':>22s} "
              f"{'1 + time in its hooks / plain fit':>34s}")
        for name, values in times.items():
            print(f"{name:40s} {statistics.median(values) / base:22.3f} "
                  f"{1 + statistics.median(hooks[name]) / base:34.3f}")
        setup, events = _suite_timing(LOG_DIRS["tbx.explain (whole suite)"])
        print(f"whole suite, last repeat: setup {setup:.3f} s, events "
              + " ".join(f"{e:.3f}" for e in events)
              + f" s, plain epoch {base / epochs:.3f} s  (targets: freq=5 <= 1.10, "
              "freq=1 <= 1.35)")


def part2(repeats):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.rand(4, 96, 96, 3).astype("float32")
    y = np.zeros(4, "int64")
    ours = tbx.WeightHistograms(tempfile.mkdtemp(prefix="tbx_bench_"))
    ours.eager_events = 0  # the steady, compiled event
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


def resnet_fit(log_dir, x, y, probe, epochs, batch_size):
    """One ResNet50 fit of `epochs` on `(x, y)`: the suite's (when `log_dir`)
    or the plain one. Returns per epoch `(wall seconds, seconds in hooks)`."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=x.shape[1:], classes=10)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # trace the train step
    shared, callbacks = _clocked(tbx.explain(log_dir, data=probe) if log_dir else [])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)
    ends = [shared["begin"], *shared["ends"]]
    return [(b - a, shared["hooks"].get(k, 0.0)) for k, (a, b) in enumerate(zip(ends, ends[1:]))]


def part3(epochs=7, repeats=1, train=32, batch_size=16):
    """Prints part 3 and returns its figures: `{"first", "steady",
    "amortized", "outside", "floor_s"}` (the extras as ratios to the floor)."""
    from tb_explain import backend  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = rng.random((train, 224, 224, 3), dtype=np.float32)
    y = rng.integers(0, 10, train)
    probe = (x[:2], y[:2])

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    gradient = compiled_input_gradient(model)
    steps = 52  # 50 Gauss-Legendre points and the two path ends
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    rows = (alphas[None, :, None, None, None] * probe[0][:, None]).reshape(-1, 224, 224, 3)
    # in the chunks integrated gradients cuts the rows into (4 x 26: 104 rows of
    # ResNet50's backward pass at once hold 24 GB eagerly, on PyTorch)
    chunk = _feeding.chunk_rows(len(rows), _feeding.auto_batch_size([rows], None))
    chunks = [(backend.to_tensor(rows[i:i + chunk]),
               backend.to_tensor(np.zeros(len(rows[i:i + chunk]), np.int32)))
              for i in range(0, len(rows), chunk)]

    def floor():
        return [gradient(batch, targets) for batch, targets in chunks]
    floor()  # traced, warmed up

    plain, suite, floors = [], [], []
    def time_floor():
        return interleaved({"floor": floor}, 3)["floor"]

    for _ in range(repeats):  # interleaved: floor, plain fit, suite fit, floor
        floors += time_floor()
        plain.append(resnet_fit(None, x, y, probe, epochs, batch_size))
        log_dir = tempfile.mkdtemp(prefix="tbx_bench_")
        suite.append(resnet_fit(log_dir, x, y, probe, epochs, batch_size))
        floors += time_floor()
    floor_time = statistics.median(floors)
    median = statistics.median
    wall = [median(run[k][0] for run in suite) for k in range(epochs)]
    base = [median(run[k][0] for run in plain) for k in range(epochs)]
    hooks = [median(run[k][1] for run in suite) for k in range(epochs)]
    extra = [w - b for w, b in zip(wall, base)]
    setup, events = _suite_timing(log_dir)
    print(f"\nPart 3 ({backend.name()}): ResNet50 224x224, {epochs}-epoch fit on {train} images "
          f"(batch {batch_size}), tbx.explain(data=2-sample probe) every epoch, against the "
          f"same fit without the suite, epoch by epoch; median of {repeats} interleaved pair(s)")
    print(f"IG event compute floor (2 x {steps} input gradients, compiled, in chunks of "
          f"{chunk}): {floor_time:.2f} s "
          f"(median of {len(floors)} calls before and after the fits: "
          f"{min(floors):.2f}-{max(floors):.2f} s)")
    print(f"{'epoch':>5s} {'plain s':>8s} {'suite s':>8s} {'extra s':>8s} {'in hooks':>9s} "
          f"{'outside':>8s} {'extra/floor':>12s}  (last run's events: setup {setup:.2f} s)")
    for k in range(epochs):
        event = f"   event {events[k]:.2f} s" if k < len(events) else ""
        print(f"{k:5d} {base[k]:8.2f} {wall[k]:8.2f} {extra[k]:8.2f} {hooks[k]:9.2f} "
              f"{extra[k] - hooks[k]:8.2f} {extra[k] / floor_time:12.2f}{event}")
    figures = {"first": extra[0] / floor_time,
               "steady": median(extra[k] / floor_time for k in range(max(1, epochs - 3), epochs)),
               "amortized": sum(extra) / epochs / floor_time,
               "outside": (sum(extra) - sum(hooks)) / sum(extra), "floor_s": floor_time}
    print(f"first epoch's extra (setup + first event): {figures['first']:.2f} x floor"
          "  (target <= 2.0)")
    print(f"steady extra (median of the last 3 epochs): {figures['steady']:.2f} x floor"
          "  (target <= 1.25)")
    print(f"amortized extra per event (whole fit / {epochs}): {figures['amortized']:.2f} x floor"
          "  (target <= 1.4)")
    print(f"share of the extra time outside the callbacks' hooks: {figures['outside']:.1%}"
          "  (target <= 5%)")
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="123", help="which parts to run (default: 123)")
    parser.add_argument("--scale", type=int, default=13,
                        help="part 1's second pass repeats the digits this many times "
                             "(default 13: a plain fit of about 4.2 s, the issue's workload)")
    parser.add_argument("--resnet-repeats", type=int, default=1,
                        help="part 3's interleaved pairs of ResNet50 fits (default 1)")
    args = parser.parse_args()
    if "1" in args.parts:
        part1(args.epochs, args.repeats, args.scale)
    if "2" in args.parts:
        part2(max(5, args.repeats))
    if "3" in args.parts:
        part3(repeats=args.resnet_repeats)


if __name__ == "__main__":
    main()
