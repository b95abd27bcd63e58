"""tbx.compare: CKA, disagreement, metrics and health of two runs (or two
epochs of one), from the logs alone; checked against numpy on the layer
outputs and predictions recorded during the same fits, against
`load_run`'s scalars, and the Explain tab's route against the Python values."""

import json
import os

import keras
import numpy as np
import pytest
from werkzeug import test as wtest

import tb_explain as tbx
from tb_explain import cli, reader, tags
from tb_explain.compute import similarity
from tb_explain.summary import metadata

PROBE = 96
EPOCHS = 3


def _model(width):
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(width, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(16, activation="tanh", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ], name="net")


class Recorder(keras.callbacks.Callback):
    """Every layer's outputs on the probe, and the predictions on each
    dataset, at every epoch end (after the tb_explain callbacks logged)."""

    def __init__(self, probe, datasets):
        super().__init__()
        self.probe, self.datasets = probe, datasets
        self.outputs, self.predicted, self.saliency = {}, {}, {}

    def on_epoch_end(self, epoch, logs=None):
        layers = [layer for layer in self.model.layers]
        features = keras.Model(self.model.inputs, [layer.output for layer in layers])
        values = features.predict(self.probe, verbose=0)
        self.outputs[epoch] = {f"{self.model.name}/{layer.name}": np.asarray(v) for layer, v in zip(layers, values)}
        self.predicted[epoch] = {name: np.argmax(self.model.predict(x, verbose=0), axis=1)
                                 for name, (x, _) in self.datasets.items()}
        self.saliency[epoch] = tbx.attribute(self.model, self.probe[:4], "saliency").attributions


def _fit(log_dir, width, lr, x, y, probe_rows=slice(400, 400 + PROBE), privacy="off",
         val=slice(400, 600), epochs=EPOCHS):
    keras.utils.set_random_seed(width)
    model = _model(width)
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    datasets = {"train": (x[:300], y[:300]), "val": (x[val], y[val])}
    probe = x[probe_rows]
    recorder = Recorder(probe, datasets)
    model.fit(x[:300], y[:300], epochs=epochs, batch_size=32, verbose=0, callbacks=[
        tbx.ActivationImages(log_dir, data=probe, privacy=privacy),
        tbx.GradientNorms(log_dir, data=(probe, y[probe_rows])),
        tbx.Predictions(log_dir, data=datasets, privacy=privacy),
        tbx.Attributions(log_dir, data=probe, methods=["saliency"], privacy=privacy), recorder])
    return model, recorder


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target.astype("int64")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("compare")
    x, y = data
    fitted = {"a": _fit(str(root / "a"), 4, 3e-3, x, y), "b": _fit(str(root / "b"), 6, 1e-2, x, y)}
    return root, fitted


def test_cka_equals_numpy_on_recorded_outputs(runs):
    root, fitted = runs
    rec_a, rec_b = fitted["a"][1], fitted["b"][1]
    c = tbx.compare(root / "a", root / "b")
    assert (c.epoch, c.epoch_b) == (EPOCHS - 1, EPOCHS - 1) and c.notes == []
    # ActivationImages' default rows: no input or pure reshape, forward order
    assert c.cka.layers_a == ["net/conv", "net/pool", "net/hidden", "net/out"]
    assert c.cka.layers_b == c.cka.layers_a and c.cka.n == PROBE
    expected = np.array([[similarity.linear_cka(rec_a.outputs[c.epoch][la],
                                                rec_b.outputs[c.epoch_b][lb])
                          for lb in c.cka.layers_b] for la in c.cka.layers_a])
    np.testing.assert_allclose(c.cka.matrix, expected, atol=1e-4)
    assert 0.0 < expected.min() and expected.max() < 0.9999  # different models: not trivial
    # two epochs of one run; the default other epoch is the first one logged
    one = tbx.compare(root / "a")
    assert (one.epoch, one.epoch_b) == (EPOCHS - 1, 0)
    expected = np.array([[similarity.linear_cka(rec_a.outputs[EPOCHS - 1][la],
                                                rec_a.outputs[0][lb])
                          for lb in one.cka.layers_b] for la in one.cka.layers_a])
    np.testing.assert_allclose(one.cka.matrix, expected, atol=1e-4)
    same = tbx.compare(root / "a", epoch=1, epoch_b=1)
    np.testing.assert_allclose(np.diag(same.cka.matrix), 1.0, atol=1e-6)


def test_linear_cka_closed_form_and_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 7))
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    # CKA is invariant to orthogonal transforms and isotropic scaling
    assert similarity.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    y = rng.normal(size=(50, 30))
    xc, yc = x - x.mean(0), y - y.mean(0)
    hsic = lambda k, l: np.trace(k @ l)  # noqa: E731 (Gram form, Kornblith et al. eq. 3)
    k, l = xc @ xc.T, yc @ yc.T
    assert similarity.linear_cka(x, y) == pytest.approx(
        hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), rel=1e-12)
    packed = np.stack([similarity.pack(v)[0] for v in (x, y, np.ones((50, 3)))])
    matrix = similarity.cka(packed, packed)
    assert matrix[0, 1] == pytest.approx(similarity.linear_cka(x, y), abs=1e-4)
    assert np.isnan(matrix[2]).all() and similarity.pack(np.ones((50, 3)))[1]
    np.testing.assert_allclose(similarity.unpack(packed[0], 50), k / np.linalg.norm(k), atol=1e-3)
    # the logged record: a narrow layer's centred outputs, a wide one's Gram matrix; both
    # decode to the same packed Gram matrix
    narrow, wide = similarity.encode(x), similarity.encode(y)
    assert (narrow[1]["kind"], wide[1]["kind"]) == ("features", "gram")
    assert narrow[0].size == 4 * 50 * 7 and wide[0].size == 50 * 51
    rows = np.stack([similarity.decode(*narrow), similarity.decode(*wide)])
    assert similarity.cka(rows, rows)[0, 1] == pytest.approx(similarity.linear_cka(x, y), abs=1e-4)
    constant = similarity.encode(np.full((50, 3), 2.5))
    assert constant[1]["constant"] and not similarity.decode(*constant).any()


def test_disagreement_equals_numpy_on_recorded_predictions(runs, data):
    root, fitted = runs
    _, y = data
    rec_a, rec_b = fitted["a"][1], fitted["b"][1]
    c = tbx.compare(root / "a", root / "b", epoch=1, epoch_b=2)
    labels = {"train": y[:300], "val": y[400:600]}
    assert sorted(c.disagreement) == ["train", "val"]
    for name, d in c.disagreement.items():
        right_a = rec_a.predicted[1][name] == labels[name]
        right_b = rec_b.predicted[2][name] == labels[name]
        assert d.n == len(labels[name])
        np.testing.assert_array_equal(d.a_only, np.flatnonzero(right_a & ~right_b))
        np.testing.assert_array_equal(d.b_only, np.flatnonzero(right_b & ~right_a))
        np.testing.assert_array_equal(d.both_wrong, np.flatnonzero(~right_a & ~right_b))
        np.testing.assert_array_equal(d.predicted_a, rec_a.predicted[1][name])
    assert sum(len(d.a_only) + len(d.b_only) for d in c.disagreement.values()) > 0


def test_metrics_and_health_equal_load_run(runs):
    root, _ = runs
    c = tbx.compare(root / "a", root / "b", epoch=2, epoch_b=1)
    run_a, run_b = tbx.load_run(root / "a"), tbx.load_run(root / "b")
    outputs = [t for t in run_a.tags("scalars") if t.startswith("outputs/")]
    assert sorted(c.metrics) == sorted(outputs) and "outputs/val/accuracy" in c.metrics

    def at(run, tag, epoch):
        steps, values = run.scalars(tag)
        return values[list(steps).index(epoch)]

    for tag, (a, b) in c.metrics.items():
        assert (a, b) == (at(run_a, tag, 2), at(run_b, tag, 1))
    assert list(c.health) == ["net/conv", "net/hidden", "net/out"]  # layers with weights
    for layer, ratio in c.health.items():
        tag = f"gradients/{layer}/norm"
        assert ratio == pytest.approx(at(run_b, tag, 1) / at(run_a, tag, 2), rel=1e-12)


def test_errors_name_the_probe_the_dataset_and_the_epoch(runs, data, tmp_path):
    root, _ = runs
    x, y = data
    _fit(str(tmp_path / "other_probe"), 4, 3e-3, x, y, probe_rows=slice(500, 500 + PROBE),
         epochs=1)
    with pytest.raises(ValueError, match=r"probes are not the same examples"):
        tbx.compare(root / "a", tmp_path / "other_probe", epoch=0)
    _fit(str(tmp_path / "other_val"), 4, 3e-3, x, y, val=slice(600, 800), epochs=1)
    with pytest.raises(ValueError, match=r"dataset 'val' holds different examples"):
        tbx.compare(root / "a", tmp_path / "other_val", epoch=0)
    with pytest.raises(ValueError, match=r"`epoch`=7: run .* logged no epoch 7 \(it logged "
                                         r"\[0, 1, 2\]\)"):
        tbx.compare(root / "a", root / "b", epoch=7)
    with pytest.raises(ValueError, match="holds no TensorBoard event files"):
        tbx.compare(root / "a", tmp_path)


def test_privacy_levels(data, tmp_path):
    x, y = data
    for privacy in ("inputs", "strict"):
        _fit(str(tmp_path / privacy), 4, 3e-3, x, y, privacy=privacy, epochs=1)
    inputs, strict = tbx.load_run(tmp_path / "inputs"), tbx.load_run(tmp_path / "strict")
    own = lambda run: [t for t in run.source.tensor_tags()]  # noqa: E731
    assert tags.SIMILARITY_GRAM.format(0) in own(inputs)
    assert tags.PREDICTED.format("val", 0) in own(inputs)
    assert tags.ATTRIBUTION_VALUES.format("attributions/saliency/input", 0) in own(inputs)
    assert not [t for t in own(strict) if t.startswith("similarity/") or "/predicted/" in t
                or "/values/" in t]
    c = tbx.compare(tmp_path / "strict", tmp_path / "inputs")
    assert c.cka is None and c.disagreement == {} and c.attributions == {}
    assert c.metrics  # aggregates stay
    assert any("Gram matrices" in note for note in c.notes)


def test_logged_sizes_and_versioned_metadata(runs):
    root, _ = runs
    run = tbx.load_run(root / "a")
    source = run.source
    grams = reader.gram_epochs(source)
    assert sorted(grams) == [0, 1, 2]
    tag, info = grams[2]
    assert info["kind"] == "gram" and info["version"] == metadata.CONTENT_VERSION
    (_, payload), = source.tensors([tag])[tag]
    # wide layers: the packed Gram matrix, n (n + 1) / 2 float16 values; narrow ones
    # (fewer than (n + 1) / 4 units): their centred outputs, n x d float32
    gram = PROBE * (PROBE + 1)
    kinds = [(r["path"], r["kind"], r["bytes"]) for r in info["records"]]
    assert kinds == [("net/conv", "gram", gram), ("net/pool", "gram", gram),
                     ("net/hidden", "features", 4 * PROBE * 16),
                     ("net/out", "features", 4 * PROBE * 10)]
    assert payload.dtype == np.uint8 and payload.size == sum(k[2] for k in kinds)
    assert info["probe"] == similarity.fingerprint(fitted_probe())
    assert metadata.parse(b'{"datasets": ["train"]}') == {"datasets": ["train"], "version": 0}
    assert metadata.parse(b"") == {"version": 0}
    with pytest.raises(ValueError, match="newer tb_explain"):
        metadata.parse(b'{"kind": "gram", "version": 99}')


def fitted_probe():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None][400:400 + PROBE]


def test_route_equals_python_and_refuses_bad_requests(runs):
    from test_dashboard import _plugin

    root, _ = runs
    apps = _plugin(root).get_plugin_apps()
    http = wtest.Client(lambda environ, start: apps[environ["PATH_INFO"]](environ, start))

    def get(**params):
        response = http.get("/compare", query_string=params)
        return response.status_code, json.loads(response.data)

    status, body = get(a="a", b="b", epoch="1", epoch_b="2")
    assert status == 200
    python = tbx.compare(root / "a", root / "b", epoch=1, epoch_b=2).to_json()
    for key in ("cka", "disagreement", "metrics", "health", "attributions", "epoch", "epoch_b"):
        assert body[key] == python[key], key
    status, body = get(a="a", b="b", epoch="1", epoch_b="2",
                       attribution="attributions/saliency/input", sample="3")
    maps = body["attribution_maps"]
    assert status == 200 and maps["sample"] == 3 and maps["samples"] == 4
    assert maps["spearman"] == python["attributions"]["attributions/saliency/input"][3]
    logged = reader.attributions(tbx.load_run(root / "a").source, 1)[
        "attributions/saliency/input"][0]
    np.testing.assert_array_equal(maps["a"], logged[3])
    assert get(a="a", b="b", attribution="attributions/nope")[0] == 400
    d = python["disagreement"]["val"]
    assert [r["i"] for r in body["examples"]["val"]] == d["a_only"][:100] + d["b_only"][:100]
    status, body = get(a="a")
    assert status == 200 and (body["epoch"], body["epoch_b"]) == (2, 0)
    assert get(a="a", b="nope")[0] == 400 and "unknown run 'nope'" in get(a="a", b="nope")[1][
        "error"]
    status, body = get(a="a", epoch="9")
    assert status == 400 and "logged no epoch 9" in body["error"]
    assert get(a="a", epoch="x")[1]["error"] == "`epoch` must be an int, got 'x'"
    assert get()[1]["error"] == "missing parameter `a`"


def test_cli_report(runs, capsys):
    root, _ = runs
    assert cli.main(["compare", str(root / "a"), str(root / "b"), "--epoch", "1"]) == 0
    out = capsys.readouterr().out
    c = tbx.compare(root / "a", root / "b", epoch=1)
    assert out.endswith(c.report())
    report = c.report()
    assert "| outputs/val/accuracy | " in report and "## Gradient health" in report
    for layer, value in c.cka.diagonal().items():
        assert f"| {layer} | {value:.4g} |" in report
    d = c.disagreement["val"]
    assert f"| val | {d.n} | {len(d.a_only)} | {len(d.b_only)} | {len(d.both_wrong)} |" in report
    assert cli.main(["compare", str(root / "a"), "--epoch", "2", "--epoch-b", "0"]) == 0
    assert "epoch 2 vs epoch 0" in capsys.readouterr().out
    assert cli.main(["compare", str(root), "--epoch", "1"]) == 2
    assert "--epoch and --epoch-b need two runs" in capsys.readouterr().err


def test_attribution_rank_correlation(runs):
    from scipy import stats

    root, fitted = runs
    rec_a, rec_b = fitted["a"][1], fitted["b"][1]
    c = tbx.compare(root / "a", root / "b", epoch=2, epoch_b=1)
    assert list(c.attributions) == ["attributions/saliency/input"]
    values = {}
    for name, rec, epoch in (("a", rec_a, 2), ("b", rec_b, 1)):
        logged = reader.attributions(tbx.load_run(root / name).source, epoch)[
            "attributions/saliency/input"][0]
        # the logged map: |saliency| summed over channels (float16)
        np.testing.assert_allclose(logged, np.abs(rec.saliency[epoch]).sum(-1), rtol=2e-3,
                                   atol=1e-6)
        values[name] = logged
    expected = [stats.spearmanr(x.ravel(), y.ravel()).statistic
                for x, y in zip(values["a"], values["b"])]
    np.testing.assert_allclose(c.attributions["attributions/saliency/input"], expected,
                               atol=1e-12)
    assert "## Attributions" in c.report()
    # ties share their average rank, as scipy's
    from tb_explain.comparison import spearman
    x, y = np.array([1, 2, 2, 3, 0.5]), np.array([3, 1, 1, 2, 2])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_every_epoch_compares_through_tensorboard_sampling(tmp_path):
    """TensorBoard keeps 10 events per plugin tag: one tag per epoch keeps
    them all, so epoch 0 of a 14-epoch run still compares in the tab."""
    from test_dashboard import _plugin

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu",
                              name="hidden"), keras.layers.Dense(2, activation="softmax",
                                                                 name="out")], name="mlp")
    model.compile("adam", "sparse_categorical_crossentropy")
    log_dir = tmp_path / "long"
    model.fit(x, y, epochs=14, verbose=0, callbacks=[
        tbx.ActivationImages(str(log_dir), data=x), tbx.Predictions(str(log_dir), data=(x, y))])
    apps = _plugin(tmp_path).get_plugin_apps()
    http = wtest.Client(lambda environ, start: apps[environ["PATH_INFO"]](environ, start))
    for epoch in (0, 5, 12):
        response = http.get("/compare", query_string={"a": "long", "epoch": str(epoch),
                                                       "epoch_b": "13"})
        body = json.loads(response.data)
        python = tbx.compare(log_dir, epoch=epoch, epoch_b=13).to_json()
        assert response.status_code == 200 and body["cka"] == python["cka"]
        assert body["disagreement"] == python["disagreement"] and body["cka"] is not None
