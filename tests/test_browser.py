"""TensorBoard itself serving tb_explain's logs, checked over HTTP and in Chromium.

Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it)
and the `playwright` package (test extra), which drives that browser; no
browser is downloaded. Without chromium the test is skipped, except in CI
(CI=true), where that is a failure.
"""

import json
import os
import shutil
import time
import urllib.request

import pytest

from conftest import fit_suite, serve_tensorboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") != "true":
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

# Text of every element, shadow DOMs included (TensorBoard's Polymer dashboards).
DEEP_TEXT = """() => { const out = [];
  const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.children || []) walk(c);
    if (n.nodeType === 1 && n.children.length === 0 && n.textContent) out.push(n.textContent.trim()); };
  walk(document.body); return out.filter(Boolean).join('\\n'); }"""
DEEP_IMAGES = """() => { const out = [];
  const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.children || []) walk(c);
    if (n.tagName === 'IMG' && n.complete && n.naturalWidth > 0) out.push(n.src); };
  walk(document.body); return out; }"""


def _get(url, data=None):
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("tb")
    for lr in (1e-3, 1e-2):
        fit_suite(root / f"lr{lr}", lr, digits)
    def ready(url):
        tags = _get(f"{url}/data/plugin/images/tags")
        return "lr0.01" in tags and "lr0.001" in tags

    with serve_tensorboard(root, ready, "the runs", "--reload_interval", "1") as url:
        yield url, root


def test_hparams_as_tensorboard_serves_them(tensorboard):
    url, _ = tensorboard
    experiment = _get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"learning_rate", "optimizer", "batch_size", "epochs", "parameters", "model",
            "augment"} <= names
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"hparams/loss", "hparams/val_loss", "hparams/accuracy"} <= metrics
    groups = _get(f"{url}/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"]})["sessionGroups"]
    by_name = {g["name"]: g for g in groups}
    assert by_name["lr0.01"]["hparams"]["learning_rate"] == pytest.approx(0.01)
    assert by_name["lr0.001"]["hparams"]["learning_rate"] == pytest.approx(0.001)
    from tb_explain.runs import load_run

    for name, group in by_name.items():
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        run = load_run(tensorboard[1] / name)
        assert values["hparams/val_loss"] == pytest.approx(run.last("hparams/val_loss"))


@pytest.mark.slow
def test_dashboards_render_in_chromium(tensorboard, tmp_path):
    assert CHROMIUM, "CI must install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    url, _ = tensorboard
    # Dashboards render cards lazily (the first group's, and group headers).
    expected = {
        "scalars": ["activations/cnn/conv/dead_fraction", "attributions", "gradients",
                    "weights", "timing"],
        "histograms": ["activations/cnn/conv/histogram", "gradients/cnn/bn/gamma", "weights"],
        "images": ["activations/cnn/conv", "attributions"],
        "text": ["model/summary", "BatchNormalization", "(None, 6, 6, 4)", "cnn/flat",
                 "outputs/diagnostics"],
        "graphs": ["Main Graph", "Op graph", "Conceptual graph"],
        "hparams": ["learning_rate", "augment", "val_loss", "lr0.01", "lr0.001"],
        "pr_curves": ["outputs/val/pr_curve/0", "outputs/train/pr_curve/9"],
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            for dashboard, needles in expected.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/#{dashboard}")
                deadline = time.time() + 60
                while True:
                    text = page.evaluate(DEEP_TEXT)
                    missing = [n for n in needles if n not in text]
                    if not missing:
                        break
                    assert time.time() < deadline, f"{dashboard}: {missing} never rendered"
                    page.wait_for_timeout(500)
                if dashboard == "images":
                    deadline = time.time() + 60
                    while len(page.evaluate(DEEP_IMAGES)) < 4:
                        assert time.time() < deadline, "images dashboard shows no images"
                        page.wait_for_timeout(500)
                    assert all("/data/plugin/images/" in src for src in page.evaluate(DEEP_IMAGES))
                    page.screenshot(path=str(tmp_path / "images.png"))
                page.close()
        finally:
            browser.close()
    assert (tmp_path / "images.png").stat().st_size > 10_000
