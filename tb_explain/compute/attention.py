"""Attention weights of every attention layer, their entropy and rollout.

Every `keras.layers.MultiHeadAttention` (and subclass: keras_hub's
`CachedMultiHeadAttention`...) and `keras.layers.GroupQueryAttention`
anywhere in a model (nested models, custom layers, keras_hub backbones)
computes its weights in `_compute_attention`. The probe pass swaps that
method for one that asks for the weights and records them, with flash
attention off for the pass (it returns no weights) and the layer's own
setting restored after; the layer's `call` is swapped too, to record the
Keras query mask it receives.
"""

import contextlib
import dataclasses
import functools

import keras
import numpy as np

from tb_explain import backend
from tb_explain._keras import keras_mask, layer_path, swapped_attr
from tb_explain.compute.attribution import _cores

ATTENTION_CLASSES = (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention)


def attention_layers(model):
    """Every attention layer in `model` (any depth), unordered: `[(path, layer)]`."""
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ATTENTION_CLASSES) and id(layer) not in found:
            found[id(layer)] = (layer_path(layer), layer)
    return list(found.values())


def query_key_paths(model):
    """Paths of the query and key projections of every attention layer: their
    gradients scale with how far the attention is from uniform, so they are
    small in a fresh transformer by design."""
    paths = set()
    for _, layer in attention_layers(model):
        for name in ("_query_dense", "_key_dense"):
            sub = getattr(layer, name, None)
            if sub is not None:
                paths.add(layer_path(sub))
    return paths


@contextlib.contextmanager
def recording(layers, scores, masks, order, crossed=None):
    """Context in which each attention layer of `layers` records the weights
    it applies (`scores[path]`, first call), the Keras query mask it gets
    (`masks[path]`), the order of first calls (`order`) and, in `crossed`
    (a set), the paths called with a value or key that is not the query
    (cross-attention)."""
    with contextlib.ExitStack() as stack:
        for path, layer in layers:
            compute, call = layer._compute_attention, layer.call

            def weighted(*args, _path=path, _layer=layer, _compute=compute, **kwargs):
                grouped = isinstance(_layer, keras.layers.GroupQueryAttention)
                flash = _layer._flash_attention
                asked = getattr(_layer, "_return_attention_scores", None)
                _layer._flash_attention = False
                if grouped:
                    _layer._return_attention_scores = True
                elif len(args) > 5:
                    args = args[:5] + (True,) + args[6:]
                else:
                    kwargs["return_attention_scores"] = True
                try:
                    out, weights = _compute(*args, **kwargs)
                finally:
                    _layer._flash_attention = flash
                    if grouped:
                        _layer._return_attention_scores = asked
                if _path not in scores:
                    scores[_path] = weights
                    order.append(_path)
                return out, weights

            @functools.wraps(call)
            def called(*args, _path=path, _call=call, **kwargs):
                if _path not in masks:  # the query's Keras mask, else the one passed
                    query = args[0] if args else kwargs.get("query")
                    value = args[1] if len(args) > 1 else kwargs.get("value")
                    key = args[2] if len(args) > 2 else kwargs.get("key")
                    if crossed is not None and (value is not query
                                                or key not in (None, query)):
                        crossed.add(_path)
                    masks[_path] = None if query is None else keras_mask(query)
                    if masks[_path] is None:
                        masks[_path] = kwargs.get("query_mask")
                return _call(*args, **kwargs)

            stack.enter_context(swapped_attr(layer, "_compute_attention", weighted))
            stack.enter_context(swapped_attr(layer, "call", called))
        yield


def make_attention_pass(model, layers, side=None):
    """`fn(x) -> (paths in call order, {path: scores}, {path: query mask})`,
    compiled once per model and layer set (`backend.compile`). With `side`,
    each layer's scores are reduced inside the compiled pass
    (`summarize_scores`): `{path: {"maps", "quantized", "terms", "mean"}}`
    instead of the full weights."""
    key = ("attention", tuple(p for p, _ in layers), side)
    per_model = _cores.cache(model)
    fn = per_model.get(key)
    if fn is not None:
        return fn
    order_seen, crossed = [], set()

    def probe(x):
        scores, masks, order = {}, {}, []
        with recording(layers, scores, masks, order, crossed):
            model(x, training=False)
        order_seen[:] = order
        weights = {p: keras.ops.cast(scores[p], "float32") for p in order}
        if side is not None:
            weights = {p: summarize_scores(w, side) for p, w in weights.items()}
        return weights, {p: masks[p] for p in order if masks.get(p) is not None}

    compiled = backend.compile(probe, model.variables)

    def run(x):
        scores, masks = compiled(x)
        return list(order_seen) or list(scores), scores, masks

    run.crossed = crossed  # cross-attention layers, known once traced
    per_model[key] = run
    return run


#: The smallest normal float32: `p ln max(p, _TINY)` is 0 at p = 0 and p ln p above it.
_TINY = float(np.finfo(np.float32).tiny)


def _pooling(length, factor):
    """`(ceil(length / factor), length)`: 1 / factor where a position falls
    in a block, so `P @ x` averages blocks of `factor` (a short last block
    padded with zeros)."""
    rows = -(-length // factor)
    matrix = np.zeros((rows, length), np.float32)
    matrix[np.arange(length) // factor, np.arange(length)] = 1.0 / factor
    return keras.ops.convert_to_tensor(matrix)


def summarize_scores(weights, side):
    """What `AttentionMaps` writes of `(n, heads, Tq, Tk)` weights, reduced
    inside the compiled pass (a tenth of the weights leaves it):

    - `maps`: the weights averaged over `factor x factor` blocks so that
      neither side exceeds `side` (padding counts as 0; as
      `render.charts.block_average`);
    - `quantized`: `maps` as uint8, each map scaled by its maximum;
    - `terms`: `(n, heads, Tq)` -sum_k p ln p per query (for `entropy`);
    - `mean`: `(n, Tq, Tk)` the mean over heads (for `rollout`).
    """
    heads, t_query, t_key = (int(d) for d in weights.shape[1:])
    factor = -(-max(t_query, t_key) // side)
    weights = keras.ops.cast(weights, "float32")  # float16 has no `_TINY`
    maps = weights
    if factor > 1:  # pooling matrices: two matmuls cost a third of a 6-d reshape's sums eagerly
        rows = keras.ops.matmul(_pooling(t_query, factor), weights)
        maps = keras.ops.matmul(rows, keras.ops.transpose(_pooling(t_key, factor)))
    peak = keras.ops.max(maps, axis=(2, 3), keepdims=True)
    unit = keras.ops.where(peak > 0, maps / keras.ops.where(peak > 0, peak, 1.0), 0.0)
    quantized = keras.ops.cast(keras.ops.round(unit * 255.0), "uint8")
    # p ln p with 0 ln 0 = 0: p = 0 meets ln of the smallest normal float32 (finite)
    terms = -keras.ops.sum(weights * keras.ops.log(keras.ops.maximum(weights, _TINY)), axis=-1)
    return {"maps": maps, "quantized": quantized, "terms": terms,
            "mean": keras.ops.mean(weights, axis=1)}


def entropy_of_terms(per_query, query_mask=None):
    """`(heads,)` mean of `(n, heads, Tq)` per-query entropies over the
    unmasked (sample, query) pairs (`query_mask`: `(n, Tq)` bool)."""
    per_query = np.asarray(per_query, np.float64)
    if query_mask is None:
        return per_query.mean(axis=(0, 2))
    mask = np.asarray(query_mask, bool)[:, np.newaxis, :]
    mask = np.broadcast_to(mask, per_query.shape)
    count = mask.sum(axis=(0, 2))
    return np.where(count > 0, (per_query * mask).sum(axis=(0, 2)) / np.maximum(count, 1),
                    np.nan)


def entropy(scores, query_mask=None):
    """`(heads,)` mean over unmasked (sample, query) pairs of -sum_k p ln p.

    Args:
        scores: `(n, heads, Tq, Tk)` attention weights.
        query_mask: Optional `(n, Tq)` bool: queries counted.
    """
    p = np.asarray(scores)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float32)
    terms = p * np.log(np.maximum(p, np.finfo(p.dtype).tiny))  # 0 where p is 0
    return entropy_of_terms(-terms.sum(axis=-1, dtype=np.float64), query_mask)


def rollout(stack):
    """Attention rollout (Abnar & Zuidema 2020) of `stack`, a list of
    `(n, heads, T, T)` self-attention weights from the first layer to the
    last: A~ = 0.5 mean_heads(A) + 0.5 I, rows renormalized, then
    A~_L ... A~_1. Heads are averaged first, so layers of different head
    counts (a MultiHeadAttention block then a GroupQueryAttention one)
    stack. Returns `(n, T, T)`, or None when the layers are not of one
    length or not square (cross-attention)."""
    return rollout_of_means([np.asarray(a, np.float64).mean(axis=1) for a in stack])


def rollout_of_means(means):
    """`rollout` of the layers' head-averaged weights `(n, T, T)`."""
    if not means:
        return None
    shapes = {np.shape(a) for a in means}
    if len(shapes) != 1:
        return None
    n, t_query, t_key = next(iter(shapes))
    if t_query != t_key:
        return None
    result = np.broadcast_to(np.eye(t_query), (n, t_query, t_query)).copy()
    for mean in means:
        mixed = 0.5 * np.asarray(mean, np.float64) + 0.5 * np.eye(t_query)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        result = mixed @ result
    return result


@dataclasses.dataclass
class Attention:
    """Attention weights of a model on some inputs (`tbx.attention`).

    Attributes:
        layers: Paths of the attention layers, in the order they run.
        scores: `{path: (n, heads, T_query, T_key)}` the weights each layer
            applied (masks applied; a fully masked row as Keras leaves it).
        query_mask: `{path: (n, T_query) bool}` the queries counted in
            `entropy`: the layer's Keras query mask, else a `padding_mask`
            input of the same length, else all.
        entropy: `{path: (heads,)}` -sum p ln p, one mean over the unmasked
            (sample, query) pairs.
        rollout: `(n, T, T)` attention rollout over `layers` (whatever
            their head counts), or None when they are not all
            self-attention of one length.
    """

    layers: list
    scores: dict
    query_mask: dict
    entropy: dict
    rollout: object


def _padding_mask(inputs, n, length):
    mask = inputs.get("padding_mask") if isinstance(inputs, dict) else None
    if mask is None:
        return None
    mask = np.asarray(backend.to_numpy(mask)).astype(bool)
    return mask if mask.shape == (n, length) else None


def select(model, layers=None):
    """`[(path, layer)]`: every attention layer, or exactly those `layers`
    names (paths or names); an unknown one is a `ValueError`."""
    found = attention_layers(model)
    if layers is None:
        return found
    if isinstance(layers, str) or not all(isinstance(p, str) for p in layers):
        raise TypeError(f"`layers` must be a list of layer paths or names, got {layers!r}.")
    by_name = {}
    for path, layer in found:
        by_name[path] = (path, layer)
        by_name.setdefault(layer.name, (path, layer))
    unknown = [p for p in layers if p not in by_name]
    if unknown:
        raise ValueError(f"`layers`: {unknown} name no attention layer of model {model.name!r}; "
                         f"its attention layers are {[p for p, _ in found]}.")
    return [by_name[p] for p in dict.fromkeys(layers)]


def attention(model, inputs, *, layers=None):
    """The attention weights every attention layer of `model` applies on `inputs`.

    Finds every `keras.layers.MultiHeadAttention` (and subclasses, such as
    keras_hub's `CachedMultiHeadAttention`) and
    `keras.layers.GroupQueryAttention`, anywhere in the model (nested
    models, custom layers, keras_hub backbones), runs the model once
    (`training=False`, compiled) and records the weights each applies. Flash
    attention returns no weights: it is off for this pass only, and each
    layer's setting is left as it was.

    Args:
        model: A Keras model (any kind).
        inputs: The model's inputs (an array, or a list / dict of arrays,
            such as keras_hub's `{"token_ids", "padding_mask"}`).
        layers: Optional paths or names of the layers to keep (exactly
            those); default every attention layer.

    Returns:
        An `Attention`: `.layers` (in the order they run), `.scores`,
        `.entropy`, `.rollout`, `.query_mask`.

    Raises:
        ValueError: if the model has no attention layer, or `layers` names
            one it does not have.

    Example:

    ```python
    att = tbx.attention(model, {"token_ids": ids, "padding_mask": mask})
    first = att.scores[att.layers[0]]          # (n, heads, T, T)
    print({p: e.round(3) for p, e in att.entropy.items()})
    ```
    """
    chosen = select(model, layers)
    attention_pass, x, order, scores, masks, n = _run(model, inputs, chosen)
    out_scores, out_masks, out_entropy = {}, {}, {}
    for path in order:
        s = np.asarray(backend.to_numpy(scores[path]), np.float32)
        out_scores[path] = s
        out_masks[path] = _query_mask(masks, path, x, n, s.shape[2])
        out_entropy[path] = entropy(s, out_masks[path])
    return Attention(layers=list(order), scores=out_scores, query_mask=out_masks,
                     entropy=out_entropy,
                     rollout=None if attention_pass.crossed & set(order)
                     else rollout([out_scores[p] for p in order]))


def _run(model, inputs, chosen, side=None):
    if not chosen:
        raise ValueError(f"Model {model.name!r} has no attention layer (MultiHeadAttention, "
                         f"GroupQueryAttention or a subclass).")
    x = keras.tree.map_structure(
        lambda a: backend.to_tensor(np.asarray(backend.to_numpy(a))), inputs)
    attention_pass = make_attention_pass(model, chosen, side)
    order, scores, masks = attention_pass(x)
    return attention_pass, x, order, scores, masks, len(keras.tree.flatten(inputs)[0])


def _query_mask(masks, path, x, n, length):
    """The queries a layer's entropy counts: its Keras query mask, else a
    `padding_mask` input of the same length, else all."""
    mask = masks.get(path)
    if mask is not None:
        mask = np.asarray(backend.to_numpy(mask)).astype(bool)
        if mask.shape != (n, length):
            mask = None
    if mask is None:
        mask = _padding_mask(x, n, length)
    return np.ones((n, length), bool) if mask is None else mask


@dataclasses.dataclass
class AttentionSummary:
    """What `AttentionMaps` logs, reduced inside the compiled pass (`summary`).

    Attributes:
        layers: Paths of the attention layers, in the order they run.
        maps: `{path: (n, heads, Tq', Tk')}` float32 block-averaged weights.
        quantized: `{path: (n, heads, Tq', Tk')}` uint8, each map over its maximum.
        factor: `{path: int}` the block side (1: the weights as they are).
        lengths: `{path: (Tq, Tk)}` the full lengths.
        entropy: `{path: (heads,)}` as `Attention.entropy`.
        rollout: as `Attention.rollout`.
    """

    layers: list
    maps: dict
    quantized: dict
    factor: dict
    lengths: dict
    entropy: dict
    rollout: object


def summary(model, inputs, *, layers=None, side=64):
    """`AttentionSummary` of the attention layers on `inputs`: the weights
    block-averaged to at most `side` per map, quantized, their entropies and
    rollout, all reduced inside one compiled pass (`summarize_scores`).

    Example:

    ```python
    reduced = attention.summary(model, ids, side=64)
    reduced.quantized[reduced.layers[0]].shape   # (n, heads, <= 64, <= 64)
    ```
    """
    chosen = select(model, layers)
    attention_pass, x, order, reduced, masks, n = _run(model, inputs, chosen, side)
    out = AttentionSummary(layers=list(order), maps={}, quantized={}, factor={}, lengths={},
                           entropy={}, rollout=None)
    means = []
    for path in order:
        parts = {k: np.asarray(backend.to_numpy(v)) for k, v in reduced[path].items()}
        t_query, t_key = parts["mean"].shape[1:]
        out.maps[path] = parts["maps"].astype(np.float32)
        out.quantized[path] = parts["quantized"].astype(np.uint8)
        out.factor[path] = max(1, -(-max(t_query, t_key) // side))
        out.lengths[path] = (int(t_query), int(t_key))
        out.entropy[path] = entropy_of_terms(parts["terms"],
                                             _query_mask(masks, path, x, n, t_query))
        means.append(parts["mean"])
    if not attention_pass.crossed & set(order):
        out.rollout = rollout_of_means(means)
    return out
