"""tbx.Embeddings: read back through TensorBoard's own Projector plugin."""

import hashlib
import io
import os

import keras
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from werkzeug import test as wtest

import tb_explain as tbx
from conftest import serve_tensorboard
from tb_explain.render import images

NAMES = [f"digit {i}" for i in range(10)]


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x, data.target.astype("int64")


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dropout(0.1, name="drop"),
        keras.layers.Dense(10, activation="softmax", name="out")], name="net")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


class Projector:
    """TensorBoard's Projector plugin on a logdir, through its HTTP routes."""

    def __init__(self, root):
        multiplexer = plugin_event_multiplexer.EventMultiplexer()
        multiplexer.AddRunsFromDirectory(str(root))
        multiplexer.Reload()
        provider = tb_data_provider.MultiplexerDataProvider(multiplexer, str(root))
        self.plugin = ProjectorPlugin(base_plugin.TBContext(logdir=str(root),
                                                            data_provider=provider))
        apps = self.plugin.get_plugin_apps()
        self.client = wtest.Client(lambda env, start: apps[env["PATH_INFO"]](env, start))

    def get(self, route, **params):
        response = self.client.get(route, query_string=params)
        assert response.status_code == 200, (route, params, response.data[:300])
        return response.data

    def runs(self):
        import json

        return json.loads(self.get("/runs"))

    def config(self, run):
        import json

        return json.loads(self.get("/info", run=run))

    def tensor(self, run, name, shape):
        return np.frombuffer(self.get("/tensor", run=run, name=name), np.float32).reshape(shape)

    def metadata(self, run, name):
        lines = self.get("/metadata", run=run, name=name).decode().splitlines()
        head = lines[0].split("\t")
        return [dict(zip(head, line.split("\t"))) for line in lines[1:]]

    def sprite(self, run, name):
        return np.asarray(Image.open(io.BytesIO(self.get("/sprite_image", run=run, name=name))))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A digits CNN fitted 3 epochs (events at 0 and 2) with the weights each
    event saw, then resumed for epochs 3-4."""
    x, y = _digits()
    data = {"train": (x[:1200], y[:1200]), "val": (x[1200:], y[1200:])}
    root = tmp_path_factory.mktemp("emb")
    log_dir = str(root / "run")
    model = _model()
    seen = {}
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.__setitem__(epoch, model.get_weights()))
    callback = tbx.Embeddings(log_dir, data, max_points=300, class_names=NAMES, freq=2)
    model.fit(x[:1200], y[:1200], epochs=3, batch_size=64, verbose=0, callbacks=[callback, keep])
    files = {}
    for folder, _, names in os.walk(os.path.join(log_dir, "embeddings")):
        for name in names:
            path = os.path.join(folder, name)
            files[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    second = tbx.Embeddings(log_dir, data, max_points=300, class_names=NAMES, freq=2)
    model.fit(x[:1200], y[:1200], epochs=5, initial_epoch=3, batch_size=64, verbose=0,
              callbacks=[second, keep])
    return {"root": root, "model": model, "data": data, "seen": seen, "files": files,
            "callback": callback}


def _points(fitted):
    """(dataset name, index) of the logged points, from the metadata."""
    projector = Projector(fitted["root"])
    rows = projector.metadata("run", "net/hidden @ epoch 0")
    return projector, rows


def test_each_epoch_is_an_embedding_of_the_layer_outputs(fitted):
    projector, rows = _points(fitted)
    assert projector.runs() == ["run"]
    config = projector.config("run")
    names = [e["tensorName"] for e in config["embeddings"]]
    assert names == [f"net/hidden @ epoch {e}" for e in (0, 2, 4)]
    model = fitted["model"]
    probe = keras.Model(model.inputs, model.get_layer("hidden").output)
    for epoch in (0, 2, 4):
        model.set_weights(fitted["seen"][epoch])
        x = np.concatenate([fitted["data"][r["dataset"]][0][int(r["index"])][None]
                            for r in rows])
        expected = probe.predict(x, verbose=0)
        logged = projector.tensor("run", f"net/hidden @ epoch {epoch}", expected.shape)
        np.testing.assert_allclose(logged, expected, rtol=1e-5, atol=1e-6)
    first = projector.tensor("run", "net/hidden @ epoch 0", expected.shape)
    assert np.abs(first - logged).max() > 1e-3  # training moved them


def test_metadata_rows_match_their_samples(fitted):
    projector, _ = _points(fitted)
    model = fitted["model"]
    model.set_weights(fitted["seen"][2])
    rows = projector.metadata("run", "net/hidden @ epoch 2")
    assert len(rows) == 300
    assert list(rows[0]) == ["dataset", "index", "label", "predicted", "correct", "confidence"]
    for name in ("train", "val"):
        part = [r for r in rows if r["dataset"] == name]
        x, y = fitted["data"][name]
        index = np.array([int(r["index"]) for r in part])
        probs = model.predict(x[index], verbose=0)
        assert [r["label"] for r in part] == [NAMES[t] for t in y[index]]
        assert [r["predicted"] for r in part] == [NAMES[p] for p in probs.argmax(1)]
        assert [r["correct"] for r in part] == ["yes" if p == t else "no"
                                                for p, t in zip(probs.argmax(1), y[index])]
        np.testing.assert_allclose([float(r["confidence"]) for r in part], probs.max(1),
                                   atol=6e-5)


def test_points_are_a_fixed_stratified_subset(fitted):
    projector, rows0 = _points(fitted)
    rows4 = projector.metadata("run", "net/hidden @ epoch 4")
    key = lambda rows: [(r["dataset"], r["index"]) for r in rows]  # noqa: E731
    assert key(rows0) == key(rows4)  # the same points, resumed fit included
    sizes = {"train": 1200, "val": len(fitted["data"]["val"][1])}
    total = sum(sizes.values())
    for name, size in sizes.items():
        part = [r for r in rows0 if r["dataset"] == name]
        assert abs(len(part) - 300 * size / total) <= 1
        y = fitted["data"][name][1]
        counts = np.bincount([y[int(r["index"])] for r in part], minlength=10)
        expected = np.bincount(y, minlength=10) / size * len(part)
        assert np.all(np.abs(counts - expected) <= 1), (counts, expected)
        assert len({r["index"] for r in part}) == len(part)


def test_sprite_tiles_are_the_inputs(fitted):
    projector, rows = _points(fitted)
    config = projector.config("run")["embeddings"][0]
    side = config["sprite"]["singleImageDim"]
    assert side == [32, 32]
    sprite = projector.sprite("run", "net/hidden @ epoch 0")
    cols = int(np.ceil(np.sqrt(len(rows))))
    assert sprite.shape[:2] == (cols * 32, cols * 32)
    for i in (0, 1, 150, len(rows) - 1):
        r, c = divmod(i, cols)
        tile = sprite[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32, :3]
        x = fitted["data"][rows[i]["dataset"]][0][int(rows[i]["index"])]
        expected = np.repeat(np.repeat(images.image_rgb(x), 4, axis=0), 4, axis=1)
        np.testing.assert_array_equal(tile, expected)


def test_a_new_epoch_rewrites_no_earlier_file(fitted):
    for path, digest in fitted["files"].items():
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest, path


@pytest.mark.tensorflow_only
def test_embedding_weights_with_the_vectorizer_vocabulary(tmp_path):
    texts = np.array(["good movie", "bad movie", "very good", "very bad film", "good film"] * 8,
                     dtype=object)
    labels = np.array([1, 0, 1, 0, 1] * 8)
    vectorizer = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4,
                                                name="vectorize")
    vectorizer.adapt(texts)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((), dtype="string")
    ids = vectorizer(inputs)
    h = keras.layers.Embedding(20, 6, name="embed")(ids)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="out")(h)
    model = keras.Model(inputs, out, name="text")
    model.compile("adam", "binary_crossentropy")
    log_dir = str(tmp_path / "run")
    callback = tbx.Embeddings(log_dir, (texts, labels), max_points=10)
    model.fit(texts, labels, epochs=1, verbose=0, callbacks=[callback])
    assert callback.path == "pool"  # the sequence average before the head
    projector = Projector(tmp_path)
    name = "embed/embeddings @ epoch 0"
    vocab = vectorizer.get_vocabulary()
    rows = projector.metadata("run", name)
    assert len(vocab) == 7  # the embedding has 20 rows; max_points keeps 10
    assert [r["token"] for r in rows] == ["<pad>", *vocab[1:], "7", "8", "9"]
    assert [r["id"] for r in rows] == [str(i) for i in range(10)]
    table = projector.tensor("run", name, (10, 6))
    np.testing.assert_array_equal(table, np.asarray(model.get_layer("embed").embeddings)[:10])
    points = projector.metadata("run", "pool @ epoch 0")
    probs = model.predict(texts, verbose=0)[:, 0]
    for r in points:
        p = probs[int(r["index"])]
        assert r["predicted"] == str(int(p >= 0.5))
        assert r["label"] == str(labels[int(r["index"])])
        assert abs(float(r["confidence"]) - max(p, 1 - p)) < 6e-5


def test_privacy_levels(tmp_path):
    x, y = _digits()
    for level in ("inputs", "strict"):
        log_dir = str(tmp_path / level)
        model = _model()
        model.fit(x[:200], y[:200], epochs=1, verbose=0,
                  callbacks=[tbx.Embeddings(log_dir, (x[:200], y[:200]), privacy=level)])
        files = [f for _, _, fs in os.walk(log_dir) for f in fs]
        assert "sprite.png" not in files
        if level == "inputs":
            rows = Projector(tmp_path).metadata(level, "net/hidden @ epoch 0")
            assert len(rows) == 200 and rows[0]["label"] == str(y[int(rows[0]["index"])])
        else:  # no per-sample vectors (and this model has no Embedding layer)
            assert not [f for f in files if f.endswith(".tsv")]
            assert not os.path.exists(os.path.join(log_dir, "projector_config.pbtxt"))
            assert os.listdir(os.path.join(log_dir, "embeddings")) == []  # no epoch folder


def test_unlabeled_data_spatial_default_and_a_subclassed_model(tmp_path):
    x, _ = _digits()

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.conv = keras.layers.Conv2D(5, 3, activation="relu", name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
            self.out = keras.layers.Dense(3, name="logits")

        def call(self, inputs):
            return self.out(self.pool(self.conv(inputs)))

    keras.utils.set_random_seed(0)
    model = Net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tbx.Embeddings(str(tmp_path / "run"), x[:50], layer="conv")
    model.fit(x[:50], np.arange(50) % 3, epochs=1, verbose=0, callbacks=[callback])
    projector = Projector(tmp_path)
    rows = projector.metadata("run", "sub/conv @ epoch 0")
    assert list(rows[0]) == ["dataset", "index", "predicted", "confidence"]
    conv = keras.ops.convert_to_numpy(model.conv(x[:50])).mean(axis=(1, 2))  # pooled spatial output
    np.testing.assert_allclose(projector.tensor("run", "sub/conv @ epoch 0", (50, 5)), conv,
                               rtol=1e-5, atol=1e-6)
    logits = keras.ops.convert_to_numpy(model(x[:50]))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert [r["predicted"] for r in rows] == [str(p) for p in probs.argmax(1)]
    from tb_explain.compute import embeddings

    assert embeddings.default_layer(model, x[:2]) == "sub/gap"  # rank 2, before the head


def test_default_layer_skips_the_head():
    from tb_explain.compute import embeddings

    x, _ = _digits()
    model = _model()
    assert embeddings.default_layer(model, x[:2]) == "net/hidden"  # not Dropout, not the head
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="c")(inputs)
    out = keras.layers.Conv2D(2, 1, name="head")(h)  # a dense-prediction head
    spatial = keras.Model(inputs, out, name="fcn")
    assert embeddings.default_layer(spatial, x[:2]) == "c"


@pytest.mark.parametrize("kwargs, message", [
    ({"max_points": 0}, "`max_points`"),
    ({"layer": 3}, "`layer`"),
    ({"data": None}, "`data`"),
])
def test_bad_arguments_at_construction(tmp_path, kwargs, message):
    x, y = _digits()
    args = {"data": (x, y), **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        tbx.Embeddings(str(tmp_path), **args)


@pytest.mark.parametrize("layer, message", [
    ("nope", "'nope': no such layer"),
    ("conv2d_typo", "no such layer"),
])
def test_bad_layer_before_the_first_epoch(tmp_path, layer, message):
    x, y = _digits()
    model = _model()
    epochs = []
    with pytest.raises(ValueError, match=message):
        model.fit(x[:64], y[:64], epochs=2, verbose=0, callbacks=[
            tbx.Embeddings(str(tmp_path), (x[:64], y[:64]), layer=layer),
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append(e))])
    assert epochs == []


@pytest.mark.tensorflow_only
def test_layer_without_a_vector_output(tmp_path):
    texts = np.array(["a b", "b c", "c d", "d a"] * 4, dtype=object)
    vectorizer = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=3,
                                                name="vec")
    vectorizer.adapt(texts)
    inputs = keras.Input((), dtype="string")
    out = keras.layers.Dense(1)(keras.layers.Embedding(10, 4)(vectorizer(inputs))[:, 0])
    model = keras.Model(inputs, out)
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match=r"`layer` 'vec': its output is not a float"):
        model.fit(texts, np.zeros(16), epochs=1, verbose=0, callbacks=[
            tbx.Embeddings(str(tmp_path), texts, layer="vec")])


def test_explain_adds_embeddings_with_datasets(tmp_path):
    x, y = _digits()
    callbacks = tbx.explain(str(tmp_path), datasets={"val": (x[:64], y[:64])}, max_points=50)
    (embedding,) = [c for c in callbacks if isinstance(c, tbx.Embeddings)]
    assert embedding.max_points == 50 and list(embedding.datasets) == ["val"]
    assert not [c for c in tbx.explain(str(tmp_path)) if isinstance(c, tbx.Embeddings)]


def test_projector_tab_in_chromium_shows_the_points(fitted):
    import shutil
    import time
    import urllib.request

    chromium = shutil.which("chromium")
    if chromium is None and os.environ.get("CI") != "true":
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    def ready(url):
        with urllib.request.urlopen(f"{url}/data/plugin/projector/runs") as r:
            return b"run" in r.read()

    with serve_tensorboard(fitted["root"], ready, "the Projector") as url:
        with sync_playwright() as p:
            # WebGL through SwiftShader: the Projector draws with WebGL
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--ignore-gpu-blocklist"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{url}/#projector")
                deadline = time.time() + 60  # the Projector's own iframe, once loaded
                while not [f for f in page.frames if f.url.endswith("projector_binary.html")]:
                    assert time.time() < deadline, "the Projector did not load"
                    page.wait_for_timeout(200)
                frame = next(f for f in page.frames if f.url.endswith("projector_binary.html"))
                frame.locator("text=/Points: 300/").wait_for(timeout=60_000)
                assert frame.locator("text=/Dimension: 16/").count() == 1
                assert frame.locator("text=/3 tensors found/").count() == 1  # epochs 0, 2, 4
                assert frame.locator("text=/does not have WebGL/").count() == 0
            finally:
                browser.close()
