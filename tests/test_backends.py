"""Every backend computes the same values, and tb_explain runs without TensorFlow.

The cross-backend tests run once, from the TensorFlow pass of the suite:
each other backend computes in a subprocess (`_backend_values.py`) on the
same weights and probe, and every value is compared with TensorFlow's
within float32 error (rtol 1e-3).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = keras.backend.backend()
OTHERS = [b for b in ("jax", "torch") if b != BACKEND]


def _python(code_or_args, backend, timeout=600, **env):
    args = ["-c", textwrap.dedent(code_or_args)] if isinstance(code_or_args, str) \
        else list(code_or_args)
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend, **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=environ, timeout=timeout, cwd=HERE)


@pytest.fixture(scope="module")
def shared_values(tmp_path_factory):
    """`{backend: {name: array}}` on the same weights (TensorFlow in process)."""
    sys.path.insert(0, HERE)
    import _backend_values

    folder = tmp_path_factory.mktemp("backends")
    model, x, y = _backend_values.model_and_data()
    weights = folder / "weights.npz"
    np.savez(weights, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    values = {BACKEND: _backend_values.compute(model, x, y)}
    for backend in OTHERS:
        out = folder / f"{backend}.npz"
        result = _python([os.path.join(HERE, "_backend_values.py"), str(weights), str(out)],
                         backend)
        assert result.returncode == 0, result.stderr[-3000:]
        values[backend] = dict(np.load(out))
    return values


@pytest.mark.skipif(BACKEND != "tensorflow", reason="runs once, from the TensorFlow pass")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_value_equals_tensorflows(shared_values, backend):
    reference, other = shared_values["tensorflow"], shared_values[backend]
    assert set(other) == set(reference)
    assert len(reference) >= 20
    for name, expected in reference.items():
        got = other[name]
        assert got.shape == expected.shape, name
        scale = np.abs(expected).max() if expected.size else 0.0
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6 + 1e-5 * scale,
                                   err_msg=f"{name} on {backend}")
    # the values are not trivially equal: real attributions and gradients
    assert np.abs(reference["ig"]).sum() > 0 and reference["gradients/norms/eager"].min() > 0
    np.testing.assert_allclose(reference["gradients/norms/eager"],
                               reference["gradients/norms/compiled"], rtol=1e-5)


_FIT_WITHOUT_TENSORFLOW = """
    import sys
    sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
    import keras, numpy as np
    import tb_explain as tbx
    assert "tensorflow" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1)).astype("float32"); y = rng.integers(0, 3, 32)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)),
                              keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=tbx.explain(sys.argv[1], data=(x[:4], y[:4]), steps=8,
                                    datasets={"val": (x, y)}, methods=["saliency", "occlusion"]))
    try:
        tbx.explain(sys.argv[1], data=object())
    except TypeError as exc:
        print("TYPE-ERROR:", exc)
    print("FIT-DONE")
"""


@pytest.mark.parametrize("backend", OTHERS)
def test_fit_without_tensorflow(tmp_path, read_run, backend):
    """`explain()` on a fit of numpy data with TensorFlow absent: the run is
    written by TensorBoard's own writer and reads back with its loader."""
    log_dir = tmp_path / "run"
    result = _python(["-c", textwrap.dedent(_FIT_WITHOUT_TENSORFLOW), str(log_dir)], backend)
    assert "FIT-DONE" in result.stdout, result.stderr[-3000:]
    assert "TYPE-ERROR: `data`" in result.stdout
    run = read_run(log_dir)
    tags = set(run.tags)
    for tag in ("weights/sequential/conv/kernel", "gradients/global_norm", "keras",
                "activations/sequential/conv", "outputs/val/accuracy", "model/summary"):
        assert tag in tags, tag
    assert any(t.startswith("attributions/") for t in tags)
    assert sorted(run.steps("gradients/global_norm")) == [0, 1]
    assert "tb_explain/skipped" not in tags  # everything ran
    assert f"No op graph: op graphs are TensorFlow graphs, and this fit ran on Keras's " \
           f"{backend!r} backend" in run.text("model/summary")
    assert run.plugin("keras") == "graph_keras_model"
    assert '"class_name": "Sequential"' in run.value("keras", 0).item().decode()
    hparams = run.acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    assert backend.encode() in hparams


@pytest.mark.skipif(BACKEND == "tensorflow", reason="a backend without TensorFlow fits")
def test_tf_data_dataset_is_read_where_tensorflow_is_installed(tmp_path, read_run):
    tf = pytest.importorskip("tensorflow")
    import tb_explain as tbx

    rng = np.random.default_rng(0)
    x = rng.random((16, 5)).astype("float32")
    y = rng.integers(0, 2, 16)
    model = keras.Sequential([keras.layers.Input((5,)), keras.layers.Dense(2, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    callback = tbx.GradientNorms(str(tmp_path), data=dataset)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    np.testing.assert_array_equal(callback.probe.x, x)  # all 16 samples (<= 32)
    assert read_run(tmp_path).value("gradients/global_norm", 0) > 0


def test_unsupported_backend_is_an_import_error():
    result = _python("""
        try:
            import tb_explain
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
    """, "numpy")
    assert "IMPORT-ERROR:" in result.stdout, result.stderr[-2000:]
    assert "'numpy'" in result.stdout and "tensorflow, jax, torch" in result.stdout


def test_backend_switched_after_import_raises_before_the_first_epoch(tmp_path):
    other = OTHERS[0]
    result = _python(f"""
        import keras, numpy as np
        import tb_explain as tbx
        keras.config.set_backend({other!r})
        import keras
        model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        epochs = []
        try:
            model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=2, verbose=0,
                      callbacks=[tbx.WeightHistograms({str(tmp_path)!r}),
                                 keras.callbacks.LambdaCallback(
                                     on_epoch_end=lambda e, logs: epochs.append(e))])
        except RuntimeError as exc:
            print("RUNTIME-ERROR:", exc, "epochs run:", len(epochs))
    """, BACKEND)
    assert "RUNTIME-ERROR:" in result.stdout, result.stderr[-2000:]
    assert f"{BACKEND!r}" in result.stdout and f"{other!r}" in result.stdout
    assert "KERAS_BACKEND" in result.stdout and "epochs run: 0" in result.stdout
    assert not list(tmp_path.iterdir())  # nothing written
