"""Loss gradients on the probe, on every backend (no summaries)."""

import keras
import numpy as np

from tb_explain import backend
from tb_explain.compute import stats, tiering


def layer_of(variable_path):
    """The layer path a variable belongs to: its path without the last part."""
    return variable_path.rsplit("/", 1)[0] if "/" in variable_path else variable_path


def probe_loss(model, x, y, sample_weight=None, loss=None):
    """The model's own loss on `(x, y, sample_weight)`, `training=False`; or
    `loss(y, y_pred)` (its weighted mean) plus the model's regularization
    losses."""
    ops = keras.ops
    y_pred = model(x, training=False)
    if loss is None:
        return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                   training=False)
    value = ops.cast(loss(y, y_pred), "float32")
    if sample_weight is not None and len(value.shape):
        weight = ops.cast(ops.reshape(sample_weight, [-1]), "float32")
        value = ops.sum(ops.reshape(value, [-1]) * weight) / ops.maximum(ops.sum(weight), 1e-12)
    value = ops.mean(value)
    for extra in model.losses:
        value = value + ops.cast(extra, "float32")
    return value


def _loss_and_gradients(model, variables, loss):
    """`f(x, y, sample_weight) -> (loss, gradients of variables)`."""
    def compute(x, y, sample_weight):
        grads, value = backend.variable_gradients(
            lambda: (lambda v: (v, v))(probe_loss(model, x, y, sample_weight, loss=loss)),
            variables)
        return value, grads
    return compute


def make_gradient_statistics(model, bins=stats.DEFAULT_BINS, loss=None):
    """Returns a function computing the probe loss and its gradients' health.

    The function takes `(x, y, sample_weight, zero)` (`zero`: `stats.zero()`),
    runs `model(x, training=False)`, applies the model's own loss
    (`model.compute_loss`: compiled losses, loss dicts of multi-output models,
    sample weights, regularization losses), or `loss` when given (see
    `probe_loss`), and returns a dict of numpy values:

    - `loss`: the scalar loss;
    - `buckets`, `norms`, `nonfinite`: `batched_statistics` of the gradient of
      every trainable variable (in `model.trainable_variables` order);
    - `weight_nonfinite`: NaN/Inf counts of the weights themselves;
    - `update_norms`, `previous_norms`: `||W - W_snapshot||` and
      `||W_snapshot||` per variable, against the snapshot taken by the
      previous call (then the snapshot is refreshed).

    On TensorFlow the whole computation is one `tf.function` (traced once per
    probe shape, run eagerly inside `tiering.eager()`); on JAX the loss and
    gradients are one `jax.jit` over the variables' values (outside
    `tiering.eager()`) and the statistics run in numpy; on PyTorch all runs
    eagerly.

    Returns:
        `(function, variables)`.
    """
    variables = list(model.trainable_variables)
    gradients_of = _loss_and_gradients(model, variables, loss)
    if backend.name() == "tensorflow":
        return _tensorflow_statistics(variables, gradients_of, bins), variables
    compiled = backend.compile(gradients_of, model.variables)
    snapshots = [None]

    def compute(x, y, sample_weight, zero):
        run = gradients_of if tiering.is_eager() else compiled
        value, grads = run(x, y, sample_weight)
        buckets, norms, nonfinite = stats.batched_statistics(grads, bins)
        values = [backend.to_numpy(v) for v in variables]
        if snapshots[0] is None:
            snapshots[0] = [np.array(v) for v in values]
        update_norms, previous_norms = stats.update_norms(values, snapshots[0])
        snapshots[0] = [np.array(v) for v in values]
        return {"loss": np.float64(backend.to_numpy(value)), "buckets": buckets,
                "norms": norms, "nonfinite": nonfinite,
                "weight_nonfinite": stats.nonfinite_counts(values),
                "update_norms": update_norms, "previous_norms": previous_norms}

    compute.compiled = None
    compute.gradients = compiled
    return compute, variables


def _tensorflow_statistics(variables, gradients_of, bins):
    """The TensorFlow version: statistics and the snapshot's update in the
    same graph as the gradients."""
    tf = backend.tensorflow_module()
    snapshots = [tf.Variable(tf.convert_to_tensor(v.value), trainable=False) for v in variables]

    def compute(x, y, sample_weight, zero):
        value, grads = gradients_of(x, y, sample_weight)
        buckets, norms, nonfinite = stats.batched_statistics(grads, bins, zero=zero)
        values = [tf.convert_to_tensor(v.value) for v in variables]
        update_norms, previous_norms = stats.update_norms(values, snapshots)
        weight_nonfinite = stats.nonfinite_counts(values)
        with tf.control_dependencies([update_norms, previous_norms]):
            for s, w in zip(snapshots, values):
                s.assign(w)
        return {"loss": tf.cast(value, tf.float64), "buckets": buckets, "norms": norms,
                "nonfinite": nonfinite, "weight_nonfinite": weight_nonfinite,
                "update_norms": update_norms, "previous_norms": previous_norms}

    return tiering.function(compute)
