import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_and_logs_everything(tmp_path, read_run):
    log_dir = tmp_path / "runs" / "demo"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo_train.py"), "--logdir", str(log_dir),
         "--epochs", "3", "--freq", "2"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in result.stdout
    output = result.stdout + result.stderr
    assert "WARNING:tensorflow" not in output and "retracing" not in output, output[-3000:]
    # no callback failed to log or left work out (the demo runs as users run it,
    # where these are warnings, not the suite's errors)
    assert "failed to log" not in output and "skipped" not in output, output[-3000:]
    run = read_run(log_dir)
    assert run.steps("weights/digits_cnn/conv1/kernel") == [0, 2]
    assert run.steps("weights/digits_cnn/conv1/kernel/image") == [0, 2]
    assert run.steps("keras") == [0]
    assert "38,346 parameters" in run.text("model/summary")
    assert run.steps("gradients/global_norm") == [0, 2]
    assert run.steps("activations/digits_cnn/conv1") == [0, 2]
    assert run.steps("activations/input") == [0, 2]
    assert run.steps("attributions/input/overlay") == [0, 2]
    assert run.steps("attributions/comparison/input") == [0, 2]
    assert run.steps("attributions/gradcam/input/overlay") == [0, 2]
    assert "Sanity check at epoch 2" in run.text("attributions/sanity")
    assert run.value("attributions/completeness_delta", 2) < 0.05
    assert run.steps("gradients/digits_cnn/conv1/update_ratio") == [2]
    assert read_run(log_dir / "train").steps("epoch_loss") == [0, 1, 2]
    assert read_run(log_dir / "validation").steps("epoch_accuracy") == [0, 1, 2]
    # Predictions on train and validation: the validation accuracy is keras's own
    assert run.steps("outputs/validation/accuracy") == [0, 2]
    keras_accuracy = read_run(log_dir / "validation").value("epoch_accuracy", 2)
    assert run.value("outputs/validation/accuracy", 2) == pytest.approx(keras_accuracy, abs=1e-6)
    assert "| 0 |" in run.text("outputs/validation/confusion")
    for tag in ("outputs/validation/pr_curve/0", "outputs/train/pr_curve/9",
                "outputs/validation/calibration", "outputs/validation/mistakes",
                "dynamics/data_map"):
        assert run.steps(tag) == [0, 2], tag
    assert run.plugin("outputs/validation/pr_curve/0") == "pr_curves"
    # every tag family on every backend; the op graph only on TensorFlow
    families = {t.split("/")[0] for t in run.tags + run.acc.Tags()["images"]}
    assert {"weights", "gradients", "activations", "attributions", "outputs", "dynamics",
            "features", "model", "timing", "keras", "_hparams_"} <= families, families
    assert run.acc.Tags()["graph"] == (keras.backend.backend() == "tensorflow")
    assert "validation" in run.text("outputs/diagnostics")
    # Embeddings for the Projector: the hidden layer at each logged epoch
    from tb_explain.summary import projector

    config = projector.read_config(str(log_dir))
    assert [e.tensor_name for e in config.embeddings] == [
        "digits_cnn/dense @ epoch 0", "digits_cnn/dense @ epoch 2"]
    assert all(e.sprite.image_path == "embeddings/sprite.png" for e in config.embeddings)
    assert "PROJECTOR" in result.stdout
    # feature visualization of conv2's filters and the classes
    assert run.steps("features/digits_cnn/conv2") == [0, 2]
    assert run.steps("features/digits_cnn/classes") == [0, 2]


def test_demo_rejects_bad_arguments(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo_train.py"), "--epochs", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "--epochs must be >= 1, got 0" in result.stderr


def test_demo_tabular_variant_names_features(tmp_path, read_run):
    log_dir = tmp_path / "cancer"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo_train.py"), "--dataset", "cancer",
         "--logdir", str(log_dir), "--epochs", "2"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = read_run(log_dir)
    assert run.steps("attributions/input/features/mean radius") == [0, 1]
    ranking = run.text("attributions/input/ranking")
    assert ranking.count("\n| ") == 30 + 1  # header + 30 features
    assert run.value("attributions/completeness_delta") < 0.05
    assert run.steps("importance/mean radius") == [0, 1]
    assert "IG rank" in run.text("importance/ranking")
    assert "THEN malignant" in run.text("rules/text") or "THEN benign" in run.text("rules/text")
    assert 0.5 < run.value("rules/fidelity") <= 1.0
    # Embeddings for the Projector: the last hidden layer at each logged epoch
    from tb_explain.summary import projector

    config = projector.read_config(str(log_dir))
    assert [e.tensor_name for e in config.embeddings] == [
        "cancer_mlp/hidden2 @ epoch 0", "cancer_mlp/hidden2 @ epoch 1"]
    assert not any(e.sprite.image_path for e in config.embeddings)  # a table: no sprite
    assert not [t for t in run.tags if t.startswith("features/")]
