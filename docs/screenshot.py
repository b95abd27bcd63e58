"""Regenerates the README's screenshots of the demo's logs in TensorBoard:
docs/images-dashboard.png (Images), docs/pr-curves-dashboard.png (PR Curves),
docs/attributions-comparison.png (the attribution methods side by side) and the
Explain tab's views, light and dark (docs/explain-<view>[-dark].png; the
demo's digits and cancer runs, so the Runs view compares two; the Data view
and docs/dynamics-data-map.png on a third digits run with 10% of its
training labels flipped, `--flip 0.1`; the Compare view: the digits run's
last epoch against its first), and docs/attention-heads.png
(AttentionMaps on a tiny keras_hub GPT-2).

Usage (needs Debian's chromium and the test extra's playwright):
    python docs/screenshot.py
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    from playwright.sync_api import sync_playwright

    logs = tempfile.mkdtemp(prefix="tbx_docs_")
    subprocess.run([sys.executable, os.path.join(ROOT, "demo_train.py"), "--logdir",
                    os.path.join(logs, "digits"), "--epochs", "4", "--freq", "2"], check=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "demo_train.py"), "--dataset", "cancer",
                    "--logdir", os.path.join(logs, "cancer"), "--epochs", "4", "--freq", "2"],
                   check=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "demo_train.py"), "--logdir",
                    os.path.join(logs, "noisy"), "--flip", "0.1"], check=True)
    save_data_map(os.path.join(logs, "noisy"))
    attention_picture(os.path.join(logs, "lm"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logs,
                               "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                if b"digits" in urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/data/plugin/images/tags").read():
                    break
            except OSError:
                pass
            time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--no-sandbox", "--disable-gpu"])
            for dashboard, tags, name, height, actual_size in (
                    ("images", "activations/digits_cnn/conv1$|attributions/input/overlay",
                     "images-dashboard.png", 1000, False),
                    ("pr_curves", "outputs/validation/pr_curve/[0-5]$",
                     "pr-curves-dashboard.png", 1000, False),
                    ("images", "attributions/comparison", "attributions-comparison.png", 900,
                     True)):
                page = browser.new_page(viewport={"width": 1400, "height": height})
                page.goto(f"http://127.0.0.1:{port}/#{dashboard}")
                page.wait_for_timeout(5000)
                page.mouse.click(700, 93)  # the "Filter tags" box
                page.keyboard.type(tags)
                page.wait_for_timeout(8000)
                if actual_size:
                    page.mouse.click(38, 96)  # "Show actual image size"
                    page.wait_for_timeout(3000)
                page.screenshot(path=os.path.join(ROOT, "docs", name))
            explain_tab(browser, f"http://127.0.0.1:{port}")
            browser.close()
    finally:
        server.terminate()
        shutil.rmtree(logs, ignore_errors=True)


#: (view, run, what to click first): the Explain tab's screenshots.
EXPLAIN_VIEWS = (("health", "digits", 'tr[data-layer="digits_cnn/conv2"] td[data-epoch="2"]'),
                 ("attributions", "digits", None), ("outputs", "digits", None),
                 ("runs", "digits", None), ("attributions", "cancer", None),
                 ("data", "noisy", None), ("attention", "lm", None), ("compare", "digits", None))


def save_data_map(run_dir):
    """The last logged data map of `run_dir`, as docs/dynamics-data-map.png."""
    sys.path.insert(0, ROOT)
    from PIL import Image

    import tb_explain as tbx

    image = tbx.load_run(run_dir).images("dynamics/data_map")[-1].images[0]
    Image.fromarray(image).save(os.path.join(ROOT, "docs", "dynamics-data-map.png"))


def explain_tab(browser, url):
    """The Explain tab's views, opened on their own page (the tab's iframe),
    in the light and the dark theme."""
    for _ in range(120):  # both runs read
        with urllib.request.urlopen(f"{url}/data/plugin/tb_explain/runs") as response:
            if len(json.loads(response.read())["runs"]) == 4:
                break
        time.sleep(1)
    for dark in (False, True):
        for view, run, click in EXPLAIN_VIEWS:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/data/plugin_entry.html?name=tb_explain"
                      + ("&theme=dark" if dark else ""))
            page.wait_for_selector("#run-picker option", state="attached")
            page.select_option("#run-picker", run)
            page.click(f'nav button[data-view="{view}"]')
            page.wait_for_selector(f'section[data-view="{view}"]')
            if view == "runs":
                for name in ("digits", "cancer"):
                    page.check(f'input[aria-label="compare {name}"]')
            if click:
                page.click(click)
            if view == "compare":  # the demo's last epoch against its first
                page.wait_for_selector("#compare-b")
                page.select_option("#compare-b", "digits")
                page.wait_for_function("() => (document.querySelector('#compare-title') || {})"
                                       ".textContent?.includes('epoch 0 (B)')")
                page.wait_for_selector("#compare-attributions canvas")
                page.evaluate("document.querySelector('#compare-two').scrollIntoView()")
            if view == "data":  # hover the lowest point: a tooltip with its thumbnail
                page.wait_for_selector("#data-table td[data-score]")
                box = page.locator("#data-map").bounding_box()
                page.mouse.move(box["x"] + 48, box["y"] + 312)
            page.wait_for_timeout(3000)
            suffix = ("-" + run if run not in ("digits", "noisy", "lm") else "") + (
                "-dark" if dark else "")
            page.screenshot(path=os.path.join(ROOT, "docs", f"explain-{view}{suffix}.png"))
            page.close()



def attention_picture(log_dir):
    """docs/attention-heads.png: AttentionMaps on a tiny GPT-2 causal LM
    (keras_hub, random weights, a made-up vocabulary, a padded sample),
    fitted with `tbx.explain` into `log_dir` (the Attention view's run)."""
    import keras
    import keras_hub
    import numpy as np
    from PIL import Image

    sys.path.insert(0, ROOT)
    import tb_explain as tbx

    words = ["<pad>", "the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "dog",
             "which", "ran", "away", "quickly", "."]
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=len(words), num_layers=2,
                                             num_heads=2, hidden_dim=32, intermediate_dim=64,
                                             max_sequence_length=12)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sentence = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 10, 15]
    rng = np.random.default_rng(0)
    ids = np.array([sentence] * 8 + [list(rng.integers(1, 16, 12)) for _ in range(24)], "int32")
    mask = np.ones_like(ids, bool)
    mask[0, 10:] = False
    x = {"token_ids": ids, "padding_mask": mask}
    labels = np.roll(ids, -1, 1)
    model.fit(x, labels, sample_weight=mask.astype("float32"), epochs=20, verbose=0,
              callbacks=tbx.explain(log_dir, data=({k: v[:1] for k, v in x.items()}, labels[:1]),
                                    freq=5, vocabulary=words))
    image = tbx.load_run(log_dir).images("attention/transformer_layer_1/self_attention")[-1]
    Image.fromarray(image.images[0]).save(os.path.join(ROOT, "docs", "attention-heads.png"))


if __name__ == "__main__":
    main()
