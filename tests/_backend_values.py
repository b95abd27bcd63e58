"""Run as a script under a Keras backend: the values every callback's compute
computes on shared weights and a shared probe, saved to an .npz for
`test_backends.py` to compare across backends.

Usage: KERAS_BACKEND=jax python tests/_backend_values.py WEIGHTS.npz OUT.npz
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def model_and_data():
    """The shared model (conv, batch norm, dense) and probe: digits-like data."""
    rng = np.random.default_rng(0)
    x = rng.random((24, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, 24)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(8, activation="tanh", name="hidden"),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="shared")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, x, y


def compute(model, x, y):
    """`{name: array}` of everything compared."""
    import tb_explain as tbx
    from tb_explain import backend
    from tb_explain.compute import activations, gradients, predictions, stats, tiering

    out = {}
    weights = [w.value for w in model.weights]
    buckets, norms, nonfinite = stats.batched_statistics(weights)
    out["weights/buckets"], out["weights/norms"] = buckets, norms
    for eager in (True, False):
        fn, _ = gradients.make_gradient_statistics(model)
        with tiering.eager(eager):
            result = fn(*[backend.to_tensor(a) for a in (x[:8], y[:8])], None, stats.zero())
        suffix = "eager" if eager else "compiled"
        for key in ("loss", "norms", "buckets"):
            out[f"gradients/{key}/{suffix}"] = backend.to_numpy(result[key])
    layers = activations.default_selection(model)
    with tiering.eager(True):
        fn, paths = activations.make_layer_outputs(model, layers, backend.to_tensor(x[:4]))
        result = fn(backend.to_tensor(x[:4]), stats.zero())
    for path in paths:
        out[f"activations/{path}"] = backend.to_numpy(result["display"][path])
    out["activations/buckets"] = backend.to_numpy(result["buckets"])
    ig = tbx.integrated_gradients(model, x[:4], steps=16)
    out["ig"], out["ig/delta"] = ig.attributions, ig.delta
    for method in ("saliency", "gradient_x_input", "smoothgrad", "occlusion", "gradcam"):
        out[method] = tbx.attribute(model, x[:4], method).attributions
    step = predictions.evaluation_step(model)
    y_pred, loss = step(x, y, None)
    out["predictions/y_pred"], out["predictions/loss"] = (backend.to_numpy(y_pred),
                                                          backend.to_numpy(loss))
    flat = x.reshape(len(x), -1)
    tab = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(4, name="d")])
    tab.set_weights([np.linspace(-1, 1, 256, dtype="float32").reshape(64, 4),
                     np.zeros(4, "float32")])
    tab.compile(loss="sparse_categorical_crossentropy")
    imp = tbx.permutation_importance(tab, flat[:, :64], y, repeats=2, seed=0)
    out["importance"] = imp.importances_mean
    rules = tbx.extract_rules(tab, flat[:, :64], max_depth=2)
    out["rules/predict"] = rules.predict(flat[:, :64]).astype(np.float64)
    out["rules/fidelity"] = np.float64(rules.fidelity)
    sanity = tbx.randomization_test(model, x[:4], method="saliency")
    out["sanity/correlations"] = np.asarray(sanity.correlations)
    from tb_explain.compute import embeddings
    embed = embeddings.make_embedder(model, "shared/hidden", x[:2])
    vectors, _ = embed(backend.to_tensor(x))
    out["embeddings/hidden"] = backend.to_numpy(vectors)
    features = tbx.feature_visualization(model, "hidden", units=[0, 3], steps=8)
    out["features/images"], out["features/activations"] = features.images, features.activations
    return out


def main(weights_path, out_path):
    model, x, y = model_and_data()
    saved = np.load(weights_path)
    model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
    np.savez(out_path, **compute(model, x, y))


if __name__ == "__main__":
    main(*sys.argv[1:3])
