"""HParams, the read-back API and the tb-explain CLI, on logs from real fits."""

import csv
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tb_explain as tbx
from tb_explain import cli
from tb_explain.runs import load_run, load_runs
from conftest import fit_suite


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("runs")
    results = {lr: fit_suite(root / f"lr{lr}", lr, digits) for lr in (1e-3, 1e-2)}
    return root, results


def test_hparams_logged_with_final_metrics(two_runs):
    root, results = two_runs
    for lr, (model, history) in results.items():
        run = load_run(root / f"lr{lr}")
        assert run.hparams == {
            "model": "cnn", "parameters": model.count_params(), "epochs": 3,
            "backend": keras.backend.backend(),
            "optimizer": "Adam", "learning_rate": pytest.approx(lr), "batch_size": 16,
            "augment": False,
        }
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            steps, values = run.scalars(f"hparams/{metric}")
            assert list(steps) == [0, 1, 2]
            np.testing.assert_allclose(values, history.history[metric], rtol=1e-6)


def test_read_back_api_types(two_runs):
    root, results = two_runs
    runs = load_runs(root)
    assert sorted(runs) == ["lr0.001", "lr0.001/train", "lr0.001/validation",
                            "lr0.01", "lr0.01/train", "lr0.01/validation"]
    run = runs["lr0.001"]
    model = results[1e-3][0]
    steps, norms = run.scalars("weights/cnn/out/kernel/norm")
    assert steps.dtype == np.int64 and list(steps) == [0, 2]
    np.testing.assert_allclose(norms[-1], np.linalg.norm(model.get_layer("out").kernel.numpy()),
                               rtol=1e-6)
    hist = run.histograms("weights/cnn/conv/kernel")
    assert [h.step for h in hist] == [0, 2] and hist[-1].buckets[:, 2].sum() == 3 * 3 * 4
    images = run.images("activations/cnn/conv")
    assert len(images[-1].images) == 4 and images[-1].images[0].dtype == np.uint8
    assert images[-1].images[0].shape[2] == 3
    (step, text), = run.text("model/summary")
    assert step == 0 and "| cnn/conv | Conv2D |" in text
    assert run.has_graph is (keras.backend.backend() == "tensorflow")  # the op graph
    assert "gradients/global_norm" in run.tags("scalars")
    with pytest.raises(KeyError, match=r"No scalars tag 'gradients/global_nrom'"):
        run.scalars("gradients/global_nrom")
    with pytest.raises(ValueError, match="holds no TensorBoard event files"):
        load_run(root)
    with pytest.raises(ValueError, match="is not a directory"):
        load_runs(root / "lr0.001" / "missing")
    (root / "empty").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="No TensorBoard runs under"):
        load_runs(root / "empty")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tb_explain.cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_compare_formats(two_runs, capsys):
    root, results = two_runs
    assert cli.main(["compare", str(root), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [os.path.basename(r["run"]) for r in rows] == ["lr0.001", "lr0.01"]
    for row, lr in zip(rows, (1e-3, 1e-2)):
        run = load_run(root / f"lr{lr}")
        assert row["val_loss"] == pytest.approx(results[lr][1].history["val_loss"][-1], rel=1e-6)
        _, norms = run.scalars("gradients/global_norm")
        assert row["grad_norm_trend"] == pytest.approx(norms[-1] / norms[0], rel=1e-6)
        dead = [run.last(t) for t in run.tags("scalars") if t.endswith("/dead_fraction")]
        assert row["dead_fraction_max"] == pytest.approx(max(dead))
        assert row["ig_completeness_delta"] == pytest.approx(
            run.last("attributions/completeness_delta"))
    assert cli.main(["compare", str(root / "lr0.001"), str(root / "lr0.01"), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 2 and float(table[1]["val_loss"]) == pytest.approx(rows[1]["val_loss"],
                                                                            rel=1e-3)
    assert cli.main(["compare", str(root), "--format", "markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| run | accuracy |") and md[1].startswith("|---|") and len(md) == 4
    assert cli.main(["compare", str(root)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:3] == ["run", "accuracy", "loss"] and set(text[1]) <= {"-", " "}


def test_cli_summary_and_errors(two_runs, tmp_path):
    root, _ = two_runs
    result = _cli("summary", str(root / "lr0.01"))
    assert result.returncode == 0, result.stderr
    assert "steps (epochs) logged: [0, 1, 2]" in result.stdout
    op_graph = "yes" if keras.backend.backend() == "tensorflow" else "no"
    assert "learning_rate=0.01" in result.stdout and f"op graph: {op_graph}" in result.stdout
    info = json.loads(_cli("summary", str(root / "lr0.01"), "--format", "json").stdout)
    assert info["tags"]["images"] > 5 and info["hparams"]["optimizer"] == "Adam"
    missing = _cli("compare", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli("summary", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "No TensorBoard runs under" in empty.stderr
    several = _cli("summary", str(root))
    assert several.returncode == 2 and "holds 2 runs" in several.stderr


def test_hparams_bad_values_fail_at_construction(tmp_path):
    with pytest.raises(TypeError, match=r"`hparams\['layers'\]` must be a bool, int, float or str"):
        tbx.HParams(tmp_path, hparams={"layers": [1, 2]})


def test_version_is_the_installed_distributions():
    # setup reads the version from tb_explain.__version__: the installed
    # metadata (pip show, importlib.metadata) and `tb-explain --version` say it.
    import importlib.metadata

    assert importlib.metadata.version("tb_explain") == tbx.__version__
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"tb-explain {tbx.__version__}"
