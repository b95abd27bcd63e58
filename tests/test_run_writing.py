"""The shared core: one run per log_dir, faults, resumption, neighbours."""

import glob
import os
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest
from _tf import tf

import tb_explain as tbx

KERNEL = "weights/cnn/out/kernel"


def _event_files(path):
    return sorted(glob.glob(os.path.join(str(path), "events.out.tfevents.*")))


def test_suite_shares_one_writer_and_run_dir(tmp_path, cnn, digits, read_run):
    x, y = digits
    callbacks = tbx.explain(tmp_path / "nested" / "run", freq=2)
    assert [type(c).__name__ for c in callbacks] == ["TrainingCurves", "ModelGraph", "HParams",
                                                      "WeightHistograms"]
    cnn.fit(x, y, epochs=3, verbose=0, callbacks=callbacks)
    run_dir = tmp_path / "nested" / "run"
    assert len(_event_files(run_dir)) == 1
    run = read_run(run_dir)
    assert run.steps(KERNEL) == [0, 2]
    assert run.steps("keras") == [0]
    assert run.steps("timing/model_graph_seconds") == [0]


def test_interrupted_fit_keeps_what_was_logged(tmp_path, cnn, digits, read_run):
    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 3 and batch == 1:
                raise KeyboardInterrupt("user pressed Ctrl-C")

    x, y = digits
    with pytest.raises(KeyboardInterrupt):
        cnn.fit(x, y, epochs=6, batch_size=8, verbose=0,
                callbacks=[*tbx.explain(tmp_path), Crash()])
    # Read while the writer is still open: every event was flushed.
    run = read_run(tmp_path)
    assert run.steps(KERNEL) == [0, 1, 2]
    assert run.steps("keras") == [0]


def test_resumed_fit_continues_the_step_axis(tmp_path, cnn, digits, read_run):
    x, y = digits
    cnn.fit(x, y, epochs=3, verbose=0, callbacks=tbx.explain(tmp_path, freq=2))
    cnn.fit(x, y, epochs=6, initial_epoch=3, verbose=0, callbacks=tbx.explain(tmp_path, freq=2))
    run = read_run(tmp_path)
    assert run.steps(KERNEL) == [0, 2, 4, 5]
    final = np.asarray(cnn.get_layer("out").kernel.numpy(), np.float64)
    np.testing.assert_allclose(run.value(KERNEL + "/norm", 5), np.linalg.norm(final), rtol=1e-6)


def test_same_callbacks_reused_for_a_second_fit(tmp_path, cnn, digits, read_run):
    x, y = digits
    callbacks = tbx.explain(tmp_path)
    cnn.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
    cnn.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=callbacks)
    assert read_run(tmp_path).steps(KERNEL) == [0, 1, 2, 3]


@pytest.mark.needs_tensorflow  # Keras's TensorBoard callback imports TensorFlow
def test_beside_keras_tensorboard_with_integer_update_freq(tmp_path, cnn, digits, read_run):
    """keras's TensorBoard(update_freq=7) leaves a global record_if active."""
    x, y = digits
    callbacks = [keras.callbacks.TensorBoard(tmp_path, update_freq=7, histogram_freq=1),
                 *tbx.explain(tmp_path)]
    # 64 samples / batch 8 = 8 steps per epoch: the epoch-end step is never a
    # multiple of 7 except by chance, so a leaked record_if would drop ours.
    cnn.fit(x, y, epochs=4, batch_size=8, validation_data=(x[:16], y[:16]), verbose=0,
            callbacks=callbacks)
    run = read_run(tmp_path)
    assert run.steps(KERNEL) == [0, 1, 2, 3]
    assert run.steps("weights/nonfinite_values") == [0, 1, 2, 3]
    # keras undisturbed: its batch scalars every 7 steps, its graph, in train/
    keras_train = read_run(tmp_path / "train")
    steps = keras_train.steps("batch_loss")
    assert steps and all(s % 7 == 0 for s in steps) and max(steps) >= 28
    assert keras_train.steps("keras") == [0]


@pytest.mark.tensorflow_only
def test_global_record_if_false_does_not_drop_summaries(tmp_path, cnn, digits, read_run):
    x, y = digits
    with tf.summary.record_if(False):
        cnn.fit(x, y, epochs=2, verbose=0, callbacks=tbx.explain(tmp_path))
    assert read_run(tmp_path).steps(KERNEL) == [0, 1]


def test_diverging_fit_keeps_every_event(tmp_path, digits, read_run):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="tanh", name="h"),
                              keras.layers.Dense(1, name="o")], name="div")
    model.compile(keras.optimizers.SGD(learning_rate=1e3), "mse")
    with pytest.warns(RuntimeWarning, match="non-finite weights"):
        model.fit(x, y.astype("float32") * 1e3, epochs=4, verbose=0,
                  callbacks=tbx.explain(tmp_path))
    run = read_run(tmp_path)
    assert run.steps("weights/div/h/kernel") == [0, 1, 2, 3]
    counts = run.values("weights/nonfinite_values")
    assert counts[3] > 0
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    assert counts[3] <= total
    kernel = np.asarray(model.get_layer("h").kernel.numpy())
    hist = run.value("weights/div/h/kernel", 3)
    assert hist[:, 2].sum() == np.isfinite(kernel).sum()
    assert run.steps("weights/alerts")[-1] == 3


def test_explain_options_are_checked(tmp_path):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['imgs'\]"):
        tbx.explain(tmp_path, imgs=True)
    with pytest.raises(ValueError, match=r"`freq` must be an int >= 1, got -1"):
        tbx.explain(tmp_path, freq=-1)
    callbacks = tbx.explain(tmp_path, images=True, freq=4, hparams={"dropout": 0.1})
    weights = [c for c in callbacks if isinstance(c, tbx.WeightHistograms)][0]
    assert weights.images is True and weights.freq == 4
    hparams = [c for c in callbacks if isinstance(c, tbx.HParams)][0]
    assert hparams.hparams == {"dropout": 0.1}


def test_log_dir_errors(tmp_path):
    file_path = tmp_path / "a_file"
    file_path.write_text("x")
    with pytest.raises(ValueError, match=r"`log_dir` must be a directory, but .*a_file"):
        tbx.WeightHistograms(file_path)
    with pytest.raises(ValueError, match=r"`log_dir` .*a_file/sub.* cannot be created"):
        tbx.ModelGraph(file_path / "sub")
    with pytest.raises(TypeError, match=r"`log_dir` must be a str or os.PathLike, got 3"):
        tbx.ModelGraph(3)
    with pytest.raises(ValueError, match=r"`log_dir` must be a non-empty path"):
        tbx.ModelGraph("")
    tbx.ModelGraph(tmp_path / "x" / "y" / "z")
    assert (tmp_path / "x" / "y" / "z").is_dir()


def _run_python(code, **env):
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=environ, timeout=300)


def test_import_error_names_what_to_install():
    result = _run_python("""
        import sys
        sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
        try:
            import tb_explain
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
    """, KERAS_BACKEND="tensorflow")
    assert "IMPORT-ERROR: tb_explain needs TensorFlow" in result.stdout, result.stderr
    assert "tb_explain[cpu]" in result.stdout and "tb_explain[jax]" in result.stdout
    assert "KERAS_BACKEND=jax" in result.stdout


def test_import_error_on_other_keras_backend():
    result = _run_python("""
        try:
            import tb_explain
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
    """, KERAS_BACKEND="numpy")
    assert "IMPORT-ERROR:" in result.stdout, result.stderr
    assert "KERAS_BACKEND='numpy'" in result.stdout
    assert "Keras backends tensorflow, jax, torch" in result.stdout


@pytest.mark.tensorflow_only
def test_mirrored_strategy(tmp_path, read_run):
    """Two replicas on two logical CPUs: one run, every event (own process)."""
    result = _run_python(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, tb_explain as tbx
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d")],
                                     name="m")
            model.compile("sgd", "mse")
        x = np.random.rand(32, 4).astype("float32"); y = np.random.rand(32, 3).astype("float32")
        model.fit(x, y, epochs=3, batch_size=8, verbose=0,
                  callbacks=tbx.explain({str(tmp_path)!r}, data=(x[:4], y[:4]), freq=2, steps=8))
        np.save({str(tmp_path / "kernel.npy")!r}, model.get_layer("d").kernel.numpy())
        print("OK")
    """)
    assert "OK" in result.stdout, result.stderr[-3000:]
    run = read_run(tmp_path)
    assert run.steps("weights/m/d/kernel") == [0, 2]
    kernel = np.load(tmp_path / "kernel.npy").astype(np.float64)
    np.testing.assert_allclose(run.value("weights/m/d/kernel/norm", 2), np.linalg.norm(kernel),
                               rtol=1e-6)
    assert run.steps("keras") == [0]
    # the probe callbacks work on mirrored variables too
    assert run.steps("gradients/global_norm") == [0, 2]
    assert run.steps("activations/m/d/dead_fraction") == [0, 2]
    assert run.value("attributions/completeness_delta", 2) < 1e-4  # a linear model: exact


class _FakeStrategy:
    def __init__(self, cluster, task_type, task_id):
        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


class _FakeModel:
    def __init__(self, strategy):
        self.distribute_strategy = strategy


@pytest.mark.parametrize("cluster,task_type,task_id,chief", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
    ({"worker": ["a:1"], "ps": ["p:1"]}, "ps", 0, False),
])
@pytest.mark.tensorflow_only
def test_only_the_chief_writes(tmp_path, cluster, task_type, task_id, chief):
    from tb_explain.summary import ops
    from tb_explain.summary.writer import RunWriter, is_chief

    model = _FakeModel(_FakeStrategy(cluster, task_type, task_id))
    assert is_chief(model) is chief
    writer = RunWriter(str(tmp_path), chief=chief)
    with writer.record(0):
        ops.write_scalar("x", 1.0, 0)
    writer.close()
    assert bool(_event_files(tmp_path)) is chief


def test_batched_images_are_encoded_on_the_pool_in_order(tmp_path, read_run, monkeypatch):
    from tb_explain import _threads
    from tb_explain.summary import ops
    from tb_explain.summary.writer import RunWriter

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 9, 7, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = 7  # 255 there makes the encoding fail
    expected = images.copy()
    threads = []
    encode = ops.encode_png

    def recording(image, palette=None):
        threads.append(threading.current_thread().name)
        if image[0, 0, 0] == 255:
            raise OSError("disk full")
        return encode(image, palette)

    monkeypatch.setattr(ops, "encode_png", recording)
    writer = RunWriter(str(tmp_path))
    with ops.batched(4, writer):
        ops.write_scalar("first", 1.0, 4)
        ops.write_images("pictures", images, 4)
        images[:] = 0  # reused by the caller before the batch ends: no effect
        ops.write_scalar("last", 2.0, 4)
    broken = np.zeros((2, 5, 5, 3), np.uint8)
    broken[1, 0, 0, 0] = 255
    with pytest.raises(OSError, match="disk full"):
        with ops.batched(5, writer):
            ops.write_images("broken", broken, 5)
            ops.write_scalar("kept", 3.0, 5)
    writer.close()
    run = read_run(tmp_path)
    assert run.values("first") == {4: 1.0} and run.values("last") == {4: 2.0}
    assert run.values("kept") == {5: 3.0} and "broken" not in run.tags  # the rest is kept
    assert list(run.value("pictures", 4)[:2]) == [b"7", b"9"]  # width, height
    for i in range(3):
        np.testing.assert_array_equal(run.image("pictures", 4, index=i), expected[i])
    if _threads.workers() > 1:
        assert all(name.startswith("tb_explain") for name in threads), threads


def test_fast_checksums_equal_tensorboards():
    """The C CRC32C the writer gives TensorBoard's record writer computes
    TensorBoard's own masked CRC32C (its pure-Python one) on every input."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
    from tensorboard.summary.writer import record_writer

    from tb_explain.summary import writer

    assert writer.FAST_CRC and record_writer.masked_crc32c is writer.masked_crc32c
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 8, 9, 1000, 65537):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert writer.masked_crc32c(data) == reference(data)
