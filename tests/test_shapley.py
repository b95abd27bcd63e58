"""Shapley values over feature groups (`shapley`, `kernel_shap`), against
independent computations: Shapley's definition by permutations on the
model's own predictions, and the closed form of linear models."""

import importlib.util
import itertools
import math

import keras
import numpy as np
import pytest

import tb_explain as tbx


def _mlp(features=5, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((features,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(3, activation="softmax")])


def _by_permutations(model, x, target, groups, baseline):
    """Shapley's definition: the mean over every order of the groups of
    each group's marginal contribution, on `model.predict`."""
    m = int(groups.max()) + 1
    phi = np.zeros((len(x), m))
    for s in range(len(x)):
        memo = {}

        def value(coalition):
            key = frozenset(coalition)
            if key not in memo:
                keep = np.isin(groups, list(key))
                point = np.where(keep, x[s], baseline[s])
                memo[key] = float(model.predict(point[None], verbose=0)[0, target])
            return memo[key]
        for order in itertools.permutations(range(m)):
            held = []
            for g in order:
                phi[s, g] += value(held + [g]) - value(held)
                held.append(g)
    return phi / math.factorial(m)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 5)).astype("float32")


def test_shapley_is_shapleys_definition(table):
    model = _mlp()
    baseline = np.full_like(table, 0.5)
    want = _by_permutations(model, table, 1, np.arange(5), baseline)
    got = tbx.attribute(model, table, "shapley", target=1, baseline=0.5)
    np.testing.assert_allclose(got.attributions, want, atol=1e-6)
    f = model.predict(table, verbose=0)[:, 1]
    f0 = model.predict(baseline, verbose=0)[:, 1]
    np.testing.assert_allclose(got.output, f, rtol=1e-5)
    np.testing.assert_allclose(got.attributions.sum(axis=1), f - f0, atol=1e-6)  # efficiency


def test_groups_carry_their_value_on_every_element(table):
    model = _mlp()
    mask = np.array([0, 0, 1, 2, 2])
    want = _by_permutations(model, table, 2, mask, np.zeros_like(table))
    got = tbx.attribute(model, table, "shapley", target=2, feature_mask=mask)
    np.testing.assert_allclose(got.attributions, want[:, mask], atol=1e-6)
    kernel = tbx.attribute(model, table, "kernel_shap", target=2, feature_mask=mask, samples=6)
    np.testing.assert_allclose(kernel.attributions, want[:, mask], atol=1e-6)  # all 2^3 - 2


def test_kernel_shap_with_every_coalition_is_exact_and_sampled_is_close(table):
    model = _mlp(seed=1)
    want = _by_permutations(model, table, 0, np.arange(5), np.zeros_like(table))
    exact = tbx.attribute(model, table, "kernel_shap", target=0, samples=30)
    np.testing.assert_allclose(exact.attributions, want, atol=1e-6)
    sampled = tbx.attribute(model, table, "kernel_shap", target=0, samples=24, seed=3)
    again = tbx.attribute(model, table, "kernel_shap", target=0, samples=24, seed=3)
    np.testing.assert_array_equal(sampled.attributions, again.attributions)
    np.testing.assert_allclose(sampled.delta, 0, atol=1e-9)  # efficiency holds exactly
    assert np.abs(sampled.attributions - want).max() < 0.25 * np.abs(want).max()


def test_linear_models_closed_form():
    """F = w . x + c: phi_g = sum over the group of w_j (x_j - b_j), for any
    coalitions (KernelSHAP fits a linear function exactly)."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)])
    w = model.layers[-1].get_weights()[0][:, 0].astype(np.float64)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 7)).astype("float32")
    b = rng.normal(size=(7,)).astype("float32")
    mask = np.array([0, 1, 1, 2, 3, 3, 3])
    contribution = (x - b) * w
    want = np.stack([contribution[:, mask == g].sum(axis=1) for g in range(4)], axis=1)[:, mask]
    for method, options in (("shapley", {}), ("kernel_shap", {"samples": 6, "seed": 0})):
        got = tbx.attribute(model, x, method, baseline=b, feature_mask=mask, **options)
        np.testing.assert_allclose(got.attributions, want, rtol=1e-4, atol=1e-5)


def test_tokens_are_grouped_per_token_at_their_embedding():
    keras.utils.set_random_seed(3)
    ids = keras.Input((4,), dtype="int32")
    embedding = keras.layers.Embedding(10, 3)
    hidden = keras.layers.Flatten()(embedding(ids))
    model = keras.Model(ids, keras.layers.Dense(1)(hidden))
    tokens = np.array([[1, 2, 3, 4], [5, 6, 0, 9]], "int32")
    table = embedding.get_weights()[0]
    w = model.layers[-1].get_weights()[0][:, 0].reshape(4, 3)
    want = (table[tokens] * w).sum(axis=-1)  # against the zero embedding
    got = tbx.attribute(model, tokens, "shapley")
    assert got.attributions.shape == (2, 4)
    np.testing.assert_allclose(got.attributions, want, rtol=1e-4, atol=1e-6)


def test_images_default_to_patches_and_the_group_limit():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(4).random((2, 8, 8, 2)).astype("float32")
    got = tbx.attribute(model, x, "shapley")  # a 4 x 4 grid: 16 groups, 2^16 coalitions
    patches = got.attributions.reshape(2, 4, 2, 4, 2, 2)
    assert np.allclose(patches, patches[:, :, :1, :, :1, :1])  # constant over each patch
    f = model.predict(x, verbose=0)
    f0 = model.predict(np.zeros_like(x), verbose=0)
    rows = np.arange(2)
    np.testing.assert_allclose(patches[:, :, 0, :, 0, 0].sum(axis=(1, 2)),
                               f[rows, got.target] - f0[rows, got.target], atol=1e-5)
    with pytest.raises(ValueError, match="at most 16 groups"):
        tbx.attribute(model, x, "shapley", feature_mask=np.arange(17 * 4)[:64].reshape(8, 8, 1)
                      % 17)
    with pytest.raises(ValueError, match="0..M-1"):
        tbx.attribute(model, x, "shapley", feature_mask=np.full((8, 8, 1), 3))
    with pytest.raises(ValueError, match="`samples` must be"):
        tbx.attribute(model, x, "kernel_shap", samples=1)


def test_explain_logs_them_for_a_table(tmp_path, read_run):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = _mlp(seed=5)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0, callbacks=tbx.explain(
        tmp_path, data=(x[:4], y[:4]), methods=["shapley", "kernel_shap"], samples=30))
    run = read_run(tmp_path)
    target = model.predict(x[:4], verbose=0).argmax(axis=1)
    phi = np.stack([_by_permutations(model, x[s:s + 1], t, np.arange(5),
                                     np.zeros((1, 5), "float32"))[0]
                    for s, t in enumerate(target)])
    for method in ("shapley", "kernel_shap"):
        for j in range(5):
            tag = next(t for t in run.tags if t.startswith(f"attributions/{method}/")
                       and t.endswith(f"/features/feature_{j}"))
            assert float(run.value(tag, 0)) == pytest.approx(np.abs(phi[:, j]).mean(), abs=1e-5)
    # the tab's tabular view puts them beside permutation importance, by name
    from tensorboard import context as tb_context

    from test_dashboard import _plugin

    body = _plugin(tmp_path.parent).attributions(tb_context.RequestContext(), "",
                                                  {"run": tmp_path.name})
    labels = {f["label"] for f in body["features"]}
    assert {"shapley (input)", "kernel_shap (input)"} <= labels


def test_gradient_shap_is_expected_gradients(table):
    """In expectation, GradientSHAP is the mean over the baselines of
    integrated gradients from each: checked within the Monte Carlo error
    measured over seeds."""
    model = _mlp(seed=6)
    baselines = np.random.default_rng(6).normal(size=(4, 5)).astype("float32")
    want = np.mean([tbx.integrated_gradients(model, table, baseline=b, target=1,
                                             steps=64).attributions for b in baselines], axis=0)
    runs = np.stack([tbx.attribute(model, table, "gradient_shap", baselines=baselines,
                                   samples=400, seed=seed, target=1).attributions
                     for seed in range(8)])
    error = runs.std(axis=0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(runs.mean(axis=0) - want) <= 5 * error + 1e-4)
    again = tbx.attribute(model, table, "gradient_shap", baselines=baselines, samples=400,
                          seed=3, target=1)
    np.testing.assert_array_equal(again.attributions, runs[3])
    # a linear model and one baseline: exactly w * (x - b), whatever the draws
    keras.utils.set_random_seed(7)
    linear = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    w = linear.layers[-1].get_weights()[0][:, 0]
    got = tbx.attribute(linear, table, "gradient_shap", baselines=baselines[:1], samples=7)
    np.testing.assert_allclose(got.attributions, w * (table - baselines[0]), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got.delta, 0, atol=1e-5)
    with pytest.raises(ValueError, match="`baselines` must stack"):
        tbx.attribute(model, table, "gradient_shap", baselines=baselines[0])
    with pytest.raises(ValueError, match="`stdevs` must be"):
        tbx.attribute(model, table, "gradient_shap", baselines=baselines, stdevs=-1.0)


def test_the_explain_tab_lists_them(tmp_path, read_run):
    from tensorboard import context as tb_context

    from test_dashboard import _plugin

    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(8).random((8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 3
    model.fit(x, y, epochs=1, verbose=0, callbacks=[tbx.Attributions(
        tmp_path / "run", (x[:2], y[:2]), methods=["shapley", "kernel_shap", "gradient_shap"],
        samples=40)])
    plugin, ctx = _plugin(tmp_path), tb_context.RequestContext()
    body = plugin.attributions(ctx, "", {"run": "run"})
    labels = [c["label"] for c in body["columns"]]
    assert {"shapley", "kernel_shap", "gradient_shap"} <= set(labels)
    assert "integrated gradients" not in labels


def _torch_twin(model):
    """The `_mlp` as a float64 PyTorch module with the same weights."""
    import torch  # noqa: PLC0415

    dense = [layer for layer in model.layers if hasattr(layer, "kernel")]
    linears = []
    for layer in dense:
        linear = torch.nn.Linear(*layer.kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(np.asarray(layer.kernel).T))
            linear.bias.copy_(torch.tensor(np.asarray(layer.bias)))
        linears.append(linear)
    return torch.nn.Sequential(linears[0], torch.nn.Tanh(), linears[1],
                               torch.nn.Softmax(dim=1)).double()


@pytest.mark.skipif(importlib.util.find_spec("captum") is None
                    or importlib.util.find_spec("torch") is None,
                    reason="Captum (test extra) explains a PyTorch twin of the model")
def test_captum_agrees(table):
    """Captum's ShapleyValues, KernelShap and GradientShap on a float64
    PyTorch twin of the Keras model, on every Keras backend."""
    import torch  # noqa: PLC0415
    from captum.attr import GradientShap, KernelShap, ShapleyValues  # noqa: PLC0415

    model = _mlp(seed=9)
    twin = _torch_twin(model)
    mask = torch.tensor([[0, 0, 1, 2, 3]])
    inputs = torch.tensor(table, dtype=torch.float64)
    theirs = ShapleyValues(twin).attribute(inputs, target=1, feature_mask=mask,
                                           baselines=0.0).detach().numpy()
    ours = tbx.attribute(model, table, "shapley", target=1, feature_mask=mask.numpy()[0])
    np.testing.assert_allclose(ours.attributions, theirs, atol=1e-6)
    kernel = tbx.attribute(model, table, "kernel_shap", target=1, feature_mask=mask.numpy()[0],
                           samples=16)  # every coalition: exact
    np.testing.assert_allclose(kernel.attributions, theirs, atol=1e-6)
    sampled = KernelShap(twin).attribute(inputs, target=1, feature_mask=mask, baselines=0.0,
                                         n_samples=2000).detach().numpy()
    np.testing.assert_allclose(ours.attributions, sampled, atol=0.05)  # Captum samples
    # GradientSHAP in expectation: both are Monte Carlo means of the same quantity;
    # with many draws they agree within a few standard errors of the draws
    rng = np.random.default_rng(3)
    baselines = rng.normal(size=(6, 5)).astype("float32")
    draws = 4000
    ours = tbx.attribute(model, table, "gradient_shap", target=1, baselines=baselines,
                         samples=draws, stdevs=0.1, seed=1).attributions
    torch.manual_seed(0)
    theirs = GradientShap(twin).attribute(inputs, baselines=torch.tensor(baselines,
                                                                          dtype=torch.float64),
                                          target=1, n_samples=draws, stdevs=0.1)
    # the draws' spread, from our own draws of the same size: |difference| <= 6 standard
    # errors of the difference of two independent means
    spread = np.std([tbx.attribute(model, table, "gradient_shap", target=1,
                                   baselines=baselines, samples=50, stdevs=0.1,
                                   seed=s).attributions for s in range(20)], axis=0)
    bound = 6 * np.sqrt(2) * spread * np.sqrt(50 / draws) + 1e-6
    assert (np.abs(ours - theirs.detach().numpy()) <= bound).all()


def test_tables_get_shaps_summary_plot(tmp_path, read_run):
    """`<tag>/summary`: a row per feature by mean |attribution| (largest
    first), each probe row's point on the side of zero its sign says."""
    keras.utils.set_random_seed(10)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.layers[-1].set_weights([np.array([[2.0], [-0.5]], "float32"), np.zeros(1, "float32")])
    x = np.abs(np.random.default_rng(10).normal(size=(16, 2))).astype("float32") + 0.5
    callback = tbx.Attributions(tmp_path, (x[:8], x[:8, 0]), methods=["shapley"], max_samples=8)
    model.compile("sgd", "mse")
    model.fit(x, x[:, 0], epochs=1, verbose=0, callbacks=[callback],
              batch_size=16)  # one tiny step: the signs stay
    weights = model.layers[-1].get_weights()[0][:, 0]
    assert weights[0] > 0 > weights[1]
    image = read_run(tmp_path).image("attributions/shapley/input/summary", 0).astype(int)
    coloured = (np.abs(image - image.mean(axis=2, keepdims=True)).sum(axis=2) > 60)
    zero = np.argmax((image[30:74] == 120).all(axis=2).sum(axis=0))  # the grey zero line
    rows = [np.nonzero(coloured[30 + 22 * r: 30 + 22 * (r + 1), :zero + 200])[1]
            for r in range(2)]
    assert rows[0].size and rows[1].size
    assert rows[0].mean() > zero > rows[1].mean()  # feature 0 first (|2 x| > |0.5 x|), positive
