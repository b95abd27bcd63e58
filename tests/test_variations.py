"""The variations every Keras user has, on every backend: several outputs with
dict labels, `keras.utils.PyDataset` / PyTorch `DataLoader` / grain inputs,
mixed precision, class weights with `validation_split`, resumed fits, a
frozen backbone under a sigmoid head, regression. Each runs `tbx.explain()`
(a callback that fails to log or skips work fails the test: see setup.cfg),
and what was logged is read back and compared with numpy on the model's own
predictions."""

import importlib.util

import keras
import numpy as np
import pytest

import tb_explain as tbx
from tb_explain import datasets as streams
from tb_explain.probe import Probe

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_GRAIN = importlib.util.find_spec("grain") is not None


def _table(n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = ((x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5)).astype("int64")
    r = (x[:, 2:3] * 2 + x[:, 3:4]).astype("float32")
    return x, y, r


def _mlp(units=3, activation="softmax", seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(units, activation=activation,
                                                dtype="float32")])


class Batches(keras.utils.PyDataset):
    """A PyDataset over arrays that counts the batches read."""

    def __init__(self, x, y, batch_size=32, order=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.reads = x, y, batch_size, 0
        self.order = np.arange(len(x)) if order is None else order

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        self.reads += 1
        rows = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[rows], self.y[rows]


class Reshuffled(Batches):
    """A PyDataset that draws a new order at every epoch's end, as users'
    shuffling datasets do."""

    def on_epoch_end(self):
        self.order = np.random.default_rng(len(self.order) + self.reads).permutation(
            len(self.x))


def _accuracy(read_run, log_dir, tag):
    run = read_run(log_dir)
    return float(run.value(tag))


def _loader(x, y, batch_size=32, shuffle=False):
    import torch  # noqa: PLC0415

    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
        batch_size=batch_size, shuffle=shuffle)


def _skipped(read_run, log_dir):
    run = read_run(log_dir)
    return run.text("tb_explain/skipped") if "tb_explain/skipped" in run.tags else ""


# -- several outputs --------------------------------------------------------------------------

def test_multi_output_dict_labels(tmp_path, read_run):
    x, y, r = _table()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, {"cls": keras.layers.Dense(3, activation="softmax",
                                                           name="cls")(hidden),
                                 "reg": keras.layers.Dense(1, name="reg")(hidden)})
    model.compile("adam", {"cls": "sparse_categorical_crossentropy", "reg": "mse"})
    labels = {"cls": y, "reg": r}
    val = (x[:60], {"cls": y[:60], "reg": r[:60]})
    callbacks = tbx.explain(tmp_path, data=(x[:8], {"cls": y[:8], "reg": r[:8]}),
                            datasets={"train": (x, labels), "val": val})
    dynamics = next(c for c in callbacks if isinstance(c, tbx.TrainingDynamics))
    assert dynamics.output == "cls"  # the only output with class ids
    model.fit(x, labels, epochs=2, batch_size=32, callbacks=callbacks, verbose=0)

    predicted = model.predict(x, verbose=0)
    run = read_run(tmp_path)
    accuracy = np.mean(np.argmax(predicted["cls"][:60], axis=1) == y[:60])
    assert float(run.value("outputs/val/cls/accuracy", 1)) == pytest.approx(accuracy, abs=1e-6)
    mae = np.mean(np.abs(predicted["reg"][:60] - r[:60]))
    assert float(run.value("outputs/val/reg/mae", 1)) == pytest.approx(mae, rel=1e-4)
    # TrainingDynamics follows "cls": its last record holds p(given label)
    logged = tbx.load_run(tmp_path).dynamics
    np.testing.assert_array_equal(logged.labels, y)
    probability = logged.records[-1][0]
    np.testing.assert_allclose(probability, predicted["cls"][np.arange(len(y)), y], atol=1e-5)
    assert "TrainingDynamics" not in _skipped(read_run, tmp_path)


def test_multi_output_two_classifiers_need_output(tmp_path):
    x, y, _ = _table()
    with pytest.raises(ValueError, match="pass `output=`"):
        tbx.TrainingDynamics(tmp_path, data=(x, {"a": y, "b": 1 - (y > 0)}))
    with pytest.raises(ValueError, match=r"`output` must be one of .*'c'"):
        tbx.TrainingDynamics(tmp_path, data=(x, {"a": y, "b": y}), output="c")
    chosen = tbx.TrainingDynamics(tmp_path, data=(x, {"a": y, "b": y}), output="b")
    np.testing.assert_array_equal(chosen.labels, y)


# -- streams of batches ----------------------------------------------------------------------

def _stream_fit(tmp_path, train, val, probe, x, y):
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = tbx.explain(tmp_path, data=probe, datasets={"train": train, "val": val})
    assert any(isinstance(c, tbx.TrainingDynamics) for c in callbacks)
    model.fit(train, validation_data=val, epochs=2, callbacks=callbacks, verbose=0,
              shuffle=False)
    return model


def _check_stream_run(read_run, tmp_path, model, x, y):
    probs = model.predict(x, verbose=0)
    run = read_run(tmp_path)
    for name, rows in (("train", slice(None)), ("val", slice(0, 50))):
        accuracy = np.mean(np.argmax(probs[rows], axis=1) == y[rows])
        assert float(run.value(f"outputs/{name}/accuracy", 1)) == pytest.approx(accuracy, abs=1e-6)
    logged = tbx.load_run(tmp_path).dynamics
    np.testing.assert_array_equal(logged.labels, y)
    np.testing.assert_allclose(logged.records[-1][0], probs[np.arange(len(y)), y], atol=1e-5)
    assert "confusion" in " ".join(run.tags)


def test_pydataset_everywhere(tmp_path, read_run):
    x, y, _ = _table()
    train, val = Batches(x, y), Batches(x[:50], y[:50], batch_size=16)
    model = _stream_fit(tmp_path, train, val, val, x, y)
    _check_stream_run(read_run, tmp_path, model, x, y)
    # read lazily, a batch at a time
    fresh = Batches(x, y)
    first = next(streams.batches(fresh))
    assert fresh.reads == 1 and len(first[0]) == 32


def test_probe_takes_the_first_samples_of_a_stream():
    x, y, _ = _table()
    probe = Probe(Batches(x, y, batch_size=16), max_samples=40)  # across 3 batches
    np.testing.assert_array_equal(probe.x, x[:40])
    np.testing.assert_array_equal(probe.y, y[:40])


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_torch_dataloader_everywhere(tmp_path, read_run):
    x, y, _ = _table()
    train, val = _loader(x, y), _loader(x[:50], y[:50], batch_size=16)
    model = _stream_fit(tmp_path, train, val, val, x, y)
    _check_stream_run(read_run, tmp_path, model, x, y)
    probe = Probe(val, max_samples=20)
    np.testing.assert_array_equal(probe.x, x[:20])


@pytest.mark.skipif(not HAS_GRAIN, reason="grain is not installed")
def test_grain_dataset_is_streamed():
    import grain  # noqa: PLC0415

    x, y, _ = _table()
    dataset = grain.MapDataset.source([(x[i], y[i]) for i in range(len(x))]).batch(32)
    assert streams.kind(dataset) == "grain dataset"
    batches = list(streams.batches(dataset))
    assert len(batches) == 5
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(Probe(dataset, max_samples=40).y, y[:40])


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_shuffling_dataloader_leaves_dynamics_out_at_construction(tmp_path, read_run):
    x, y, _ = _table()
    train = _loader(x, y, shuffle=True)
    with pytest.raises(ValueError, match="shuffles"):
        tbx.TrainingDynamics(tmp_path / "alone", data=train)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    callbacks = tbx.explain(tmp_path, datasets={"train": train})
    assert not any(isinstance(c, tbx.TrainingDynamics) for c in callbacks)
    model.fit(train, epochs=1, callbacks=callbacks, verbose=0, shuffle=False)
    assert "shuffles" in _skipped(read_run, tmp_path)
    assert float(read_run(tmp_path).value("outputs/train/accuracy", 0)) == pytest.approx(
        np.mean(np.argmax(model.predict(x, verbose=0), 1) == y), abs=1e-6)


def test_a_stream_that_reorders_is_left_out_once(tmp_path, read_run):
    x, y, _ = _table()
    train = Reshuffled(x, y)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    callbacks = tbx.explain(tmp_path, datasets={"train": train})
    model.fit(train, epochs=3, callbacks=callbacks, verbose=0)
    assert "another order" in _skipped(read_run, tmp_path)
    assert float(read_run(tmp_path).value("outputs/train/accuracy", 2)) == pytest.approx(
        np.mean(np.argmax(model.predict(x, verbose=0), 1) == y), abs=1e-6)


def test_unsupported_data_names_what_is_accepted(tmp_path):
    with pytest.raises(TypeError, match="keras.utils.PyDataset"):
        Probe(object())
    with pytest.raises(TypeError, match="keras.utils.PyDataset"):
        tbx.Predictions(tmp_path, data={"val": object()})
    with pytest.raises(ValueError, match="infinite"):
        class Endless(keras.utils.PyDataset):
            @property
            def num_batches(self):
                return None

            def __getitem__(self, i):
                return np.zeros((2, 6)), np.zeros(2)
        tbx.Predictions(tmp_path, data={"val": Endless()})


# -- mixed precision -----------------------------------------------------------------------------

@pytest.fixture
def policy():
    """Sets a global dtype policy for one test, restores float32 after."""
    def use(name):
        keras.mixed_precision.set_global_policy(name)
    yield use
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_explanations_are_float32_precise(name, policy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        return keras.Sequential([
            keras.Input((6,)), keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="tanh"),
            keras.layers.Dense(3, activation="softmax", dtype="float32")])

    reference = build()
    policy(name)
    mixed = build()
    policy("float32")
    mixed.set_weights(reference.get_weights())
    # the mixed model does compute in low precision...
    gap = np.abs(keras.ops.convert_to_numpy(mixed(x)) - keras.ops.convert_to_numpy(reference(x)))
    assert gap.max() > 1e-4
    # ...and its explanations are those of its float32 weights
    for method, options in (("integrated_gradients", {}), ("saliency", {}),
                            ("smoothgrad", {"seed": 0}), ("occlusion", {})):
        got = tbx.attribute(mixed, x, method, target=0, **options)
        want = tbx.attribute(reference, x, method, target=0, **options)
        error = np.linalg.norm(got.attributions - want.attributions)
        assert error / np.linalg.norm(want.attributions) <= 0.02, method
        np.testing.assert_allclose(got.output, want.output, rtol=1e-4, atol=1e-6)


def test_mixed_bfloat16_fit_logs_everything(tmp_path, read_run, policy):
    x, y, _ = _table()
    policy("mixed_bfloat16")
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = tbx.explain(tmp_path, data=(x[:8], y[:8]),
                            datasets={"train": (x, y), "val": (x[:50], y[:50])})
    model.fit(x, y, epochs=2, batch_size=32, callbacks=callbacks, verbose=0)
    probs = np.asarray(model.predict(x, verbose=0), np.float32)
    run = read_run(tmp_path)
    accuracy = np.mean(np.argmax(probs[:50], 1) == y[:50])
    assert float(run.value("outputs/val/accuracy", 1)) == pytest.approx(accuracy, abs=1e-6)
    logged = tbx.load_run(tmp_path).dynamics
    np.testing.assert_allclose(logged.records[-1][0], probs[np.arange(len(y)), y], atol=1e-2)
    assert any(t.startswith("activations/") for t in run.tags)


def test_to_numpy_widens_bfloat16():
    from tb_explain import backend  # noqa: PLC0415

    tensor = keras.ops.cast(keras.ops.convert_to_tensor([1.5, 2.25]), "bfloat16")
    array = backend.to_numpy(tensor)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, [1.5, 2.25])


# -- the everyday fits ---------------------------------------------------------------------------

def test_class_weights_validation_split_and_resumed_fit(tmp_path, read_run):
    x, y, _ = _table()
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = tbx.explain(tmp_path, data=(x[:8], y[:8]), datasets={"train": (x, y)})
    model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0,
              class_weight={0: 1.0, 1: 3.0, 2: 1.0}, callbacks=callbacks)
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, validation_split=0.25,
              verbose=0, callbacks=callbacks)
    run = read_run(tmp_path)
    assert run.steps("outputs/train/accuracy") == [0, 1, 2, 3]
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), 1) == y)
    assert float(run.value("outputs/train/accuracy", 3)) == pytest.approx(accuracy, abs=1e-6)
    np.testing.assert_array_equal(tbx.load_run(tmp_path).dynamics.epochs, [0, 1, 2, 3])


def test_frozen_backbone_under_a_sigmoid_head(tmp_path, read_run):
    x, y, _ = _table()
    yb = (y > 0).astype("float32")
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu")],
                                name="backbone")
    backbone.trainable = False
    model = keras.Sequential([keras.Input((6,)), backbone,
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    before = [w.copy() for w in backbone.get_weights()]
    callbacks = tbx.explain(tmp_path, data=(x[:8], yb[:8]),
                            datasets={"train": (x, yb), "val": (x[:50], yb[:50])})
    model.fit(x, yb, epochs=2, batch_size=32, callbacks=callbacks, verbose=0)
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    p = model.predict(x, verbose=0)[:, 0]
    run = read_run(tmp_path)
    accuracy = np.mean((p[:50] >= 0.5) == (yb[:50] > 0))
    assert float(run.value("outputs/val/accuracy", 1)) == pytest.approx(accuracy, abs=1e-6)
    logged = tbx.load_run(tmp_path).dynamics
    given = np.where(yb > 0, p, 1 - p)
    np.testing.assert_allclose(logged.records[-1][0], given, atol=1e-5)


def test_regression(tmp_path, read_run):
    x, _, r = _table()
    model = _mlp(1, None)
    model.compile("adam", "mse")
    callbacks = tbx.explain(tmp_path, data=(x[:8], r[:8]),
                            datasets={"train": (x, r), "val": (x[:50], r[:50])})
    model.fit(x, r, epochs=2, batch_size=32, callbacks=callbacks, verbose=0)
    p = model.predict(x[:50], verbose=0)
    run = read_run(tmp_path)
    assert float(run.value("outputs/val/mae", 1)) == pytest.approx(
        np.mean(np.abs(p - r[:50])), rel=1e-4)
    assert float(run.value("outputs/val/rmse", 1)) == pytest.approx(
        np.sqrt(np.mean((p - r[:50]) ** 2)), rel=1e-4)
    assert "regression targets" in _skipped(read_run, tmp_path)
