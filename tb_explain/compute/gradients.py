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
      previous call (then the snapshot is refreshed; the first snapshot is
      taken here).

    Where the backend computes statistics inside compiled functions
    (`backend.graph_statistics()`: TensorFlow) the whole computation is one
    `backend.Function` (run eagerly inside `tiering.eager()`); elsewhere the
    loss and gradients are one (JAX: `jax.jit` over the variables' values,
    outside `tiering.eager()`) and the statistics and snapshots are numpy.
    In-graph snapshots are Keras variables, assigned inside the compiled
    function after their reads (automatic control dependencies order them).

    Returns:
        `(function, variables)`; the function is a `backend.Function`.
    """
    variables = list(model.trainable_variables)
    gradients_of = _loss_and_gradients(model, variables, loss)
    in_graph = backend.graph_statistics() is not None
    if in_graph:  # snapshots the compiled function reads and assigns
        # from numpy copies: a Keras variable made from another's value
        # shares its TensorFlow variable
        snapshots = [keras.Variable(np.array(backend.to_numpy(v)), trainable=False,
                                    name="tb_explain_snapshot") for v in variables]
    else:  # compiled gradients, numpy statistics and snapshots
        gradients_of = backend.Function(gradients_of, model.variables)
        snapshots = [np.array(backend.to_numpy(v)) for v in variables]

    def compute(x, y, sample_weight, zero):
        value, grads = gradients_of(x, y, sample_weight)
        buckets, norms, nonfinite = stats.batched_statistics(grads, bins, zero=zero)
        values = [keras.ops.convert_to_tensor(v.value) for v in variables]
        update_norms, previous_norms = stats.update_norms(values, snapshots)
        weight_nonfinite = stats.nonfinite_counts(values)
        if in_graph:
            for snapshot, current in zip(snapshots, values):
                snapshot.assign(current)
        else:
            snapshots[:] = [np.array(backend.to_numpy(current)) for current in values]
        return {"loss": keras.ops.cast(value, "float64") if not backend.executing_eagerly()
                else np.float64(backend.to_numpy(value)),
                "buckets": buckets, "norms": norms, "nonfinite": nonfinite,
                "weight_nonfinite": weight_nonfinite, "update_norms": update_norms,
                "previous_norms": previous_norms}

    return tiering.function(compute, trace_with=None if in_graph else (
        lambda x, y, sample_weight, zero: gradients_of.concrete(x, y, sample_weight))), variables
