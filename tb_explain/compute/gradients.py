"""Loss gradients on the probe, in pure TensorFlow (no summaries)."""

import tensorflow as tf

from tb_explain.compute import stats, tiering


def layer_of(variable_path):
    """The layer path a variable belongs to: its path without the last part."""
    return variable_path.rsplit("/", 1)[0] if "/" in variable_path else variable_path


def probe_loss(model, x, y, sample_weight=None, loss=None):
    """The model's own loss on `(x, y, sample_weight)`, `training=False`; or
    `loss(y, y_pred)` (its weighted mean) plus the model's regularization
    losses."""
    y_pred = model(x, training=False)
    if loss is None:
        return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                   training=False)
    value = tf.cast(loss(y, y_pred), tf.float32)
    if sample_weight is not None and value.shape.rank:
        weight = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        value = tf.reduce_sum(tf.reshape(value, [-1]) * weight) / tf.maximum(
            tf.reduce_sum(weight), 1e-12)
    value = tf.reduce_mean(value)
    if model.losses:
        value += tf.add_n([tf.cast(v, tf.float32) for v in model.losses])
    return value


def make_gradient_statistics(model, bins=stats.DEFAULT_BINS, loss=None):
    """Returns a compiled function computing the probe loss and its gradients' health.

    The function takes `(x, y, sample_weight, zero)` (`zero`: `stats.zero()`), runs `model(x, training=False)`,
    applies the model's own loss (`model.compute_loss`: compiled losses, loss
    dicts of multi-output models, sample weights, regularization losses), or
    `loss` when given (see `probe_loss`), and
    returns a dict of:

    - `loss`: the scalar loss;
    - `buckets`, `norms`, `nonfinite`: `batched_statistics` of the gradient of
      every trainable variable (in `model.trainable_variables` order);
    - `weight_nonfinite`: NaN/Inf counts of the weights themselves;
    - `update_norms`, `previous_norms`: `||W - W_snapshot||` and
      `||W_snapshot||` per variable, against the snapshot taken by the
      previous call (then the snapshot is refreshed).

    It is traced once per probe shape, and runs eagerly inside
    `tiering.eager()`.
    """
    variables = list(model.trainable_variables)
    snapshots = [tf.Variable(tf.convert_to_tensor(v.value), trainable=False) for v in variables]

    def compute(x, y, sample_weight, zero):
        with tf.GradientTape() as tape:
            value = probe_loss(model, x, y, sample_weight, loss=loss)
        grads = tape.gradient(value, variables,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.convert_to_tensor(g) for g in grads]
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

    return tiering.function(compute), variables
