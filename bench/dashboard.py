"""The Explain tab on a big run: route latencies, bytes sent, time to the health table.

Usage:
    python bench/dashboard.py [--layers N] [--epochs N] [--repeats N] [--logdir DIR]

Writes a run of `--layers` layers (a deep narrow tanh MLP, whose gradients vanish towards the input:
300 by default) over
`--epochs` epochs (100) with the real callbacks (GradientNorms, ActivationImages
with its dead and saturated fractions, WeightHistograms and ModelGraph, every
epoch), serves it with `tensorboard` (its default loader), then prints:

- each route's median latency over `--repeats` calls and the bytes it sends
  (raw and gzip, as TensorBoard serves it to a browser);
- in headless Chromium (Debian's `chromium`), the time from opening the
  Explain tab to its health table holding every cell, as the ratio to the
  2 s target, for the tab opened alone (its iframe page) and inside
  TensorBoard's own page (which first loads TensorBoard itself).

`--parts data` (also in the default `health,data`): a TrainingDynamics run of
`--examples` examples (10,000) over `--dynamics-epochs` epochs (50), written
by the real callback on a small MLP; in Chromium, the Data view's sorts (each
column, both directions) and filters (label, region, mistakes, a minimum
score), each timed around the click or change that triggers it (filter, sort
and the table drawn and laid out), against the 200 ms target.
"""

import argparse
import gzip
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

from bench._timing import chromium  # noqa: E402

TARGET_SECONDS = 2.0


def write_run(log_dir, layers, epochs):
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    hidden = [keras.layers.Dense(8, activation="tanh", name=f"dense_{i:03d}")
              for i in range(layers - 1)]
    model = keras.Sequential([keras.Input((8,)), *hidden,
                              keras.layers.Dense(2, activation="softmax", name="out")],
                             name="deep")
    model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = rng.integers(0, 2, 32)
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[
        tbx.ModelGraph(log_dir),
        tbx.WeightHistograms(log_dir),
        tbx.GradientNorms(log_dir, (x, y), histograms=False),
        tbx.ActivationImages(log_dir, x[:4], max_layers=layers)])
    return time.perf_counter() - start


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    start = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        body = response.read()
        encoded = response.headers.get("Content-Encoding") == "gzip"
    seconds = time.perf_counter() - start
    raw = gzip.decompress(body) if encoded else body
    return seconds, raw, len(body)


def serve(logdir, expect_rows, expect_epochs, run="deep"):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
                               "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:  # until TensorBoard has read the whole run
        try:
            if run != "deep":
                _, body, _ = _get(f"{url}/data/plugin/tb_explain/dynamics?run={run}")
                if json.loads(body).get("examples"):
                    return server, url
                time.sleep(2)
                continue
            _, body, _ = _get(f"{url}/data/plugin/tb_explain/health?run=deep")
            health = json.loads(body)
            if len(health["rows"]) >= expect_rows and len(health["epochs"]) >= expect_epochs:
                return server, url
        except OSError:
            pass
        time.sleep(2)
    server.terminate()
    raise SystemExit("TensorBoard did not load the run in 10 minutes")


def routes(url, repeats):
    base = f"{url}/data/plugin/tb_explain"
    _, body, _ = _get(f"{base}/health?run=deep")
    health = json.loads(body)
    middle = health["rows"][len(health["rows"]) // 2]["name"]
    last = health["epochs"][-1]
    checks = [("list", "list"), ("runs", "runs?signal=gradient_norm")] + [
        (f"health {s}", f"health?run=deep&signal={s}") for s in (
            "gradient_norm", "dead_fraction", "weight_norm")] + [
        ("cell", "cell?" + urllib.parse.urlencode({"run": "deep", "layer": middle,
                                                   "step": last})),
        ("image", "image?" + urllib.parse.urlencode({
            "run": "deep", "tag": f"activations/{middle}", "step": last, "index": 0})),
        ("attributions", "attributions?run=deep"), ("outputs", "outputs?run=deep")]
    print(f"{'route':<22}{'median s':>10}{'bytes':>12}{'gzip bytes':>12}")
    for name, path in checks:
        times = []
        for _ in range(repeats):
            seconds, raw, sent = _get(f"{base}/{path}")
            times.append(seconds)
        print(f"{name:<22}{statistics.median(times):>10.3f}{len(raw):>12,}{sent:>12,}")
    return health


def time_to_table(url, cells, repeats):
    ready = f"document.querySelectorAll('section[data-view=\"health\"] td[data-tag]').length >= {cells}"
    with chromium("--no-first-run", "--disable-background-networking") as browser:
        if browser is None:
            print("no chromium: apt-get install chromium, then run again for the page timings")
            return
        for where, address in (("tab page alone", "/data/plugin_entry.html?name=tb_explain"),
                               ("inside TensorBoard", "/#tb_explain")):
            times = []
            for _ in range(repeats):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                start = time.perf_counter()
                page.goto(url + address)
                frame = page.main_frame
                while "plugin_entry" not in frame.url:
                    frame = next((f for f in page.frames if "plugin_entry" in f.url), frame)
                    if time.perf_counter() - start > 60:
                        raise SystemExit("the Explain tab's iframe never loaded")
                    page.wait_for_timeout(20)
                frame.wait_for_function(ready, timeout=60_000, polling=20)
                times.append(time.perf_counter() - start)
                page.close()
            median = statistics.median(times)
            print(f"health table, {where:<20} {median:6.2f} s median of {repeats} "
                  f"({median / TARGET_SECONDS:.2f}x the {TARGET_SECONDS:g} s target; "
                  f"all: {', '.join(f'{t:.2f}' for t in times)})")


DATA_TARGET_MS = 200.0


def write_dynamics_run(log_dir, examples, epochs):
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, 16)).astype("float32")
    y = (x[:, :10].argmax(1) + (rng.random(examples) < 0.1) * rng.integers(1, 10, examples)) % 10
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)], name="mlp")
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=512, verbose=0,
              callbacks=[tbx.TrainingDynamics(log_dir, (x, y))])
    return time.perf_counter() - start


def data_view(url, run, repeats):
    timed = """([selector, action, value]) => {
        const node = document.querySelector(selector);
        const start = performance.now();
        if (action === "click") node.click();
        else { node.value = value; node.dispatchEvent(new Event(action)); }
        void document.querySelector("#data-table").offsetHeight;  // and laid out
        return performance.now() - start;
    }"""
    start = time.perf_counter()
    _, body, _ = _get(f"{url}/data/plugin/tb_explain/dynamics?run={run}")
    middle = time.perf_counter()
    _, curve, _ = _get(f"{url}/data/plugin/tb_explain/curve?run={run}&i=0")
    print(f"dynamics route: {len(body) / 1e6:.2f} MB in {middle - start:.2f} s (no curves); "
          f"one example's curve: {len(curve):,} bytes in {time.perf_counter() - middle:.2f} s")
    with chromium() as browser:
        if browser is None:
            print("no chromium: apt-get install chromium, then run again for the Data view")
            return
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(f"{url}/data/plugin_entry.html?name=tb_explain")
        page.wait_for_selector("#run-picker option", state="attached")
        page.select_option("#run-picker", run)
        page.click('nav button[data-view="data"]')
        page.wait_for_selector("#data-table td[data-score]", timeout=120_000)
        print(f"Data view open with the table drawn: {time.perf_counter() - start:.2f} s")
        keys = page.eval_on_selector_all("#data-table th[data-key]",
                                         "els => els.map(e => e.dataset.key)")
        ops = [(f"sort {k}", f'#data-table th[data-key="{k}"]', "click", None)
               for k in keys]
        ops += [("filter label 3", "#data-label", "change", "3"),
                ("filter region ambiguous", "#data-region", "change", "1"),
                ("filter min score 1", "#data-min-score", "input", "1"),
                ("clear filters", "#data-min-score", "input", "")]
        worst = 0.0
        times = {}
        for _ in range(repeats):
            for name, selector, action, value in ops:
                ms = page.evaluate(timed, [selector, action, value])
                times.setdefault(name, []).append(ms)
            for selector in ("#data-label", "#data-region"):
                page.evaluate(timed, [selector, "change", ""])
        for name, values in times.items():
            worst = max(worst, max(values))
            print(f"  {name:<26} median {statistics.median(values):7.1f} ms, max "
                  f"{max(values):7.1f} ms")
        rows = page.get_attribute("#data-table", "data-rows")
        print(f"Data view, {rows} examples: slowest sort or filter {worst:.1f} ms "
              f"({worst / DATA_TARGET_MS:.2f}x the {DATA_TARGET_MS:g} ms target)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--logdir", default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("--parts", default="health,data")
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--dynamics-epochs", type=int, default=50)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    root = args.logdir or tempfile.mkdtemp(prefix="tbx_dashboard_")
    if "data" in parts:
        data_root = os.path.join(root, "data")
        if not os.path.isdir(os.path.join(data_root, "dynamics")):
            seconds = write_dynamics_run(os.path.join(data_root, "dynamics"), args.examples,
                                         args.dynamics_epochs)
            print(f"wrote TrainingDynamics of {args.examples:,} examples x "
                  f"{args.dynamics_epochs} epochs in {seconds:.0f} s")
        server, url = serve(data_root, 0, 0, run="dynamics")
        try:
            data_view(url, "dynamics", args.repeats)
        finally:
            server.terminate()
            server.wait(timeout=30)
        if "health" not in parts:
            if args.logdir is None:
                shutil.rmtree(root, ignore_errors=True)
            return
    try:
        if not os.path.isdir(os.path.join(root, "deep")):
            seconds = write_run(os.path.join(root, "deep"), args.layers, args.epochs)
            print(f"wrote {args.layers} layers x {args.epochs} epochs in {seconds:.0f} s")
        server, url = serve(root, args.layers, args.epochs)
        try:
            health = routes(url, args.repeats)
            cells = sum(v is not None for r in health["rows"] for v in r["values"])
            print(f"health table: {len(health['rows'])} layers x {len(health['epochs'])} "
                  f"epochs, {cells} cells")
            time_to_table(url, cells, args.repeats)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        if args.logdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
