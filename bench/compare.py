"""Comparing runs at scale: the Runs and Compare views' routes on 50 runs of 100 epochs,
`tbx.compare` on two ResNet50 runs, and the bytes per epoch the comparison logs add.

Usage:
    python bench/compare.py [--runs 50] [--distinct 5] [--epochs 100] [--repeats 3]
                            [--resnet-epochs 2] [--logdir DIR] [--no-browser]

Writes `--distinct` runs of a 2-layer MLP on scikit-learn's digits (64 features) with
`tbx.explain(..., freq=1)` and two datasets, each over `--epochs` epochs, and copies them
to `--runs` runs (copies are separate runs to TensorBoard; their content does not change
the timing). Serves them with `tensorboard` (its default loader and sampling), then prints:

- every route of the Runs and Compare views: median latency over `--repeats` calls
  against the 1 s target (`runs`, `list`, `overlay` for all runs with and without a
  weight histogram, `compare` of two runs and of two epochs of one, `health`);
- in headless Chromium (Debian's `chromium`), the time from opening the Explain tab's
  Runs view to its table listing every run, against the 2 s target;
- the bytes one run writes per epoch, by tag family, and those the comparison adds
  (`similarity/` Gram matrices, `outputs/<d>/predicted/` per-example results);
- `tbx.compare` of two ResNet50 runs (64x64 inputs, 16 probe rows, `tbx.explain` with its
  defaults) against the 2 s target, and the bytes their Gram matrices take per epoch.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROUTE_TARGET = 1.0
LIST_TARGET = 2.0
COMPARE_TARGET = 2.0


def write_mlp_run(log_dir, seed, epochs):
    import keras  # noqa: PLC0415
    from sklearn.datasets import load_digits  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int64")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu",
                                                                     name="hidden"),
                              keras.layers.Dense(10, activation="softmax", name="out")],
                             name="mlp")
    model.compile(keras.optimizers.Adam(10 ** -(2 + seed % 3)), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:1200], y[:1200], epochs=epochs, batch_size=128, verbose=0,
              validation_data=(x[1200:], y[1200:]),
              callbacks=tbx.explain(log_dir, data=(x[1200:1456], y[1200:1456]), freq=1, steps=8,
                                    hparams={"seed": seed, "width": 32},
                                    datasets={"train": (x[:1200], y[:1200]),
                                              "validation": (x[1200:], y[1200:])}))


def write_resnet_run(log_dir, seed, epochs):
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(0)
    x = rng.random((32, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
              callbacks=tbx.explain(log_dir, data=(x[:16], y[:16]), steps=8,
                                    datasets={"train": (x, y)}))


def bytes_by_family(run_dir):
    """`{family: bytes}` of the summary values in a run's event files."""
    from tensorboard.backend.event_processing import event_file_loader  # noqa: PLC0415

    out = {}
    for name in os.listdir(run_dir):
        if "tfevents" not in name:
            continue
        for event in event_file_loader.EventFileLoader(os.path.join(run_dir, name)).Load():
            for value in event.summary.value:
                tag = value.tag
                family = ("similarity (Gram matrices, CKA)" if tag.startswith("similarity/")
                          else "outputs/<d>/predicted" if "/predicted/" in tag
                          else tag.split("/")[0])
                out[family] = out.get(family, 0) + value.ByteSize()
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_get(url, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=300) as response:
            body = response.read()
            status = response.status
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(body), status


def browser_list_time(url, runs):
    from bench._timing import chromium  # noqa: PLC0415

    with chromium() as browser:
        if browser is None:
            return None
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(f"{url}/data/plugin_entry.html?name=tb_explain#runs")
        page.wait_for_function(f"() => document.querySelectorAll('#runs-table tr[data-run]')"
                               f".length === {runs}", timeout=120000)
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet-epochs", type=int, default=2)
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    root = args.logdir or tempfile.mkdtemp(prefix="tbx_compare_")
    distinct = [os.path.join(root, f"seed{k}") for k in range(args.distinct)]
    start = time.perf_counter()
    for k, path in enumerate(distinct):
        if not os.path.isdir(path):
            write_mlp_run(path, k, args.epochs)
    for i in range(args.distinct, args.runs):
        copy = os.path.join(root, f"copy{i:02d}")
        if not os.path.isdir(copy):
            shutil.copytree(distinct[i % args.distinct], copy)
    print(f"{args.runs} runs x {args.epochs} epochs under {root} "
          f"(written in {time.perf_counter() - start:.0f} s)")

    families = bytes_by_family(distinct[0])
    total = sum(families.values())
    added = sum(v for k, v in families.items() if k.startswith(("similarity", "outputs/<d>")))
    print(f"\nbytes per epoch of one MLP run (2 datasets, 256 probe rows): "
          f"{total / args.epochs / 1e3:.1f} kB, of which the comparison's {added / args.epochs / 1e3:.1f} kB")
    for family, size in sorted(families.items(), key=lambda kv: -kv[1]):
        print(f"  {family:36s} {size / args.epochs / 1e3:8.1f} kB/epoch")

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", root,
                               "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    base = f"{url}/data/plugin/tb_explain"
    try:
        deadline = time.time() + 600
        while True:
            try:
                with urllib.request.urlopen(f"{base}/list", timeout=30) as r:
                    listed = json.loads(r.read())["runs"]
                if len(listed) == args.runs and all(row["step"] == args.epochs - 1
                                                    for row in listed):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("tensorboard did not load every run within 600 s")
            time.sleep(2)
        names = sorted(row["run"] for row in listed)
        query = urllib.parse.urlencode
        every = query([("run", n) for n in names])
        routes = {
            "runs": f"{base}/runs",
            "list": f"{base}/list",
            "overlay (all runs)": f"{base}/overlay?{every}",
            "overlay + histogram": f"{base}/overlay?{every}&"
                                   + query({"tag": "weights/mlp/hidden/kernel"}),
            "compare (two runs)": f"{base}/compare?" + query({"a": names[0], "b": names[1]}),
            "compare (two epochs)": f"{base}/compare?" + query({"a": names[0], "epoch": 50}),
            "health": f"{base}/health?" + query({"run": names[0]}),
        }
        print(f"\nroutes on {args.runs} runs x {args.epochs} epochs (median of {args.repeats}; "
              f"target {ROUTE_TARGET:.0f} s):")
        for label, route in routes.items():
            seconds, size, status = timed_get(route, args.repeats)
            print(f"  {label:24s} {seconds:6.3f} s  ratio {seconds / ROUTE_TARGET:5.2f}  "
                  f"{size / 1e3:8.1f} kB  HTTP {status}")
        if not args.no_browser:
            seconds = browser_list_time(url, args.runs)
            if seconds is None:
                print("\nRuns view: no chromium installed (apt-get install chromium)")
            else:
                print(f"\nRuns view lists all {args.runs} runs {seconds:.2f} s after opening "
                      f"(ratio to the {LIST_TARGET:.0f} s target {seconds / LIST_TARGET:.2f})")
    finally:
        server.terminate()
        server.wait()

    if args.resnet_epochs:
        import tb_explain as tbx  # noqa: PLC0415

        pair = [os.path.join(root, "resnet", name) for name in ("a", "b")]
        for k, path in enumerate(pair):
            if not os.path.isdir(path):
                write_resnet_run(path, k, args.resnet_epochs)
        start = time.perf_counter()
        result = tbx.compare(*pair)
        seconds = time.perf_counter() - start
        families = bytes_by_family(pair[0])
        grams = families.get("similarity (Gram matrices, CKA)", 0)
        print(f"\ntbx.compare of two ResNet50 runs ({len(result.cka.layers_a)} layers, "
              f"{result.cka.n} probe rows): {seconds:.2f} s, ratio to the {COMPARE_TARGET:.0f} s "
              f"target {seconds / COMPARE_TARGET:.2f}")
        print(f"ResNet50 run: {sum(families.values()) / args.resnet_epochs / 1e6:.1f} MB per "
              f"epoch, of which Gram matrices {grams / args.resnet_epochs / 1e3:.1f} kB")


if __name__ == "__main__":
    main()
