"""The Explain tab: its routes on runs written by the real callbacks, every
value compared with what TensorBoard's own EventAccumulator reads (exact),
and the page itself in headless Chromium."""

import json
import math
import os
import shutil
import time
import urllib.request

import numpy as np
import pytest
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as wtest

from _tf import tf
from conftest import Run, serve_tensorboard
from dashboard_runs import HTML_NAME, write_runs
import tb_explain as tbx
from tb_explain import tags
from tb_explain.dashboard.plugin import ExplainPlugin, _layers_from_summary


@pytest.fixture(scope="module")
def logdir(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("explain")
    names = write_runs(root, digits)
    return root, names


def _plugin(root):
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, str(root))
    return ExplainPlugin(base_plugin.TBContext(logdir=str(root), data_provider=provider))


@pytest.fixture(scope="module")
def client(logdir):
    plugin = _plugin(logdir[0])
    apps = plugin.get_plugin_apps()

    def app(environ, start_response):
        route = environ["PATH_INFO"]
        if route not in apps:
            start_response("404 NOT FOUND", [])
            return [b""]
        return apps[route](environ, start_response)

    return plugin, wtest.Client(app)


def _json(client, route, **params):
    response = client.get(route, query_string=params)
    return response.status_code, json.loads(response.data)


def _logged(value):
    """A logged scalar as the routes send it (NaN/Inf as strings)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


@pytest.fixture(scope="module")
def runs(logdir):
    root, names = logdir
    return {name: Run(root / name) for name in names}


def test_is_active_and_lists_only_tb_explain_runs(client, logdir, tmp_path):
    plugin, http = client
    assert plugin.is_active()
    status, body = _json(http, "/runs")
    assert status == 200
    assert [r["run"] for r in body["runs"]] == sorted(logdir[1])  # not lr0.01/train
    _, listed = _json(http, "/list")  # the run picker's light listing
    assert [r["run"] for r in listed["runs"]] == sorted(logdir[1])
    for row in listed["runs"]:
        run = Run(logdir[0] / row["run"])
        assert row["step"] == max(max(run.steps(t)) for t in run.tags if t.startswith("timing/"))
    keras_only = tmp_path / "keras_only"
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((4, 2)), np.zeros(4), epochs=1, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(keras_only)) if tf is not None
                         else tbx.TrainingCurves(str(keras_only))])  # curves only
    assert not _plugin(keras_only).is_active()


def test_runs_route_matches_the_logs(client, runs):
    _, http = client
    _, body = _json(http, "/runs", signal="dead_fraction")
    by_run = {r["run"]: r for r in body["runs"]}
    assert by_run["lr0.01"]["hparams"]["learning_rate"] == pytest.approx(0.01)
    assert by_run["lr0.001"]["hparams"]["learning_rate"] == pytest.approx(0.001)
    assert by_run["strict"]["hparams"]["privacy"] == "strict"
    for name, row in by_run.items():
        for tag, point in row["metrics"].items():
            assert point["value"] == _logged(runs[name].value(tag, point["step"])), (name, tag)
            assert point["step"] == max(runs[name].steps(tag))
        worst = row["worst"]
        assert worst["value"] == _logged(runs[name].value(worst["tag"], worst["step"]))
        dead = {t: runs[name].value(t, worst["step"]) for t in runs[name].tags
                if t.endswith("/dead_fraction")}
        assert worst["value"] == max(_logged(v) for v in dead.values())
    assert by_run["nan"]["alerts"] > 0
    # the healthy run's one alert: its BatchNormalization statistics lag (12 steps at 0.99)
    healthy = runs["lr0.01"]
    lag = [t for t in healthy.tags if t.endswith("/alerts")]
    assert lag == ["outputs/alerts"] and by_run["lr0.01"]["alerts"] == 1
    assert "BatchNormalization lag" in healthy.text("outputs/alerts")
    _, health = _json(http, "/health", run="lr0.01", signal="dead_fraction")
    (alert,) = health["alerts"]  # shown as plain text: the Markdown marks dropped
    assert alert["text"].startswith("BatchNormalization lag at epoch")
    assert "**" not in alert["text"] and "`" not in alert["text"]


@pytest.mark.parametrize("signal", sorted(tags.SIGNALS))
def test_health_matrix_is_what_was_logged(client, runs, signal):
    _, http = client
    for name, run in runs.items():
        status, body = _json(http, "/health", run=name, signal=signal)
        assert status == 200
        layers = _layers_from_summary(run.text(tags.MODEL_SUMMARY))
        seen = 0
        for row in body["rows"]:
            assert len(row["values"]) == len(body["epochs"])
            cells = [(step, value) for step, value in zip(body["epochs"], row["values"])
                     if value is not None]
            for step, value in cells:
                assert value == _logged(run.value(row["tag"], step)), (name, row["tag"], step)
                seen += 1
            assert [step for step, _ in cells] == run.steps(row["tag"])
        pattern = tags.SIGNALS[signal][1]
        expected = [t for t in run.tags if t.startswith(pattern.split("{}")[0])
                    and t.endswith(pattern.split("{}")[1])
                    and (not signal.startswith("gradient")
                         or t[len("gradients/"):-len(pattern.split("{}")[1])] in layers)]
        assert seen == sum(len(run.steps(t)) for t in expected)
        rows = [r["name"] for r in body["rows"]]
        in_model = [r for r in rows if r in layers]
        assert in_model == [p for p in layers if p in in_model]  # model order


def test_health_opens_with_the_loss_curves(client, logdir):
    """The Health view's curves are the `epoch_loss` of the run's `train` and
    `validation` runs, every epoch (Keras's callback or TrainingCurves)."""
    _, http = client
    root, _ = logdir
    for name in ("lr0.01", "table"):
        _, body = _json(http, "/health", run=name, signal="gradient_norm")
        curves = body["curves"]
        assert curves["tag"] == "epoch_loss"
        train = Run(root / name / "train")
        assert curves["train"] == [[s, _logged(train.value("epoch_loss", s))]
                                   for s in train.steps("epoch_loss")]
        assert len(curves["train"]) == (3 if name == "lr0.01" else 2)
        if name == "lr0.01":
            val = Run(root / name / "validation")
            assert curves["validation"] == [[s, _logged(val.value("epoch_loss", s))]
                                            for s in val.steps("epoch_loss")]
            assert len(curves["validation"]) == 3
        else:
            assert curves["validation"] == []


def test_health_alerts_of_a_divergence(client, runs):
    _, http = client
    _, body = _json(http, "/health", run="nan", signal="weight_norm")
    kinds = {(a["kind"], a["step"]) for a in body["alerts"]}
    assert ("nonfinite", 1) in kinds and ("nonfinite", 2) in kinds
    cell = next(r for r in body["rows"] if r["name"] == "tiny/dense/kernel")
    assert dict(zip(body["epochs"], cell["values"]))[1] == "NaN"
    marked = [a for a in body["alerts"] if "tiny/dense/kernel" in a["layers"]]
    assert marked and all(a["step"] >= 1 for a in marked)


def test_cell_image_and_histogram(client, runs):
    _, http = client
    status, body = _json(http, "/cell", run="lr0.01", layer="cnn/conv", step=2)
    assert status == 200 and body["image"] and body["samples"] == 4
    hist = runs["lr0.01"].value("activations/cnn/conv/histogram", 2)
    np.testing.assert_array_equal(np.asarray(body["histogram"], float), hist.astype(float))
    png = http.get("/image", query_string={"run": "lr0.01", "tag": body["image_tag"],
                                            "step": 2, "index": 1})
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert png.data == runs["lr0.01"].value("activations/cnn/conv", 2)[3]


def test_attributions_and_sanity(client, runs):
    _, http = client
    _, body = _json(http, "/attributions", run="heads")
    assert {b["method"] for b in body["sanity"]} == {"saliency"}
    for badge in body["sanity"]:
        assert badge["value"] == _logged(runs["heads"].value(badge["tag"], badge["step"]))
        assert badge["passes"] == (badge["value"] < tags.SANITY_PASS_BELOW)
    labels = {c["label"] for c in body["columns"]}
    assert {"input", "integrated gradients", "saliency"} <= labels
    for column in body["columns"]:
        assert column["steps"] == runs["heads"].steps(column["tag"])
    _, strict = _json(http, "/attributions", run="strict")
    assert "input" not in {c["label"] for c in strict["columns"]}  # no raw input
    for column in strict["columns"]:
        assert column["samples"] == 1  # means over the probe only


def test_feature_scores_and_rules_of_a_table_model(client, runs):
    _, http = client
    _, body = _json(http, "/attributions", run="table")
    assert not body["columns"]  # a table: no image maps
    labels = [f["label"] for f in body["features"]]
    assert labels == ["integrated gradients (input)", "permutation importance"]
    for source in body["features"]:
        assert sorted(source["tags"]) == ["age", "dose", "noise", "weight"]
        for tag in source["tags"].values():
            points = body["scalars"][tag]
            assert [p[0] for p in points] == runs["table"].steps(tag)
            for step, value in points:
                assert value == _logged(runs["table"].value(tag, step))
    texts = {t["tag"]: t["points"] for t in body["texts"]}
    assert {"rules/text", "importance/ranking", "attributions/input/ranking"} <= set(texts)
    for tag, points in texts.items():
        assert points[-1][1] == runs["table"].text(tag)
    assert body["epochs"] == runs["table"].steps("rules/text")
    _, outputs = _json(http, "/outputs", run="table")  # a table's mistakes are text
    mistakes = {t["tag"]: t["points"] for t in outputs["mistakes"]}
    assert mistakes["outputs/val/mistakes"][-1][1] == runs["table"].text("outputs/val/mistakes")


def test_outputs_route(client, runs):
    _, http = client
    _, body = _json(http, "/outputs", run="nan")
    count = 0
    for dataset in body["datasets"]:
        for metric in dataset["metrics"]:
            for step, value in metric["points"]:
                assert value == _logged(runs["nan"].value(metric["tag"], step))
                count += 1
    assert count > 10
    assert body["diagnostics"][-1][1] == runs["nan"].text(tags.DIAGNOSTICS)
    assert HTML_NAME in runs["nan"].text("outputs/val/confusion")  # the canary is logged
    assert {"outputs/val/confusion_matrix", "outputs/val/mistakes"} <= {
        i["tag"] for i in body["images"]}


def test_strict_run_sends_no_raw_input(client, runs):
    _, http = client
    for tag in ("activations/input", "attributions/input/probe", "attributions/input/overlay"):
        status, body = _json(http, "/image", run="strict", tag=tag, step=1, index=0)
        assert status == 400 and "unknown image tag" in body["error"]


@pytest.mark.parametrize("route, params, message", [
    ("/health", {}, "missing parameter `run`"),
    ("/health", {"run": "nope"}, "unknown run 'nope'"),
    ("/health", {"run": "lr0.01", "signal": "nope"}, "unknown signal 'nope'"),
    ("/cell", {"run": "lr0.01", "layer": "cnn/conv", "step": "x"}, "`step` must be an int"),
    ("/cell", {"run": "lr0.01", "layer": "../etc", "step": 0}, "no activations of layer"),
    ("/image", {"run": "lr0.01", "tag": "../../etc/passwd", "step": 0}, "unknown image tag"),
    ("/image", {"run": "lr0.01", "tag": "activations/cnn/conv", "step": 99}, "no step 99"),
    ("/image", {"run": "lr0.01", "tag": "activations/cnn/conv", "step": 2, "index": 9},
     "`index` must be in"),
    ("/runs", {"signal": "<b>"}, "unknown signal"),
])
def test_bad_parameters_are_400_with_a_message(client, route, params, message):
    _, http = client
    status, body = _json(http, route, **params)
    assert status == 400 and message in body["error"]


# -- the page in Chromium ----------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(logdir):
    if CHROMIUM is None and os.environ.get("CI") != "true":
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    def ready(url):
        with urllib.request.urlopen(f"{url}/data/plugin/tb_explain/runs") as r:
            return len(json.loads(r.read())["runs"]) == len(logdir[1])

    with serve_tensorboard(logdir[0], ready, "the Explain tab", "--samples_per_plugin",
                           "images=100") as url:
        yield url


def _check_values(frame, runs, run):
    """Every shown `data-value` equals the logged scalar at `data-tag`/`data-epoch`."""
    shown = frame.eval_on_selector_all("[data-value]", "els => els.map(e => [e.dataset.tag, "
                                       "e.dataset.epoch, e.dataset.value])")
    for tag, epoch, value in shown:
        logged = _logged(runs[run].value(tag, int(epoch)))
        assert value == (logged if isinstance(logged, str) else repr(logged)) or (
            not isinstance(logged, str) and float(value) == logged), (run, tag, epoch, value)
    return len(shown)


@pytest.mark.slow
def test_explain_tab_in_chromium(served, runs, logdir, tmp_path):
    assert CHROMIUM, "CI must install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    errors, outside = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(served) or r.url.startswith(
                "data:") or r.url.startswith("blob:") else outside.append(r.url))
            page.goto(f"{served}/#tb_explain")
            deadline = time.time() + 60
            frame = None
            while frame is None:
                frame = next((f for f in page.frames if "plugin_entry.html" in f.url), None)
                assert time.time() < deadline, "the Explain tab's iframe never loaded"
                page.wait_for_timeout(300)
            frame.wait_for_selector('section[data-view="health"]', timeout=60000)
            frame.select_option("#run-picker", "lr0.01")
            frame.wait_for_selector('section[data-view="health"] td[data-tag]', timeout=30000)
            assert _check_values(frame, runs, "lr0.01") > 4
            for series in ("train", "validation"):  # the loss curves above the matrix
                shown = frame.eval_on_selector_all(
                    f'#health-curves g[data-series="{series}"] circle',
                    "els => els.map(e => [Number(e.dataset.step), Number(e.dataset.y)])")
                logged = Run(logdir[0] / "lr0.01" / series)
                assert shown == [[s, pytest.approx(float(logged.value("epoch_loss", s)))]
                                 for s in logged.steps("epoch_loss")]
            cell = frame.query_selector('tr[data-layer="cnn/conv"] td[data-epoch="2"]')
            cell.click()
            frame.wait_for_selector("#cell-image", timeout=30000)
            assert frame.get_attribute("#cell-image", "data-tag") == "activations/cnn/conv"
            frame.wait_for_function("() => document.querySelector('#cell-image').naturalWidth > 0")
            # attributions: the slider scrubs the epochs
            frame.click('nav button[data-view="attributions"]')
            frame.wait_for_selector('section[data-view="attributions"] #epoch-slider')
            first = frame.get_attribute("#attribution-grid img", "data-step")
            frame.fill("#epoch-slider", "0")
            frame.dispatch_event("#epoch-slider", "input")
            assert first == "2" and frame.get_attribute("#attribution-grid img",
                                                         "data-step") == "0"
            # a table model: each feature's scores at the slider's epoch
            frame.select_option("#run-picker", "table")
            frame.wait_for_selector('section[data-view="attributions"] #feature-table')
            assert _check_values(frame, runs, "table") >= 8
            assert frame.query_selector('.markdown[data-tag="rules/text"] li')  # rules as a list
            # outputs of the run whose class names hold HTML
            frame.select_option("#run-picker", "nan")
            frame.click('nav button[data-view="outputs"]')
            frame.wait_for_selector('section[data-view="outputs"] #metrics-table')
            assert _check_values(frame, runs, "nan") > 10
            assert frame.query_selector('img[src="x"]') is None  # the HTML canary ran nothing
            frame.click('nav button[data-view="health"]')
            frame.wait_for_selector("#alert-timeline li")
            assert _check_values(frame, runs, "nan") > 4
            frame.click('nav button[data-view="runs"]')
            frame.wait_for_selector("#runs-table tr[data-run]")
            shown = frame.eval_on_selector_all("tr[data-run]", "els => els.map(e => e.dataset.run)")
            assert sorted(shown) == sorted(runs)
            for run in runs:  # each row's numbers are its own run's
                values = frame.eval_on_selector_all(
                    f'tr[data-run="{run}"] [data-value]',
                    "els => els.map(e => [e.dataset.tag, e.dataset.epoch, e.dataset.value])")
                for tag, epoch, value in values:
                    assert float(value) == _logged(runs[run].value(tag, int(epoch))) or \
                        value == _logged(runs[run].value(tag, int(epoch)))
            frame.check('input[aria-label="compare lr0.001"]')
            frame.check('input[aria-label="compare lr0.01"]')
            frame.wait_for_selector("#compare-table")
            assert "differs" in frame.inner_html("#compare-table")
            page.screenshot(path=str(tmp_path / "runs.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert not outside, outside


def test_dynamics_route_is_what_was_logged(client, logdir):
    import io

    from PIL import Image

    import tb_explain as tbx

    root, _ = logdir
    _, http = client
    status, body = _json(http, "/dynamics", run="lr0.01")
    assert status == 200
    logged = tbx.load_run(root / "lr0.01").dynamics
    assert body["examples"] == len(logged) > 0 and body["epochs"] == list(logged.epochs)
    assert body["label"] == logged.labels.tolist()
    assert body["predicted"] == logged.predicted[-1].tolist()
    assert body["datasets"] == ["train"] and body["index"] == logged.index.tolist()
    for name, values in logged.scores().items():
        np.testing.assert_allclose(body["scores"][name], np.round(values, 5), atol=1e-12,
                                   err_msg=name)
    assert "probability" not in body  # curves come one example at a time
    for i in (0, len(logged) - 1):
        status, one = _json(http, "/curve", run="lr0.01", i=i)
        assert status == 200 and one["epochs"] == list(logged.epochs)
        np.testing.assert_allclose(one["probability"], np.round(logged.probability[:, i], 4),
                                   atol=1e-12)
    status, bad = _json(http, "/curve", run="lr0.01", i=len(logged))
    assert status == 400 and "`i` must be in" in bad["error"]
    assert body["likely"] == logged.likely_label.tolist()
    np.testing.assert_array_equal(body["noise_counts"],
                                  np.rint(logged.noise_matrix * len(logged)).astype(int))
    assert np.sum(body["noise_counts"]) == len(logged)
    assert body["region"] == logged.region.tolist() and body["thumbnails"]
    response = http.get("/thumbnail", query_string={"run": "lr0.01", "i": 3})
    thumbs = Run(root / "lr0.01").value(tags.DYNAMICS_THUMBNAILS)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.data))), thumbs[3])
    status, bad = _json(http, "/thumbnail", run="lr0.01", i=len(thumbs))
    assert status == 400 and "`i` must be in" in bad["error"]
    # privacy="strict": nothing per example
    assert _json(http, "/dynamics", run="strict")[1]["examples"] == 0
    status, bad = _json(http, "/thumbnail", run="strict", i=0)
    assert status == 400 and "no thumbnails" in bad["error"]


@pytest.mark.slow
def test_data_view_in_chromium(served, client):
    assert CHROMIUM, "CI must install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    _, http = client
    _, body = _json(http, "/dynamics", run="lr0.01")
    score = np.array(body["scores"]["mislabel_score"])
    aum = np.array(body["scores"]["aum"])
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox",
                                                                    "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{served}/data/plugin_entry.html?name=tb_explain")
            page.wait_for_selector("#run-picker option", state="attached")
            page.select_option("#run-picker", "lr0.01")
            page.click('nav button[data-view="data"]')
            page.wait_for_selector('section[data-view="data"] #data-table td[data-score]')
            shown = page.eval_on_selector_all(
                "#data-table td[data-score]",
                "els => els.map(e => [e.dataset.index, e.dataset.score, e.dataset.value])")
            assert len(shown) == 7 * min(len(score), 200)
            for index, name, value in shown:  # every shown score is the route's
                assert float(value) == body["scores"][name][int(index)]
            rows = page.eval_on_selector_all("#data-table tbody tr", "els => els.map(e => "
                                             "Number(e.dataset.index))")
            assert rows == list(np.argsort(-score, kind="stable")[:200])  # most suspect first
            page.click('#data-table th[data-key="aum"]')  # a score sorts highest first
            page.click('#data-table th[data-key="aum"]')  # then lowest first
            rows = page.eval_on_selector_all("#data-table tbody tr", "els => els.map(e => "
                                             "Number(e.dataset.index))")
            assert rows == list(np.argsort(aum, kind="stable")[:200])
            page.select_option("#data-label", "3")
            rows = page.eval_on_selector_all("#data-table tbody tr", "els => els.map(e => "
                                             "Number(e.dataset.index))")
            label = np.array(body["label"])
            assert rows == [i for i in np.argsort(aum, kind="stable") if label[i] == 3][:200]
            page.click(f'#data-table tr[data-index="{rows[0]}"]')
            assert page.text_content("#data-picked h3") == f"Example train[{rows[0]}]"
            page.wait_for_function("() => document.querySelector('#data-picked img.thumb')"
                                   ".naturalWidth > 0")
            page.wait_for_selector("#data-curve circle")
            curve = page.eval_on_selector_all("#data-curve circle", "els => els.map(e => "
                                              "Number(e.dataset.value))")
            assert curve == _json(http, "/curve", run="lr0.01", i=rows[0])[1]["probability"]
            # the noise matrix: the most frequent confusion first, with its count
            counts = np.array(body["noise_counts"])
            off = counts * (1 - np.eye(len(counts), dtype=int))
            if off.any():
                given, likely = np.unravel_index(np.argmax(off), off.shape)
                first = page.eval_on_selector("#data-noise li", "e => [e.dataset.given, "
                                              "e.dataset.likely, e.textContent]")
                assert first[:2] == [str(given), str(likely)]
                assert first[2].startswith(f"{off[given, likely]} of the ")
        finally:
            browser.close()
    assert not errors, errors


def test_overlay_route_is_what_was_logged(client, logdir):
    _, http = client
    root, _ = logdir
    status, body = _json(http, "/overlay")
    assert status == 200 and sorted(body["runs"]) == sorted(
        r["run"] for r in _json(http, "/list")[1]["runs"])
    status, body = http.get("/overlay", query_string=[("run", "lr0.001"), ("run", "lr0.01")]
                            ).status_code, json.loads(http.get("/overlay", query_string=[
                                ("run", "lr0.001"), ("run", "lr0.01")]).data)
    assert body["runs"] == ["lr0.001", "lr0.01"]
    for name in body["runs"]:
        assert body["hparams"][name]["learning_rate"] == pytest.approx(float(name[2:]))
        train = Run(root / name / "train")
        assert body["curves"][name]["train"] == [[s, _logged(train.value(tags.EPOCH_LOSS, s))]
                                                 for s in train.steps(tags.EPOCH_LOSS)]
        own = Run(root / name)
        for tag, per in body["metrics"].items():
            assert per[name] == [[s, _logged(own.value(tag, s))] for s in own.steps(tag)]
    assert "outputs/val/accuracy" in body["metrics"]
    tag = "weights/cnn/conv/kernel"
    assert body["histograms"][tag] == 2
    query = [("run", "lr0.001"), ("run", "lr0.01"), ("tag", tag), ("step", "0")]
    body = json.loads(http.get("/overlay", query_string=query).data)
    assert body["histogram"]["step"] == 0 and body["histogram"]["steps"] == [0, 2]
    for name in ("lr0.001", "lr0.01"):
        np.testing.assert_array_equal(body["histogram"]["runs"][name],
                                      Run(root / name).value(tag, 0))
    bad = json.loads(http.get("/overlay", query_string=[("run", "lr0.01"), ("tag", "weights/x")]
                              ).data)
    assert "no chosen run logged it" in bad["error"]
    body = json.loads(http.get("/overlay", query_string=[("tag", tag)]).data)
    assert sorted(body["histogram"]["runs"]) == ["lr0.001", "lr0.01"]  # the runs that have it
    assert "unknown run 'nope'" in _json(http, "/overlay", run="nope")[1]["error"]


@pytest.mark.slow
def test_compare_view_in_chromium(served, client, runs, tmp_path):
    assert CHROMIUM, "CI must install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    _, http = client
    _, expected = _json(http, "/compare", a="lr0.01", b="lr0.001")
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox",
                                                                    "--disable-gpu"])
        try:
            for theme in ("light", "dark"):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{served}/data/plugin_entry.html?name=tb_explain&theme={theme}")
                page.wait_for_selector("#run-picker option", state="attached")
                page.select_option("#run-picker", "lr0.01")
                page.click('nav button[data-view="compare"]')
                page.wait_for_selector("#cka-table td[data-value]", timeout=60000)
                page.select_option("#compare-b", "lr0.001")
                page.wait_for_function("() => document.querySelector('#compare-title') && "
                                       "document.querySelector('#compare-title').textContent == "
                                       "'lr0.01 at epoch 2 (A) vs lr0.001 at epoch 2 (B)'")
                page.wait_for_selector("#cka-table td[data-value]")
                page.wait_for_selector("#health-ratio-table tr[data-layer]")
                page.wait_for_selector("#compare-disagreement p[data-dataset]")
                shown = page.eval_on_selector_all("#cka-table td[data-value]", "els => els.map("
                                                  "e => [e.dataset.a, e.dataset.b, e.dataset.value])")
                cka = expected["cka"]
                assert len(shown) == len(cka["layers_a"]) * len(cka["layers_b"])
                for a, b, value in shown:
                    assert float(value) == cka["matrix"][cka["layers_a"].index(a)][
                        cka["layers_b"].index(b)]
                ratios = page.eval_on_selector_all(
                    "#health-ratio-table tr[data-layer]", "els => els.map(e => [e.dataset.layer, "
                    "e.querySelector('td').dataset.value])")
                assert {k: float(v) for k, v in ratios} == expected["health"]
                for name, d in expected["disagreement"].items():
                    text = page.text_content(f'#compare-disagreement p[data-dataset="{name}"]')
                    assert f"A right and B wrong: {len(d['a_only'])}" in text
                    rows = page.eval_on_selector_all(
                        f'table[data-dataset="{name}"] tr[data-row]', "els => els.map(e => "
                        "Number(e.dataset.row))")
                    assert rows == (d["a_only"][:100] + d["b_only"][:100])
                # both runs' integrated gradients of a probe sample, and their correlation
                page.wait_for_selector("#compare-spearman")
                assert float(page.get_attribute("#compare-spearman", "data-value")) == \
                    expected["attributions"]["attributions/input"][0]
                page.select_option("#compare-sample", "2")
                page.wait_for_function(
                    "v => document.querySelector('#compare-spearman').dataset.value == v",
                    arg=str(expected["attributions"]["attributions/input"][2]))
                assert len(page.query_selector_all("#compare-attributions canvas")) == 2
                # many runs: one curve per ticked run; the differing hyperparameter only
                series = page.eval_on_selector_all("#overlay-train g[data-series]",
                                                   "els => els.map(e => e.dataset.series)")
                assert set(series) >= {"lr0.001", "lr0.01"}
                heads = page.eval_on_selector_all("#hparams-table th", "els => els.map(e => "
                                                  "e.textContent)")
                assert "learning_rate" in heads and "optimizer" not in heads
                page.uncheck("#only-differing")
                heads = page.eval_on_selector_all("#hparams-table th", "els => els.map(e => "
                                                  "e.textContent)")
                assert "optimizer" in heads
                page.select_option('select[aria-label="histogram"]', "weights/cnn/conv/kernel")
                page.wait_for_selector("#overlay-histogram g[data-series]")
                # two epochs of one run
                page.select_option("#compare-b", "lr0.01")
                page.wait_for_function("() => document.querySelector('#compare-title')"
                                       " && document.querySelector('#compare-title').textContent"
                                       ".includes('epoch 0 (B)')")
                page.wait_for_selector("#stability-table td[data-value]")
                shown = page.eval_on_selector_all(  # CKA to the previous epoch, as logged
                    "#stability-table td[data-value]", "els => els.map(e => [e.dataset.tag, "
                    "e.dataset.epoch, e.dataset.value])")
                assert shown and all(float(v) == _logged(runs["lr0.01"].value(t, int(e)))
                                     for t, e, v in shown)
                page.screenshot(path=str(tmp_path / f"compare_{theme}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert not errors, errors
