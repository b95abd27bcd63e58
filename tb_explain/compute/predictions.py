"""Model outputs on whole datasets: task detection and one streamed pass.

`evaluate` reads a dataset in batches through one compiled function that
returns the model's outputs and its compiled loss, and keeps per sample only
what the metrics and curves need: the scores of each explained output, the
labels, and the inputs of the current most-confident mistakes.
"""

import contextlib
import functools
import heapq

import keras
import numpy as np

from tb_explain import backend, datasets
from tb_explain._keras import layer_path, swapped_call, walk_layers
from tb_explain.compute.attribution import _cores, _outputs

TASKS = ("auto", "multiclass", "binary", "multilabel", "regression", "sequence")


# -- datasets --------------------------------------------------------------------

def split(element):
    """`(x, y, sample_weight)` of a dataset element or a tuple given by the user."""
    if isinstance(element, tuple):
        return datasets.split(element)
    return element, None, None


def batches(data, batch_size):
    """Yields `(x, y, sample_weight)` batches (numpy or tensors) of `data`:
    a tuple of arrays (sliced here) or a stream of batches
    (`tb_explain.datasets`: read in its own batches)."""
    if datasets.is_stream(data):
        yield from datasets.batches(data)
        return
    x, y, weights = split(data)
    n = len(keras.tree.flatten(x)[0])
    for start in range(0, n, batch_size):
        cut = lambda a, s=start: a[s:s + batch_size]  # noqa: E731
        yield (keras.tree.map_structure(cut, x),
               None if y is None else keras.tree.map_structure(cut, y),
               None if weights is None else cut(weights))


def part_for(structure, key):
    """The part of a (possibly dict/list) structure that belongs to output `key`."""
    if isinstance(structure, dict):
        return structure[key] if key in structure else None
    if isinstance(structure, (list, tuple)) and isinstance(key, int):
        return structure[key]
    return structure


def first_batch(data, batch_size):
    """The first `(x, y, sample_weight)` batch of `data`."""
    for batch in batches(data, batch_size):
        return batch
    raise ValueError("is empty")


def to_numpy(value):
    return None if value is None else keras.tree.map_structure(backend.to_numpy, value)


# -- outputs and tasks --------------------------------------------------------------

def output_layer(model, key):
    """The layer that produces output `key` of a Functional model, or None."""
    static = _outputs.static_outputs(model)
    if static is None:
        return None
    tensor = static[key] if key is not None else static
    tensor = keras.tree.flatten(tensor)[0]
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None) if history is not None else None


def output_activation(model, key):
    """`"softmax"`, `"sigmoid"`, `"linear"` or None (unknown) for output `key`."""
    layer = output_layer(model, key)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    name = getattr(activation, "__name__", str(activation))
    return {"softmax": "softmax", "sigmoid": "sigmoid", "linear": "linear"}.get(name, "other")


def _loss_of(model, key):
    """The loss compiled for output `key` (a name or a loss object), or None."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        return loss.get(key)
    if isinstance(loss, (list, tuple)):
        return loss[key] if isinstance(key, int) and key < len(loss) else None
    return loss


def loss_from_logits(model, key):
    """Whether the compiled loss of output `key` takes logits, or None if unknown."""
    loss = _loss_of(model, key)
    if isinstance(loss, str):
        return False
    return getattr(loss, "from_logits", None)


def loss_name(model, key):
    """The compiled loss of output `key` as a lower-case name without underscores."""
    loss = _loss_of(model, key)
    name = loss if isinstance(loss, str) else type(loss).__name__ if loss is not None else ""
    return name.lower().replace("_", "")


def detect_task(units, activation, labels, lossname=""):
    """The task of one output from its units, activation and a batch of labels."""
    labels = np.asarray(labels)
    flat = labels.reshape(len(labels), -1)
    binary_values = labels.size > 0 and np.isin(labels, (0, 1)).all()
    if units == 1:
        if activation == "sigmoid" or "binary" in lossname or "hinge" in lossname:
            return "binary"
        return "regression"
    if activation == "sigmoid" or ("binary" in lossname and flat.shape[1] == units):
        return "multilabel"
    if activation == "softmax" or "categorical" in lossname:
        return "multiclass"
    integral = labels.dtype.kind in "iub" or (labels.size and np.all(labels == np.round(labels)))
    if flat.shape[1] == 1 and integral:
        return "multiclass"
    if flat.shape[1] == units and binary_values and np.all(flat.sum(axis=1) == 1):
        return "multiclass"
    return "regression"


def task_of(model, key, units, labels, task="auto"):
    """`(task, logits)` of output `key`: the task (`task`, or detected from the
    output layer, its loss and a batch of `labels`) and whether the output is
    logits (from the loss's `from_logits`, else a linear classifier output)."""
    activation = output_activation(model, key)
    if task == "auto":
        task = detect_task(units, activation, labels, loss_name(model, key))
    logits = loss_from_logits(model, key)
    if logits is None:
        logits = activation in ("linear", None) and task != "regression"
    return task, bool(logits)


def decisions(task, units, probs, labels):
    """`(predicted, true, confidence)` per sample (per label for multilabel)
    of a classifier's probabilities: the argmax (multiclass), or >= 0.5."""
    truth = class_labels(task, labels, units)
    if task == "multiclass":
        return np.argmax(probs, axis=1), truth, probs.max(axis=1)
    p = probs[:, 0] if task == "binary" else probs
    return (p >= 0.5).astype(np.int64), truth.astype(np.int64), np.maximum(p, 1 - p)


def probabilities(task, scores, logits):
    """Scores as probabilities: logits through softmax (multiclass) or sigmoid."""
    if not logits or task == "regression":
        return scores
    if task == "multiclass":
        shifted = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-scores))


def class_labels(task, labels, units):
    """Integer class ids (multiclass), 0/1 matrix (multilabel) or 0/1 vector (binary)."""
    labels = np.asarray(labels)
    if task == "multiclass":
        flat = labels.reshape(len(labels), -1)
        if flat.shape[1] == units and units > 1:
            return np.argmax(flat, axis=1)
        return flat[:, 0].astype(np.int64)
    if task == "binary":
        return labels.reshape(len(labels), -1)[:, 0]
    return labels.reshape(len(labels), -1)


# -- sequence outputs (n, T, V) ----------------------------------------------------------

def token_weights(x, weights, key, given):
    """`(n, T)` float64 weights of each position: the sample weights when
    `given` (broadcast from `(n,)`), else a `padding_mask` input of the same
    shape as the labels, else None (every position counts)."""
    if given and weights is not None:
        w = to_numpy(part_for(weights, key))
        return None if w is None else np.asarray(w, np.float64)
    if isinstance(x, dict) and "padding_mask" in x:
        return np.asarray(to_numpy(x["padding_mask"]), np.float64)
    return None


def token_sums(scores, logits, labels, weights):
    """`[sum of weights, weighted sum of token cross-entropy, weighted sum of
    correct tokens]` of one batch of `(n, T, V)` scores (logits, or
    probabilities) against `(n, T)` token labels."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if logits:
        shifted = scores - scores.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    else:
        log_p = np.log(np.maximum(scores, np.finfo(np.float64).tiny))
    picked = np.take_along_axis(log_p, labels[..., np.newaxis], axis=-1)[..., 0]
    correct = np.argmax(scores, axis=-1) == labels
    if weights is None:
        w = np.ones(labels.shape)
    else:  # (n, T), or (n,): one weight per sequence
        w = np.asarray(weights, np.float64)
        w = np.broadcast_to(w.reshape(len(w), -1), labels.shape)
    return np.array([w.sum(), -(w * picked).sum(), (w * correct).sum()])


# -- the streamed pass ----------------------------------------------------------------

def has_loss(model):
    """Whether `model` has a compiled loss (or its own `compute_loss`)."""
    return getattr(model, "_compile_loss", None) is not None or (
        type(model).compute_loss is not keras.Model.compute_loss)


def batch_norms(model):
    """`[(path, layer)]` of every `BatchNormalization` layer in `model`."""
    return [(layer_path(layer), layer) for _, _, layer in walk_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _batch_statistics_call(layer):
    """A call for a BatchNormalization `layer` that normalizes with the
    batch's own statistics, as in training, without touching the moving
    statistics (no state is updated)."""
    def call(inputs, training=None, mask=None):
        rank = len(inputs.shape)
        axis = layer.axis % rank
        x = keras.ops.cast(inputs, "float32")
        mean, variance = keras.ops.moments(x, [i for i in range(rank) if i != axis])
        out = keras.ops.batch_normalization(
            x, mean, variance, axis=axis, epsilon=layer.epsilon,
            offset=None if layer.beta is None else keras.ops.cast(layer.beta, "float32"),
            scale=None if layer.gamma is None else keras.ops.cast(layer.gamma, "float32"))
        return keras.ops.cast(out, inputs.dtype)
    return call


def evaluation_step(model, capture=None, batch_statistics=False):
    """`(x, y, sample_weight) -> (outputs, loss)`, compiled once per input
    signature (batch dimension left free, so the last, smaller batch reuses
    it); `loss` is the compiled loss (`model.compute_loss`), or 0 without one
    (`has_loss(model)` says which). With a layer as `capture`, the step
    returns `(outputs, loss, inputs)`, `inputs` the first input of that
    layer's (last) call in the same forward pass. With `batch_statistics`,
    every BatchNormalization layer normalizes with the batch's statistics
    (as in training; the moving statistics are left as they are)."""
    per_model = _cores.cache(model)
    key = ("evaluation_step", None if capture is None else id(capture), batch_statistics)
    fn = per_model.get(key)
    if fn is None:
        with_loss = has_loss(model)
        norms = batch_norms(model) if batch_statistics else []

        def step(x, y, sample_weight):
            captured = []
            with contextlib.ExitStack() as stack:
                for _, layer in norms:
                    stack.enter_context(swapped_call(layer, _batch_statistics_call(layer)))
                if capture is not None:
                    original = capture.call

                    @functools.wraps(original)
                    def record(*args, **kwargs):
                        captured[:] = [args[0] if args else next(iter(kwargs.values()))]
                        return original(*args, **kwargs)
                    stack.enter_context(swapped_call(capture, record))
                y_pred = model(x, training=False)
            if with_loss and y is not None:
                loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                           training=False)
            else:
                loss = keras.ops.zeros(())
            if capture is None:
                return y_pred, keras.ops.cast(loss, "float32")
            return y_pred, keras.ops.cast(loss, "float32"), captured[0]

        if batch_statistics:
            # A function of its own: TensorFlow counts the traces of one
            # Python function's code together, and warns at five in ten calls.
            def batch_statistics_step(x, y, sample_weight):
                return step(x, y, sample_weight)
            fn = per_model[key] = backend.compile(batch_statistics_step, model.variables)
        else:
            fn = per_model[key] = backend.compile(step, model.variables)
    return fn


class MistakeBuffer:
    """The `k` most confident mistakes seen so far, with their inputs."""

    def __init__(self, k):
        self.k = k
        self._heap = []  # (confidence, order, record)
        self._order = 0

    def offer(self, confidence, mistakes, take):
        """Offers a batch: `confidence[i]` of each row, `mistakes` a bool mask,
        `take(i)` the record kept for row `i` (copied only when it enters)."""
        if self.k == 0:
            return
        rows = np.flatnonzero(mistakes)
        if len(rows) > self.k:  # only the batch's own top k can enter
            rows = rows[np.argsort(-confidence[rows], kind="stable")[:self.k]]
        for i in rows:
            item = (float(confidence[i]), -self._order)
            self._order += 1
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, (*item, take(i)))
            elif item > self._heap[0][:2]:
                heapq.heapreplace(self._heap, (*item, take(i)))

    def items(self):
        """Records, most confident first."""
        return [entry[2] for entry in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]
