"""DeepLIFT and DeepLiftShap against Captum on twin PyTorch weights (float64),
on every Keras backend."""

import keras
import numpy as np
import pytest

import tb_explain as tbx

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _mlp_twins(activation):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation=activation),
                              keras.layers.Dense(5, activation=activation),
                              keras.layers.Dense(3)])
    modules = []
    for i, layer in enumerate(model.layers):
        linear = torch.nn.Linear(*layer.kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(np.asarray(layer.kernel).T))
            linear.bias.copy_(torch.tensor(np.asarray(layer.bias)))
        modules.append(linear)
        if i < 2:
            modules.append(getattr(torch.nn, TORCH_ACTIVATIONS[activation])())
    return model, torch.nn.Sequential(*modules).double()


def _cnn_twins():
    """Conv(relu) -> global average pooling -> dense softmax."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6, 6, 2)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax", name="out")])
    conv = torch.nn.Conv2d(2, 4, 3)
    dense = torch.nn.Linear(4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(np.transpose(np.asarray(model.layers[0].kernel),
                                                    (3, 2, 0, 1))))
        conv.bias.copy_(torch.tensor(np.asarray(model.layers[0].bias)))
        dense.weight.copy_(torch.tensor(np.asarray(model.layers[2].kernel).T))
        dense.bias.copy_(torch.tensor(np.asarray(model.layers[2].bias)))

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.dense = conv, torch.nn.ReLU(), dense
            self.softmax = torch.nn.Softmax(dim=1)

        def forward(self, x):  # NHWC in, as Keras
            h = self.relu(self.conv(x.permute(0, 3, 1, 2)))
            return self.softmax(self.dense(h.mean(dim=(2, 3))))

    return model, Twin().double()


def _close(ours, reference, rtol=1e-5):
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() <= rtol * scale, np.abs(ours - reference).max() / scale


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_deeplift_and_deeplift_shap_equal_captum_on_mlps(activation):
    model, twin = _mlp_twins(activation)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6)).astype("float32")
    baseline = (0.3 * rng.normal(size=(6,))).astype("float32")
    target = np.array([0, 1, 2, 0, 1])
    ours = tbx.attribute(model, x, "deeplift", target=target, baseline=baseline)
    as_torch = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    reference = captum_attr.DeepLift(twin).attribute(
        as_torch(x), baselines=as_torch(baseline[None]), target=torch.tensor(target))
    _close(ours.attributions, reference.detach().numpy())
    # summation to delta: per sample, the attributions sum to F(x) - F(baseline)
    f = lambda v: twin(as_torch(v)).detach().numpy()  # noqa: E731
    gap = f(x)[np.arange(5), target] - f(np.repeat(baseline[None], 5, 0))[np.arange(5), target]
    np.testing.assert_allclose(ours.attributions.sum(axis=1), gap, rtol=1e-5, atol=1e-6)
    assert np.abs(ours.delta).max() < 1e-5 and ours.skipped == {}
    baselines = rng.normal(size=(4, 6)).astype("float32")
    ours = tbx.attribute(model, x, "deeplift_shap", target=target, baselines=baselines)
    reference = captum_attr.DeepLiftShap(twin).attribute(
        as_torch(x), baselines=as_torch(baselines), target=torch.tensor(target))
    _close(ours.attributions, reference.detach().numpy())


def test_deeplift_equals_captum_on_a_cnn_with_softmax():
    model, twin = _cnn_twins()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 6, 2)).astype("float32")
    ours = tbx.attribute(model, x, "deeplift", target=np.array([0, 1, 2]))
    # Captum's softmax rule takes a mean over its whole batch: one sample at a time
    for i, t in enumerate((0, 1, 2)):
        reference = captum_attr.DeepLift(twin).attribute(
            torch.tensor(x[i:i + 1], dtype=torch.float64), baselines=0.0, target=t)
        _close(ours.attributions[i:i + 1], reference.detach().numpy())


def test_uncovered_layers_are_named_and_bad_baselines_refused():
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.MaxPooling2D(name="pool"), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="gelu", name="hidden"),
                              keras.layers.Dense(2)], name="net")
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 1)).astype("float32")
    result = tbx.attribute(model, x, "deeplift")
    assert result.skipped["deeplift"] == ("nonlinear layers kept their gradient (no rescale "
                                          "rule): net/pool, net/hidden (gelu)")
    with pytest.raises(ValueError, match="at least 2 references for 'deeplift_shap', got 1"):
        tbx.attribute(model, x, "deeplift_shap", baselines=x[:1])
    with pytest.raises(ValueError, match="`baselines` is required for 'deeplift_shap'"):
        tbx.attribute(model, x, "deeplift_shap")
