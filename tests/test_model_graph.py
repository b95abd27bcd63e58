import json

import keras
import numpy as np
import pytest
from tensorboard.plugins.graph import keras_util

import tb_explain as tbx
from conftest import TwoDense


def _ops(run):
    return {node.op for node in run.acc.Graph().node}


@pytest.mark.tensorflow_only
def test_functional_conceptual_graph_op_graph_and_summary(tmp_path, read_run):
    inputs = keras.Input((4,), name="features")
    side = keras.Input((2,), name="side")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    merged = keras.layers.Concatenate(name="merge")([hidden, side])
    outputs = keras.layers.Dense(1, name="score")(merged)
    model = keras.Model({"features": inputs, "side": side}, outputs, name="two_inputs")
    model.compile("sgd", "mse")
    x = {"features": np.ones((8, 4), "float32"), "side": np.ones((8, 2), "float32")}
    model.fit(x, np.ones((8, 1)), epochs=1, verbose=0, callbacks=[tbx.ModelGraph(tmp_path)])

    run = read_run(tmp_path)
    assert run.plugin("keras") == "graph_keras_model"
    config = json.loads(run.text("keras", step=0))
    graph = keras_util.keras_model_to_graph_def(config)
    nodes = {node.name: list(node.input) for node in graph.node}
    assert "two_inputs/merge" in nodes
    assert set(nodes["two_inputs/merge"]) == {"two_inputs/hidden", "two_inputs/side"}
    assert nodes["two_inputs/score"] == ["two_inputs/merge"]
    # op graph of the forward pass
    assert {"MatMul", "ConcatV2", "Relu"} <= _ops(run)
    summary = run.text("model/summary", step=0)
    assert f"{model.count_params():,} parameters" in summary
    # Functional layers' Keras paths are their names (weights: hidden/kernel).
    assert "| hidden | Dense | (None, 8) | 40 |" in summary
    assert "| merge | Concatenate | (None, 10) | 0 |" in summary
    assert "| score | Dense | (None, 1) | 11 |" in summary


@pytest.mark.tensorflow_only
def test_sequential_without_input_is_logged_once_built(tmp_path, read_run, tabular):
    x, y = tabular
    model = keras.Sequential([keras.layers.Dense(4, name="a"), keras.layers.Dense(3, name="b")],
                             name="lazy")
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[tbx.ModelGraph(tmp_path)])
    run = read_run(tmp_path)
    assert run.steps("keras") == [0]
    names = [n.name for n in keras_util.keras_model_to_graph_def(json.loads(run.text("keras"))).node]
    assert "lazy/a" in names and "lazy/b" in names
    assert "MatMul" in _ops(run)
    assert run.steps("model/summary") == [0]


@pytest.mark.tensorflow_only
def test_subclassed_model_gets_an_op_graph(tmp_path, read_run, tabular):
    x, y = tabular
    model = TwoDense()
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[tbx.ModelGraph(tmp_path)])
    run = read_run(tmp_path)
    assert "keras" not in run.tags  # no layer graph in a subclassed config
    ops = _ops(run)
    assert {"MatMul", "Tanh", "BiasAdd"} <= ops
    # the traced graph reads the model's variables
    assert sum(n.op in ("ReadVariableOp", "Placeholder") for n in run.acc.Graph().node) >= 4
    summary = run.text("model/summary")
    assert "TwoDense" in summary and f"{model.count_params():,} parameters" in summary


@pytest.mark.tensorflow_only
def test_subclassed_dict_inputs_op_graph(tmp_path, read_run):
    class DictModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(3)
            self.b = keras.layers.Dense(3)

        def call(self, inputs):
            return self.a(inputs["left"]) * self.b(inputs["right"])

    model = DictModel()
    model.compile("sgd", "mse")
    x = {"left": np.ones((4, 2), "float32"), "right": np.ones((4, 5), "float32")}
    model.fit(x, np.ones((4, 3)), epochs=1, verbose=0, callbacks=[tbx.ModelGraph(tmp_path)])
    placeholders = [n for n in read_run(tmp_path).acc.Graph().node if n.op == "Placeholder"]
    dims = sorted(
        [d.size for d in n.attr["shape"].shape.dim] for n in placeholders if n.attr["shape"].shape.dim
    )
    assert [-1, 2] in dims and [-1, 5] in dims
