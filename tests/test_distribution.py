"""keras.distribution on JAX: DataParallel over two local devices, ModelParallel
with a sharded kernel, and two processes on localhost.

Each fit runs in a subprocess (`_distributed_fit.py`: the device count is
fixed when JAX starts); the values logged at the last epoch are compared with
a single-device computation on the final weights, done here with numpy and
the public functions.
"""

import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import tb_explain as tbx

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="keras.distribution is implemented for JAX")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _distributed_fit  # noqa: E402


def _start(mode, log_dir, *args, devices=2):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen([sys.executable, os.path.join(HERE, "_distributed_fit.py"), mode,
                             str(log_dir), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a process waiting on a collective forever
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the fit did not end in {timeout} s (a collective skipped?): {err[-2000:]}")
    assert process.returncode == 0 and "FIT-DONE" in out, err[-3000:]
    return out


def _event_files(log_dir):
    return [f for f in os.listdir(log_dir) if f.startswith("events.out.tfevents")]


def _check_against_final_weights(read_run, log_dir):
    """The last epoch's logged values equal a single-device computation on
    the final weights."""
    model, x, y = _distributed_fit.model_and_data()
    saved = np.load(log_dir / "weights.npz")
    model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
    run = read_run(log_dir)
    for w in model.weights:
        np.testing.assert_allclose(run.value(f"weights/{w.path}/norm", 1),
                                   np.linalg.norm(np.asarray(w.numpy(), np.float64)), rtol=1e-5)
        buckets = run.value(f"weights/{w.path}", 1)
        assert buckets[:, 2].sum() == np.prod(w.shape)  # the whole weight, not a shard
        assert buckets[0, 0] == pytest.approx(float(w.numpy().min()), rel=1e-6)
    probs = keras.ops.convert_to_numpy(model(x[:8]))
    expected_loss = -np.mean(np.log(probs[np.arange(8), y[:8]]))
    np.testing.assert_allclose(run.value("gradients/loss", 1), expected_loss, rtol=1e-4)
    ig = tbx.integrated_gradients(model, x[:4], steps=8)
    completeness = run.value("attributions/completeness_delta", 1)
    assert np.isfinite(completeness) and abs(completeness) < 0.05
    accuracy = np.mean(np.argmax(keras.ops.convert_to_numpy(model(x)), 1) == y)
    np.testing.assert_allclose(run.value("outputs/val/accuracy", 1), accuracy, rtol=1e-6)
    assert np.abs(ig.attributions).sum() > 0
    return run


def test_data_parallel_over_two_local_devices(tmp_path, read_run):
    out = _finish(_start("data", tmp_path))
    assert "DEVICES 2" in out
    assert len(_event_files(tmp_path)) == 1
    _check_against_final_weights(read_run, tmp_path)


def test_model_parallel_with_a_sharded_kernel(tmp_path, read_run):
    out = _finish(_start("model", tmp_path))
    assert "DEVICES 2 KERNEL-SHARDS 2 SPEC P(None, 'model')" in out
    _check_against_final_weights(read_run, tmp_path)


def test_two_processes_only_process_zero_writes(tmp_path, read_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = [tmp_path / "p0", tmp_path / "p1"]
    processes = [_start("processes", logs[i], i, port, devices=1) for i in range(2)]
    outs = [_finish(p) for p in processes]
    assert all("DEVICES 2" in o for o in outs)  # one device each, two in the job
    assert len(_event_files(logs[0])) == 1
    assert not logs[1].exists() or not _event_files(logs[1])  # process 1 wrote nothing
    run = _check_against_final_weights(read_run, logs[0])
    assert run.steps("gradients/global_norm") == [0, 1]
