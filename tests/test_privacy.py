"""Privacy levels, tested as an attacker would: plant canaries, search every log.

A canary is put in the data: a high-entropy image pattern, a unique token, a
unique feature value. The whole suite runs at each level on an image, a
token and a table model; then every image in the event files is searched for
the pattern (normalized cross-correlation at several scales, so a canary
shrunk into a tile of a grid is found) and every text for the token and the
value. "off" must find them (the search has teeth); "inputs" must find no
text and no whole image that is the canary; "strict", not even a tile.
"""


import io

import keras
import numpy as np
import pytest
from PIL import Image
from scipy.signal import fftconvolve
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.util import tensor_util

import tb_explain as tbx

CANARY_TOKEN = "zqCANARYvx"
CANARY_VALUE = 739137.0
TEXT_FORMS = (CANARY_TOKEN, "7.391e+05", "739137", "7.39137e+05")
FOUND = 0.9  # normalized cross-correlation that counts as the canary


def _canary_image(side=32, blocks=8, seed=7):
    """A high-entropy pattern: random blocks (they survive shrinking into a tile)."""
    pattern = np.random.default_rng(seed).random((blocks, blocks))
    return np.kron(pattern, np.ones((side // blocks, side // blocks))).astype("float32")


def _logged(log_dir):
    """Every image (grayscale float) and text written to the run."""
    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    pictures, texts = [], []
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        for event in acc.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if plugin == "images":
                for png in value[2:]:
                    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64)
                    gray = rgb[..., :3] @ [0.299, 0.587, 0.114]
                    pictures.append((tag, gray))
            elif plugin == "text":
                texts.append((tag, " ".join(v.decode() for v in np.ravel(value))))
    return pictures, texts


def _resized(image, height, width):
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(
        (width, height), Image.BILINEAR), np.float64)


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def whole_image_match(gray, canary):
    """NCC of the whole image, resized to the canary's size, with the canary."""
    return _ncc(_resized(gray, *canary.shape), canary)


def tile_match(gray, canary):
    """Largest NCC of the canary, at several scales, anywhere in the image."""
    best = 0.0
    for side in (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256):
        if side > min(gray.shape):
            break
        template = _resized(canary, side, side)
        t = template - template.mean()
        ones = np.ones_like(t)
        numerator = fftconvolve(gray, t[::-1, ::-1], mode="valid")
        local_sum = fftconvolve(gray, ones, mode="valid")
        local_sq = fftconvolve(gray ** 2, ones, mode="valid")
        variance = np.maximum(local_sq - local_sum ** 2 / t.size, 0.0)
        valid = variance > 1e-6 * t.size * 255 ** 2
        if valid.any():
            ncc = numerator[valid] / np.sqrt(variance[valid] * (t * t).sum())
            best = max(best, float(ncc.max()))
    return best


def _image_run(log_dir, privacy):
    rng = np.random.default_rng(0)
    canary = _canary_image()
    x = rng.random((64, 32, 32, 1)).astype("float32") * 0.5
    x[0, ..., 0] = canary
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 1)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.MaxPooling2D(4), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax", name="out")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0, callbacks=tbx.explain(
        log_dir, data=(x[:8], y[:8]), datasets={"val": (x[:16], y[:16])}, max_samples=8,
        methods=["saliency", "smoothgrad", "gradcam", "occlusion"], samples=4, steps=8,
        privacy=privacy, images=True))
    return canary


def _token_run(log_dir, privacy):
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, 7, (40, 10)).astype("int32")
    tokens[0, 3] = 7  # the canary token, only here
    labels = rng.integers(0, 2, 40)
    vocabulary = {i: f"w{i}" for i in range(12)}
    vocabulary[7] = CANARY_TOKEN
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(12, 4),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    labels[0] = 1 - np.argmax(model.predict(tokens[:1], verbose=0))  # a mistake at "off"
    model.fit(tokens, labels, epochs=1, verbose=0, callbacks=tbx.explain(
        log_dir, data=(tokens[:8], labels[:8]), datasets={"val": (tokens, labels)},
        max_samples=8, methods=["saliency", "occlusion"], steps=8, vocabulary=vocabulary,
        privacy=privacy))


def _table_run(log_dir, privacy):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    x[0, 0], y[0] = CANARY_VALUE, 0.0  # predicted 1 with certainty: the top mistake
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    model.fit(x[1:], y[1:], epochs=5, verbose=0)  # learns x0 > 0
    model.fit(x, y, epochs=1, verbose=0, callbacks=tbx.explain(
        log_dir, data=(x, y), datasets={"val": (x, y)}, max_samples=8,
        methods=["saliency", "gradient_x_input", "occlusion"], steps=8, repeats=2,
        privacy=privacy))


def _texts_with_canary(texts):
    return [tag for tag, text in texts if any(form in text for form in TEXT_FORMS)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for privacy in ("off", "inputs", "strict"):
        root = tmp_path_factory.mktemp(privacy)
        canary = _image_run(root / "image", privacy)
        _token_run(root / "token", privacy)
        _table_run(root / "table", privacy)
        out[privacy] = {kind: _logged(root / kind) for kind in ("image", "token", "table")}
        out[privacy]["root"] = root
    out["canary"] = canary
    return out


def test_off_logs_the_canaries_so_the_search_has_teeth(runs):
    canary = runs["canary"]
    pictures, _ = runs["off"]["image"]
    whole = [tag for tag, gray in pictures if whole_image_match(gray, canary) >= FOUND]
    assert {"activations/input", "attributions/input/probe"} <= set(whole)
    tiles = [tag for tag, gray in pictures if tile_match(gray, canary) >= FOUND]
    assert "attributions/comparison/input" in tiles  # the input panel, in a grid
    assert _texts_with_canary(runs["off"]["token"][1])  # IG tokens, mistakes
    assert "outputs/val/mistakes" in _texts_with_canary(runs["off"]["table"][1])


def test_inputs_level_writes_no_raw_input(runs):
    canary = runs["canary"]
    for kind in ("image", "token", "table"):
        pictures, texts = runs["inputs"][kind]
        assert _texts_with_canary(texts) == [], kind
        matches = {tag: round(whole_image_match(gray, canary), 3) for tag, gray in pictures}
        assert all(v < FOUND for v in matches.values()), {t: v for t, v in matches.items()
                                                            if v >= FOUND}
        assert not any(t.endswith(("/probe", "/overlay", "/mistakes")) or t.startswith(
            "activations/input") for t, _ in pictures)
    # per-sample maps stay at "inputs": one image per probe sample
    counts = {}
    for tag, _ in runs["inputs"]["image"][0]:
        counts[tag] = counts.get(tag, 0) + 1
    steps = len(_steps(runs, "inputs", "image", "attributions/input/heatmap"))
    assert counts["attributions/input/heatmap"] == 8 * steps
    conv = [t for t in counts if t.startswith("activations/") and t.endswith("/conv")]
    assert conv and counts[conv[0]] == 8 * steps


def test_strict_level_writes_not_even_a_tile(runs):
    canary = runs["canary"]
    for kind in ("image", "token", "table"):
        pictures, texts = runs["strict"][kind]
        assert _texts_with_canary(texts) == [], kind
        matches = {tag: round(tile_match(gray, canary), 3) for tag, gray in pictures}
        assert all(v < FOUND for v in matches.values()), {t: v for t, v in matches.items()
                                                            if v >= FOUND}
    pictures, texts = runs["strict"]["image"]
    counts = {}
    for tag, _ in pictures:
        counts[tag] = counts.get(tag, 0) + 1
    # aggregates: one image per event where there was one per sample
    assert counts["attributions/input/heatmap"] == len(_steps(runs, "strict", "image",
                                                             "attributions/input/heatmap"))
    token_text = dict(runs["strict"]["token"][1])
    assert "mean attribution per position" in token_text["attributions/input/tokens"]


def _steps(runs, privacy, kind, tag):
    acc = ea.EventAccumulator(str(runs[privacy]["root"] / kind), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return [e.step for e in acc.Tensors(tag)]


def test_hparams_record_the_level(runs):
    for privacy in ("inputs", "strict"):
        assert tbx.load_run(runs[privacy]["root"] / "image").hparams["privacy"] == privacy
    assert "privacy" not in tbx.load_run(runs["off"]["root"] / "image").hparams


def test_log_inputs_false_is_the_inputs_level(tmp_path):
    x = np.zeros((4, 8, 8, 1), "float32")
    for cls in (tbx.ActivationImages, tbx.IntegratedGradients, tbx.Attributions):
        assert cls(tmp_path, data=x, log_inputs=False).privacy == "inputs"
    assert tbx.Predictions(tmp_path, (x, np.zeros(4)), log_inputs=False).privacy == "inputs"
    with pytest.raises(ValueError, match=r"`privacy` must be one of \['inputs', 'off', 'strict'\]"):
        tbx.explain(tmp_path, privacy="secret")
