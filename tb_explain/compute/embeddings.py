"""A layer's outputs as one vector per sample, for TensorBoard's Projector.

The layer is chosen by `layer.path` (or by default: the last layer before the
model's output head that gives one vector per sample) and captured the way
`compute.activations` captures layer outputs: its `call` is wrapped while the
forward pass is traced, so Sequential, Functional, nested and subclassed
models all work. Spatial and sequence outputs are averaged over every axis
but the batch and the channels (global average pooling).

The points are a fixed, seeded subset of the datasets, stratified by class,
chosen once: every logged epoch embeds the same samples.
"""

import contextlib
import functools

import keras
import numpy as np

from tb_explain import backend
from tb_explain._keras import swapped_call
from tb_explain.compute.activations import SKIPPED_CLASSES, all_layers


def _first(output):
    flat = keras.tree.flatten(output)
    return flat[0] if flat else None


@contextlib.contextmanager
def _capturing(layers, captured):
    """Context in which each `(path, layer)` records its first output in
    `captured[path]` (in call order: dicts keep insertion order)."""
    def wrap(path, original):
        @functools.wraps(original)
        def call(*args, **kwargs):
            output = original(*args, **kwargs)
            captured.setdefault(path, _first(output))
            return output
        return call

    with contextlib.ExitStack() as stack:
        for path, layer in layers:
            stack.enter_context(swapped_call(layer, wrap(path, layer.call)))
        yield


def is_vector_output(tensor):
    """Whether a layer output gives one vector per sample (after pooling):
    floating point, rank >= 2, at least one unit."""
    return (tensor is not None
            and keras.backend.is_float_dtype(tensor.dtype)
            and len(tensor.shape) >= 2 and (tensor.shape[-1] or 0) >= 1)


def layer_outputs(model, x):
    """Runs `model` eagerly on `x` once; returns `(calls, outputs)`: `calls`
    maps each layer path reached to its first output, in call order;
    `outputs` is the flat list of the model's outputs."""
    captured = {}
    with _capturing(all_layers(model), captured):
        outputs = model(x, training=False)
    return captured, keras.tree.flatten(outputs)


def default_layer(model, x):
    """The path of the layer to embed by default, or None.

    Walking back from the model's output: the layers whose output has the
    shape of a model output (the head: the classifier and its activation)
    are skipped, and so are pure reshapes and identities; the first layer
    left that gives a vector per sample (rank 2) is the one; without such a
    layer, the last spatial or sequence output (pooled).
    """
    calls, outputs = layer_outputs(model, x)
    kinds = {p: type(layer).__name__ for p, layer in all_layers(model)}
    head_shapes = {tuple(t.shape) for t in outputs}
    order = list(calls.items())
    i = len(order)
    while i > 0 and (tuple(order[i - 1][1].shape) in head_shapes
                     if order[i - 1][1] is not None else True):
        i -= 1
    body = [(p, t) for p, t in order[:i] if kinds.get(p) not in SKIPPED_CLASSES
            and is_vector_output(t)]
    flat = [p for p, t in body if len(t.shape) == 2]
    if flat:
        return flat[-1]
    return body[-1][0] if body else None


def candidates(model, x):
    """Paths of the layers that give a vector per sample (for error messages)."""
    calls, _ = layer_outputs(model, x)
    return [p for p, t in calls.items() if is_vector_output(t)]


def pool(tensor):
    """`[n, d]`: `tensor` averaged over every axis but the first and last."""
    tensor = keras.ops.cast(tensor, "float32")
    if len(tensor.shape) > 2:
        tensor = keras.ops.mean(tensor, axis=tuple(range(1, len(tensor.shape) - 1)))
    return tensor


def make_embedder(model, path, x):
    """Returns `fn(x) -> (vectors [n, d], outputs)` for layer `path`: one
    compiled forward pass (batch dimension free, traced once) that returns
    the layer's pooled output and the model's outputs."""
    layer = dict(all_layers(model))[path]
    captured = {}

    def forward(inputs):
        captured.clear()
        outputs = model(inputs, training=False)
        return pool(captured[path]), outputs

    compiled = backend.compile(forward, model.variables)

    def call(inputs):
        with _capturing([(path, layer)], captured):
            return compiled(inputs)
    return call


# -- the points ------------------------------------------------------------------

def allocate(sizes, total):
    """Splits `total` points over datasets of `sizes`, in proportion (largest
    remainders), at least one each while `total` allows, never more than a
    dataset holds."""
    sizes = np.asarray(sizes, np.int64)
    if sizes.sum() <= total:
        return sizes.tolist()
    share = sizes / sizes.sum() * total
    counts = np.minimum(np.maximum(np.floor(share).astype(np.int64), 1 if total >= len(sizes) else 0),
                        sizes)
    for i in np.argsort(-(share - np.floor(share)), kind="stable"):
        if counts.sum() >= total:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
    while counts.sum() > total:  # the minimum of one each overshot
        counts[int(np.argmax(counts))] -= 1
    return counts.tolist()


def stratified_subset(labels, count, rng, size=None):
    """Sorted indices of `count` samples: per class in proportion to its
    frequency (largest remainders, every class present gets one while
    `count` allows); `labels` None draws uniformly from `size` samples."""
    if labels is None:
        if count >= size:
            return np.arange(size)
        return np.sort(rng.choice(size, count, replace=False))
    labels = np.asarray(labels)
    if count >= len(labels):
        return np.arange(len(labels))
    classes, inverse = np.unique(labels, return_inverse=True)
    per_class = allocate(np.bincount(inverse), count)
    chosen = [rng.choice(np.flatnonzero(inverse == c), k, replace=False)
              for c, k in enumerate(per_class) if k]
    return np.sort(np.concatenate(chosen))


def gather(indices, batches):
    """`(x, y)` of the samples at `indices` (sorted) of a dataset, read batch by
    batch from `batches(data)` (numpy nests; y None when unlabeled)."""
    wanted = np.asarray(indices)
    xs, ys, start = [], [], 0
    for x, y, _ in batches:
        n = len(keras.tree.flatten(x)[0])
        local = wanted[(wanted >= start) & (wanted < start + n)] - start
        if len(local):
            xs.append(keras.tree.map_structure(lambda a, k=local: np.asarray(a)[k], x))
            ys.append(None if y is None else keras.tree.map_structure(
                lambda a, k=local: np.asarray(a)[k], y))
        start += n
        if start > wanted[-1]:
            break
    x = keras.tree.map_structure(lambda *a: np.concatenate(a), *xs)
    y = None if ys[0] is None else keras.tree.map_structure(lambda *a: np.concatenate(a), *ys)
    return x, y


def embedding_layers(model):
    """`[(path, layer)]` of the model's `Embedding` layers."""
    return [(p, layer) for p, layer in all_layers(model)
            if isinstance(layer, keras.layers.Embedding)]


def vocabulary_of(model):
    """The vocabulary of the model's first `TextVectorization` or
    `StringLookup` layer (its ids are what an `Embedding` reads), or None."""
    for _, layer in all_layers(model):
        if isinstance(layer, (keras.layers.TextVectorization, keras.layers.StringLookup)):
            return [str(t) for t in layer.get_vocabulary()]
    return None
