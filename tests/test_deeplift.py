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


def _pool_twins():
    """conv -> max pooling -> conv (tanh) -> global average pooling -> dense."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.MaxPooling2D(2),
                              keras.layers.Conv2D(3, 3, activation="tanh"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    convs = [torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 3)]
    dense = torch.nn.Linear(3, 3)
    with torch.no_grad():
        for conv, layer in zip(convs, (model.layers[0], model.layers[2])):
            conv.weight.copy_(torch.tensor(np.transpose(np.asarray(layer.kernel), (3, 2, 0, 1))))
            conv.bias.copy_(torch.tensor(np.asarray(layer.bias)))
        dense.weight.copy_(torch.tensor(np.asarray(model.layers[4].kernel).T))
        dense.bias.copy_(torch.tensor(np.asarray(model.layers[4].bias)))

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.pool, self.conv2 = convs[0], torch.nn.MaxPool2d(2), convs[1]
            self.tanh, self.dense = torch.nn.Tanh(), dense

        def forward(self, x):
            h = self.tanh(self.conv2(self.pool(self.conv1(x.permute(0, 3, 1, 2)))))
            return self.dense(h.mean(dim=(2, 3)))

    return model, Twin().double()


@pytest.mark.parametrize("reference", ["zeros", "random"])
def test_deeplift_max_pooling_equals_captum(reference):
    model, twin = _pool_twins()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 8, 2)).astype("float32")
    baseline = np.zeros((8, 8, 2), "float32") if reference == "zeros" else (
        0.5 * rng.normal(size=(8, 8, 2))).astype("float32")
    target = np.array([0, 1, 2])
    ours = tbx.attribute(model, x, "deeplift", target=target, baseline=baseline)
    result = captum_attr.DeepLift(twin).attribute(
        torch.tensor(x, dtype=torch.float64), baselines=torch.tensor(baseline[None],
                                                                     dtype=torch.float64),
        target=torch.tensor(target))
    _close(ours.attributions, result.detach().numpy())
    assert ours.skipped == {} and np.abs(ours.delta).max() < 1e-5


def test_deeplift_max_pooling_after_relu_closed_form():
    """ReLU then max pooling, where Captum 0.9 breaks its own summation to
    delta (captum#1104, open): the rule worked by hand on one 4x4 input. In
    each 2x2 window the output change splits between the input's argmax,
    max(y, y_ref) - y_ref, and the reference's, y - max(y, y_ref), each
    divided by that position's change; the ReLU multiplies by its own
    rescale multiplier."""
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Activation("relu"),
                              keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                              keras.layers.Dense(1, use_bias=False)])
    model.layers[-1].kernel.assign(np.array([[1.0], [2.0], [3.0], [4.0]], "float32"))
    x = np.array([[0.5, 0.8, 0.3, -1.3], [0.9, 0.4, -0.5, 0.6],
                  [0.4, 0.3, 0.1, 0.5], [-0.7, -0.2, -0.5, 0.6]], "float32")
    b = np.array([[0.1, -0.3, -0.8, -0.3], [0.0, -0.3, 1.3, 1.0],
                  [-2.7, -1.9, -0.2, -0.4], [0.2, 0.2, 2.1, -1.1]], "float32")
    result = tbx.attribute(model, x[None, ..., None], "deeplift", target=0,
                           baseline=b[..., None]).attributions[0, ..., 0]
    expected = np.zeros((4, 4))
    # window 1: x's max 0.9 at (1,0), the reference's 0.1 at (0,0): all to (1,0)
    expected[1, 0] = 1.0 * (0.9 - 0.1)
    # window 2: x's max 0.6 at (1,3), the reference's 1.3 at (1,2): y - y_ref = -0.7 to
    # (1,2), whose ReLU output changes by 0 - 1.3 from an input change of -0.5 - 1.3
    expected[1, 2] = 2.0 * (-0.5 - 1.3) * (-0.7 / -1.3) * ((0.0 - 1.3) / (-0.5 - 1.3))
    # window 3: x's max 0.4 at (2,0), the reference's 0.2 at (3,0) and (3,1), the
    # first of the tie: max(y, y_ref) - y_ref = 0.2 to (2,0), y - max = 0 to (3,0)
    expected[2, 0] = 3.0 * (0.4 - (-2.7)) * (0.2 / (0.4 - 0.0)) * ((0.4 - 0.0) / (0.4 + 2.7))
    # window 4: x's max 0.6 at (3,3), the reference's 2.1 at (3,2): -1.5 to (3,2)
    expected[3, 2] = 4.0 * (-0.5 - 2.1) * (-1.5 / -2.1) * ((0.0 - 2.1) / (-0.5 - 2.1))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    f = lambda v: float(model(v[None, ..., None])[0, 0])  # noqa: E731
    assert result.sum() == pytest.approx(f(x) - f(b), rel=1e-5)


def test_uncovered_layers_are_named_and_bad_baselines_refused():
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.GlobalMaxPooling2D(name="pool"),
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
