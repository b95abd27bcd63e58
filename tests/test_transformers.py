"""Transformers and language models: attention weights against the layers'
own `return_attention_scores=True`, entropy and rollout against numpy, causal
LMs (tied embeddings) through the whole suite, per-token metrics against
`model.predict`, the last-position logit's completeness.

keras_hub models are built from tiny configs (random weights, no download).
keras-hub is installed without its `tensorflow-text` requirement (see the
README); without keras-hub the keras_hub tests are skipped, except under
`CI=true`, where that fails.
"""

import os

import keras
import numpy as np
import pytest

import tb_explain as tbx
from tb_explain import tags

try:
    import keras_hub
except ImportError:  # pragma: no cover - CI installs it
    keras_hub = None

needs_hub = pytest.mark.skipif(keras_hub is None and os.environ.get("CI") != "true",
                               reason="keras-hub is not installed (pip install --no-deps "
                                      "keras-hub; see the README)")

VOCAB, LENGTH = 40, 10


class TransformerBlock(keras.layers.Layer):
    """The keras-io text-classification transformer block, passing the
    padding mask on to its attention."""

    def __init__(self, embed_dim, num_heads, ff_dim, **kwargs):
        super().__init__(**kwargs)
        self.att = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([keras.layers.Dense(ff_dim, activation="relu"),
                                     keras.layers.Dense(embed_dim)])
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        attended = self.att(inputs, inputs, query_mask=mask, value_mask=mask)
        out1 = self.norm1(inputs + attended)
        return self.norm2(out1 + self.ffn(out1))


def _keras_io_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32", name="ids")
    embedded = keras.layers.Embedding(VOCAB, 16, mask_zero=True, name="embed")(ids)
    first = TransformerBlock(16, 2, 32, name="block_0")
    second = TransformerBlock(16, 2, 32, name="block_1")
    hidden = second(first(embedded))
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    out = keras.layers.Dense(3, activation="softmax", name="head")(pooled)
    model = keras.Model(ids, out, name="keras_io_transformer")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, embedded, (first, second)


def _tokens(n=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, LENGTH)).astype("int32")
    ids[0, 6:] = 0  # padding (mask_zero)
    ids[1, 3:] = 0
    return ids


def _entropy(p, mask):
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1)), 0).sum(-1)  # (n, h, q)
    m = mask[:, None, :]
    return (terms * m).sum((0, 2)) / m.sum((0, 2))


def _rollout(stack):
    t = stack[0].shape[-1]
    result = np.broadcast_to(np.eye(t), (stack[0].shape[0], t, t))
    for a in stack:
        mixed = 0.5 * a.mean(1) + 0.5 * np.eye(t)
        mixed = mixed / mixed.sum(-1, keepdims=True)
        result = np.einsum("nij,njk->nik", mixed, result)
    return result


def test_attention_equals_the_layers_own_scores():
    model, embedded, (first, second) = _keras_io_model()
    ids = _tokens()
    result = tbx.attention(model, ids)
    assert result.layers == [first.att.path, second.att.path]
    # the functional twin: the same layers asked for their scores
    mask = keras.ops.not_equal(model.inputs[0], 0)
    hidden = first(embedded, mask=mask)
    twin = keras.Model(model.inputs, [
        first.att(embedded, embedded, query_mask=mask, value_mask=mask,
                  return_attention_scores=True)[1],
        second.att(hidden, hidden, query_mask=mask, value_mask=mask,
                   return_attention_scores=True)[1]])
    expected = twin.predict(ids, verbose=0)
    queries = ids != 0  # padded queries' rows: as Keras leaves them (backend-dependent)
    for path, want in zip(result.layers, expected):
        np.testing.assert_allclose(result.scores[path].transpose(0, 2, 1, 3)[queries],
                                   want.transpose(0, 2, 1, 3)[queries], rtol=1e-5, atol=1e-6)
    first_scores = result.scores[result.layers[0]]
    assert first_scores.shape == (6, 2, LENGTH, LENGTH)
    assert np.abs(first_scores[0, :, :6, 6:]).max() < 1e-6  # padded keys get no weight
    assert np.abs(first_scores[1, :, :3, 3:]).max() < 1e-6
    mask = ids != 0
    for path in result.layers:  # the Keras query mask of mask_zero
        np.testing.assert_array_equal(result.query_mask[path], mask)
        np.testing.assert_allclose(result.entropy[path],
                                   _entropy(result.scores[path].astype(np.float64), mask),
                                   rtol=1e-6)
    np.testing.assert_allclose(result.rollout, _rollout(
        [result.scores[p].astype(np.float64) for p in result.layers]), rtol=1e-6, atol=1e-9)
    only = tbx.attention(model, ids, layers=[second.att.path])
    assert only.layers == [second.att.path]
    with pytest.raises(ValueError, match="`layers`.*nope"):
        tbx.attention(model, ids, layers=["nope"])


def test_flash_attention_is_off_for_the_pass_only():
    model, _, (first, _) = _keras_io_model()
    first.att._flash_attention = True  # a user's setting: it returns no weights
    result = tbx.attention(model, _tokens())
    assert first.att._flash_attention is True
    assert result.scores[first.att.path].shape == (6, 2, LENGTH, LENGTH)


def test_attention_maps_log_the_functions_entropy(tmp_path, read_run):
    model, _, _ = _keras_io_model()
    ids = _tokens(32, seed=1)
    labels = ids[:, 0] % 3
    callback = tbx.AttentionMaps(tmp_path, (ids[:4], labels[:4]),
                                 vocabulary=[f"tok{i}" for i in range(VOCAB)])
    model.fit(ids, labels, epochs=2, verbose=0, callbacks=[callback])
    result = tbx.attention(model, ids[:4])  # the weights after the last epoch
    run = read_run(tmp_path)
    for path in result.layers:
        assert run.value(tags.ATTENTION_ENTROPY.format(path), 1) == pytest.approx(
            float(np.mean(result.entropy[path])), rel=1e-5)
        image = run.image(tags.ATTENTION.format(path), 1)
        assert image.shape[0] > 100 and image.std() > 10
    assert tags.ATTENTION_ROLLOUT in run.tags
    with pytest.raises(ValueError, match="no attention layer"):
        plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        plain.compile("adam", "mse")
        plain.fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0,
                  callbacks=[tbx.AttentionMaps(tmp_path / "plain", np.zeros((2, 4)))])


def test_explain_adds_attention_maps_only_where_there_is_attention(tmp_path, read_run):
    model, _, _ = _keras_io_model()
    ids = _tokens(16)
    labels = ids[:, 0] % 3
    callbacks = tbx.explain(tmp_path, data=(ids[:4], labels[:4]))
    assert any(isinstance(c, tbx.AttentionMaps) for c in callbacks)
    model.fit(ids, labels, epochs=1, verbose=0, callbacks=callbacks)
    first = model.get_layer("block_0").att
    assert tags.ATTENTION_ENTROPY.format(first.path) in read_run(tmp_path).tags
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    plain.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    plain.fit(x, np.arange(8) % 3, epochs=1, verbose=0,
              callbacks=tbx.explain(tmp_path / "plain", data=(x, np.arange(8) % 3)))
    run = read_run(tmp_path / "plain")
    assert not any(t.startswith("attention/") for t in run.tags)
    assert tags.SKIPPED not in run.tags  # nothing to say about a model without attention


# -- keras_hub ------------------------------------------------------------------------

def _gpt2():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=LENGTH)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"])
    return model


def _lm_data(n=24):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (n, LENGTH)).astype("int32")
    mask = np.ones_like(ids, bool)
    mask[: n // 3, 7:] = False
    mask[n // 3: n // 2, 4:] = False
    x = {"token_ids": ids, "padding_mask": mask}
    return x, np.roll(ids, -1, axis=1), mask.astype("float32")


@needs_hub
def test_gpt2_causal_lm_suite_and_token_metrics(tmp_path, read_run):
    model = _gpt2()
    x, y, w = _lm_data()
    probe = ({k: v[:4] for k, v in x.items()}, y[:4])
    model.fit(x, y, sample_weight=w, epochs=2, verbose=0, callbacks=tbx.explain(
        tmp_path, data=probe, datasets={"val": (x, y, w)}, methods=["saliency", "occlusion"]))
    run = read_run(tmp_path)
    logits = model.predict(x, verbose=0).astype(np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    token_ce = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]
    assert run.value("outputs/val/perplexity", 1) == pytest.approx(
        np.exp((w * token_ce).sum() / w.sum()), rel=1e-4)
    assert run.value("outputs/val/token_accuracy", 1) == pytest.approx(
        (w * (logits.argmax(-1) == y)).sum() / w.sum(), rel=1e-5)
    for tag in ("attributions/token_ids/tokens", "attributions/saliency/token_ids/tokens",
                "attributions/occlusion/token_ids/tokens",
                "attention/transformer_layer_1/self_attention/entropy"):
        assert tag in run.tags, tag
    # the causal mask and the padding: no weight on later or padded keys
    result = tbx.attention(model, {k: v[:8] for k, v in x.items()})
    scores = result.scores[result.layers[0]]
    assert np.abs(np.triu(scores[0, 0], 1)).max() < 1e-6
    assert np.abs(scores[0, :, :7, 7:]).max() < 1e-6
    assert result.layers == ["transformer_layer_0/self_attention",
                             "transformer_layer_1/self_attention"]


@needs_hub
def test_last_position_logit_and_completeness():
    model = _gpt2()
    x, _, _ = _lm_data(8)
    probe = {k: v[[0, 3, 7]] for k, v in x.items()}  # last unmasked: 6, 3, 9
    result = tbx.integrated_gradients(model, probe)
    np.testing.assert_array_equal(result.position, [6, 3, 9])
    logits = model.predict(probe, verbose=0)
    np.testing.assert_array_equal(result.target, logits[np.arange(3), [6, 3, 9]].argmax(-1))
    np.testing.assert_allclose(result.output, logits[np.arange(3), [6, 3, 9], result.target],
                               rtol=1e-4)
    assert result.relative_delta.max() < 0.05
    assert result.attributions["token_ids"].shape == (3, LENGTH)
    at = tbx.attribute(model, probe, "saliency", position=2, target=5)
    np.testing.assert_array_equal(at.position, [2, 2, 2])
    np.testing.assert_array_equal(at.target, [5, 5, 5])
    with pytest.raises(ValueError, match="`position`"):
        tbx.attribute(model, probe, "saliency", position="first")


@needs_hub
@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_keras_hub_models_through_the_suite(kind, tmp_path, read_run):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if kind == "bert":
        backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2,
                                                 num_heads=2, hidden_dim=16, intermediate_dim=32,
                                                 max_sequence_length=LENGTH)
        model = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
        ids = rng.integers(1, VOCAB, (16, LENGTH)).astype("int32")
        mask = np.ones_like(ids, bool)
        mask[:4, 6:] = False
        x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
        probe = {k: v[:4] for k, v in x.items()}
    else:
        backbone = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4,
                                                num_layers=2, num_heads=2, hidden_dim=16,
                                                mlp_dim=32)
        model = keras_hub.models.ViTImageClassifier(backbone, num_classes=3, preprocessor=None)
        x = rng.random((16, 16, 16, 3)).astype("float32")
        probe = x[:4]
    y = rng.integers(0, 3, 16)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0, callbacks=tbx.explain(
        tmp_path, data=(probe, y[:4]), datasets={"val": (x, y)},
        methods=["saliency", "occlusion"]))
    run = read_run(tmp_path)
    entropies = [t for t in run.tags if t.startswith("attention/") and t.endswith("/entropy")]
    assert len(entropies) == 2
    result = tbx.attention(model, probe)
    for path in result.layers:
        assert run.value(tags.ATTENTION_ENTROPY.format(path), 0) == pytest.approx(
            float(np.mean(result.entropy[path])), rel=1e-5)
        np.testing.assert_allclose(result.scores[path].sum(-1), 1.0, rtol=1e-5)
    assert "outputs/val/accuracy" in run.tags
    if kind == "vit":  # the encoder's blocks, one row each, not only the encoder
        for block in ("vit_encoder/transformer_block_1", "vit_encoder/transformer_block_2"):
            buckets = run.value(f"activations/{block}/histogram", 0)
            assert buckets[:, 2].sum() == 4 * 17 * 16  # samples x (16 patches + class) x hidden


# -- alerts and renderings ------------------------------------------------------------

def _timeseries_model():
    """keras-io's time-series transformer: a LayerNormalization over a feature
    axis of size 1 outputs only its bias, so the attention stack gets exactly
    zero gradient (a true alert)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 1), name="series")
    x = keras.layers.LayerNormalization(epsilon=1e-6)(inputs)
    x = keras.layers.MultiHeadAttention(key_dim=8, num_heads=2, name="attention")(x, x)
    res = x + inputs
    x = keras.layers.LayerNormalization(epsilon=1e-6)(res)
    x = keras.layers.Conv1D(4, 1, activation="relu")(x)
    x = keras.layers.Conv1D(1, 1)(x) + res
    x = keras.layers.GlobalAveragePooling1D(data_format="channels_first")(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_vanishing_rule_spares_fresh_attention_and_flags_a_dead_stack(tmp_path, read_run):
    import warnings

    model = _timeseries_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 1)).astype("float32")
    y = (x.mean(axis=(1, 2)) > 0).astype("int32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tbx.GradientNorms(tmp_path, (x[:8], y[:8]))])
    text = read_run(tmp_path).text("gradients/alerts")
    import re

    for part in ("query", "key"):  # zero up to float rounding
        assert re.search(rf"attention/{part} norm [0-9.e+-]+ < vanishing_threshold", text), text
    # a fresh keras-io text transformer: tiny query/key gradients, no alert on them
    model, _, (first, _) = _keras_io_model()
    ids = _tokens(16)
    model.fit(ids, ids[:, 0] % 3, epochs=1, verbose=0,
              callbacks=[tbx.GradientNorms(tmp_path / "fresh", (ids[:8], ids[:8, 0] % 3),
                                           vanishing_ratio=0.5)])
    run = read_run(tmp_path / "fresh")
    norms = {p: run.value(f"gradients/{p}/norm") for p in ("block_0/multi_head_attention/query",)
             if f"gradients/{p}/norm" in run.tags}
    alerts = run.text("gradients/alerts") if "gradients/alerts" in run.tags else ""
    assert "/query norm" not in alerts and "/key norm" not in alerts
    assert all(0 < v for v in norms.values())


def test_attributions_render_a_time_series_input(tmp_path, read_run):
    from tb_explain.render import images

    model = _timeseries_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 32, 1)).astype("float32")
    y = (x.mean(axis=(1, 2)) > 0).astype("int32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[tbx.Attributions(
        tmp_path, (x[:4], y[:4]), methods=["saliency", "occlusion"], window=4)])
    run = read_run(tmp_path)
    for method, options in (("saliency", {}), ("occlusion", {"window": 4})):
        expected = tbx.attribute(model, x[:4], method, **options).attributions
        image = run.image(f"attributions/{method}/input/signed", 0)
        np.testing.assert_array_equal(image, images.signed_table(
            expected.reshape(4, -1), 99.0, (16, 4)))
    assert run.image("attributions/comparison/input", 0).shape[0] > 0


def test_attention_view_routes(tmp_path):
    from tensorboard import context as tb_context

    from test_dashboard import _plugin

    model, _, (first, second) = _keras_io_model()
    ids = _tokens(16, seed=2)
    labels = ids[:, 0] % 3
    vocabulary = [f"tok{i}" for i in range(VOCAB)]
    model.fit(ids, labels, epochs=2, verbose=0, callbacks=[
        tbx.AttentionMaps(tmp_path / "run", (ids[:3], labels[:3]), vocabulary=vocabulary)])
    plugin, ctx = _plugin(tmp_path), tb_context.RequestContext()
    body = plugin.attention(ctx, "", {"run": "run"})
    assert [layer["path"] for layer in body["layers"]] == [first.att.path, second.att.path]
    assert body["tokens"][1] == [vocabulary[t] for t in ids[1]]
    result = tbx.attention(model, ids[:3])
    for layer in body["layers"]:
        assert layer["steps"] == [0, 1]
        assert layer["entropy"][-1][1] == pytest.approx(
            float(np.mean(result.entropy[layer["path"]])), rel=1e-5)
        got = plugin.attention_weights(ctx, "", {"run": "run", "layer": layer["path"],
                                                 "step": "1"})
        scores = result.scores[layer["path"]].astype(np.float64)
        expected = np.round(scores / scores.max(axis=(2, 3), keepdims=True) * 255)
        assert got["factor"] == 1
        assert np.abs(np.array(got["weights"]) - expected).max() <= 1  # float32 rounding
    with pytest.raises(ValueError, match="no step 7"):
        plugin.attention_weights(ctx, "", {"run": "run", "layer": first.att.path, "step": "7"})


@needs_hub
def test_tokens_read_through_the_models_own_tokenizer(tmp_path):
    vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "Ġa": 3, "ab": 4}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b"])
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer,
                                                             sequence_length=LENGTH)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=1, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=LENGTH)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    x, _, _ = _lm_data(4)
    ig = tbx.IntegratedGradients(tmp_path, x)
    ig.set_model(model)
    ig._vocabularies = {}
    maps = tbx.AttentionMaps(tmp_path, x)
    maps.set_model(model)
    for token_id, text in ((4, "ab"), (3, "Ġa"), (0, "<|endoftext|>")):
        assert ig._token(token_id, "token_ids") == text
        assert maps._lookup()(token_id) == text


def test_sequence_labelling_gets_per_token_metrics(tmp_path, read_run):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(3)
    ids = rng.integers(1, VOCAB, (24, LENGTH)).astype("int32")
    tags_ = (ids % 4).astype("int32")  # a class per token
    weights = np.ones(ids.shape, "float32")
    weights[:6, 5:] = 0  # padding
    model = keras.Sequential([keras.Input((LENGTH,), dtype="int32"),
                              keras.layers.Embedding(VOCAB, 8),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ids, tags_, sample_weight=weights, epochs=2, verbose=0, callbacks=[
        tbx.Predictions(tmp_path, {"val": (ids, tags_, weights)})])
    probs = model.predict(ids, verbose=0).astype(np.float64)
    ce = -np.log(np.take_along_axis(probs, tags_[..., None], -1)[..., 0])
    run = read_run(tmp_path)
    assert run.value("outputs/val/perplexity", 1) == pytest.approx(
        np.exp((weights * ce).sum() / weights.sum()), rel=1e-4)
    assert run.value("outputs/val/token_accuracy", 1) == pytest.approx(
        (weights * (probs.argmax(-1) == tags_)).sum() / weights.sum(), rel=1e-6)
    assert "token_accuracy" in run.text("outputs/diagnostics")
    with pytest.raises(ValueError, match=r"token ids in \[0, 4\)"):
        model.fit(ids, tags_, epochs=1, verbose=0,
                  callbacks=[tbx.Predictions(tmp_path / "bad", {"val": (ids, tags_ + 4)})])


def test_group_query_attention_and_a_causal_mask():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((LENGTH, 8))
    gqa = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2,
                                           name="gqa")
    out = keras.layers.GlobalAveragePooling1D()(gqa(x_in, x_in, use_causal_mask=True))
    model = keras.Model(x_in, keras.layers.Dense(2)(out))
    x = np.random.default_rng(0).normal(size=(3, LENGTH, 8)).astype("float32")
    tensor = keras.ops.convert_to_tensor(x)  # the layer's own scores, called eagerly
    own = keras.ops.convert_to_numpy(gqa(tensor, tensor, use_causal_mask=True,
                                         return_attention_scores=True)[1])
    result = tbx.attention(model, x)
    assert result.layers == [gqa.path]
    scores = result.scores[gqa.path]
    np.testing.assert_allclose(scores, own, rtol=1e-5, atol=1e-6)
    assert scores.shape == (3, 4, LENGTH, LENGTH)
    assert np.abs(np.triu(scores[:, :, :, :], 1)).max() < 1e-6  # causal
    assert gqa._return_attention_scores is False  # the layer's state as it was


@needs_hub
def test_bert_attention_equals_its_layers_own_scores():
    """keras_hub's BERT: the first encoder layer's weights equal what its
    attention layer returns with `return_attention_scores=True`, called on
    that layer's input (the embeddings) with the padding as attention mask."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=LENGTH)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (4, LENGTH)).astype("int32")
    mask = np.ones_like(ids, bool)
    mask[:2, 6:] = False
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    result = tbx.attention(backbone, x)
    layer = backbone.get_layer("transformer_layer_0")._self_attention_layer
    assert result.layers[0] == layer.path
    embedded = keras.Model(backbone.inputs,
                           backbone.get_layer("embeddings_dropout").output).predict(x, verbose=0)
    tensor = keras.ops.convert_to_tensor(embedded)
    keys = keras.ops.convert_to_tensor(np.broadcast_to(mask[:, None, :], (4, LENGTH, LENGTH)))
    _, own = layer(tensor, tensor, attention_mask=keys, return_attention_scores=True)
    np.testing.assert_allclose(result.scores[layer.path], keras.ops.convert_to_numpy(own),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(result.scores[layer.path][:2, :, :, 6:]).max() < 1e-6  # padded keys


def _mixed_heads_model(cross=False):
    """A MultiHeadAttention block (4 heads) then a GroupQueryAttention block
    (2 query heads): one sequence length, different head counts; with
    `cross`, the second block attends to a second input instead."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5, 8), name="tokens")
    hidden = tokens + keras.layers.MultiHeadAttention(4, 2, name="mha")(tokens, tokens)
    context = keras.Input((5, 8), name="context") if cross else None
    source = context if cross else hidden
    hidden = hidden + keras.layers.GroupQueryAttention(4, 2, 1, name="gqa")(hidden, source)
    inputs = [tokens, context] if cross else tokens
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def test_rollout_over_mixed_head_counts():
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype("float32")
    result = tbx.attention(_mixed_heads_model(), x)
    heads = [result.scores[p].shape[1] for p in result.layers]
    assert heads == [4, 2]
    assert result.rollout is not None
    np.testing.assert_allclose(result.rollout, _rollout(
        [result.scores[p].astype(np.float64) for p in result.layers]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result.rollout.sum(-1), 1.0, rtol=1e-6)
    # cross-attention of the same length: no rollout
    crossed = tbx.attention(_mixed_heads_model(cross=True), [x, x[::-1].copy()])
    assert crossed.rollout is None


def _masked_tagger():
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32")
    hidden = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(ids)
    hidden = keras.layers.LSTM(8, return_sequences=True)(hidden)
    return keras.Model(ids, keras.layers.Dense(4, activation="softmax")(hidden))


def _masked_lm():
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32")
    hidden = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(ids)
    hidden = hidden + keras.layers.MultiHeadAttention(2, 4)(hidden, hidden,
                                                            use_causal_mask=True)
    return keras.Model(ids, keras.layers.Dense(VOCAB)(hidden))


@pytest.mark.parametrize("build", [_masked_tagger, _masked_lm], ids=["tagger", "lm"])
def test_masked_sequences_are_explained_at_their_last_token(build):
    model = build()
    ids = _tokens()
    ids[2, 1:] = 0  # one real token
    last = np.array([np.flatnonzero(row).max() for row in ids])
    assert (last < LENGTH - 1).any()
    probs = keras.ops.convert_to_numpy(model(ids))
    for method in ("integrated_gradients", "saliency", "occlusion"):
        result = tbx.attribute(model, ids, method)
        np.testing.assert_array_equal(result.position, last, err_msg=method)
        at_last = probs[np.arange(len(ids)), last]
        np.testing.assert_array_equal(result.target, at_last.argmax(-1), err_msg=method)
        np.testing.assert_allclose(result.output, at_last.max(-1), rtol=1e-5, atol=1e-6)


def test_long_sequences_are_block_averaged_and_drawn_in_the_palette(tmp_path, read_run):
    """A 130-token sequence (block side 3, a short last block): the logged
    uint8 weights equal numpy's block averages of the layer's own weights,
    each map over its maximum, and the heads image (an indexed PNG) shows
    each cell as a 2 x 2 square of that level's viridis colour."""
    from tb_explain.render import colormap

    keras.utils.set_random_seed(0)
    length, heads = 130, 2
    ids = keras.Input((length,), dtype="int32")
    hidden = keras.layers.Embedding(VOCAB, 8)(ids)
    att = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=4, name="att")
    pooled = keras.layers.GlobalAveragePooling1D()(att(hidden, hidden))
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(pooled))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(3).integers(1, VOCAB, (2, length)).astype("int32")
    callback = tbx.AttentionMaps(tmp_path, x, max_samples=2)
    model.fit(x, np.array([0, 1]), epochs=1, verbose=0, callbacks=[callback])
    weights = tbx.attention(model, x).scores[att.path]  # (2, heads, 130, 130), after the fit
    padded = np.zeros((2, heads, 132, 132))
    padded[:, :, :length, :length] = weights
    blocks = padded.reshape(2, heads, 44, 3, 44, 3).mean(axis=(3, 5))
    expected = np.round(blocks / blocks.max(axis=(2, 3), keepdims=True) * 255)
    run = read_run(tmp_path)
    logged = run.value(tags.ATTENTION_WEIGHTS.format(att.path), 0)
    assert logged.shape == (2, heads, 44, 44) and logged.dtype == np.uint8
    assert np.abs(logged.astype(int) - expected).max() <= 1  # float rounding at .5
    assert np.mean(logged == expected) > 0.99
    image = run.image(tags.ATTENTION.format(att.path), 0, index=1)  # sample 1
    top, gap = 10 + 6, 8  # the title's row, the margin
    for head in range(heads):
        x0 = gap + head * (44 * 2 + gap)
        panel = image[top:top + 88, x0:x0 + 88]
        shown = np.repeat(np.repeat(colormap.PALETTE[colormap.LEVEL_INDEX[logged[1, head]]],
                                    2, axis=0), 2, axis=1)
        np.testing.assert_array_equal(panel, shown)
    # every viridis level is within one 256-level step of the 256-entry table's colour
    levels = np.arange(256)
    step = np.abs(np.diff(colormap.LUTS["viridis"].astype(int), axis=0)).max()
    assert np.abs(colormap.PALETTE[colormap.LEVEL_INDEX[levels]].astype(int)
                  - colormap.LUTS["viridis"][levels]).max() <= step
