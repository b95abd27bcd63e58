"""GradientNorms callback."""

import contextlib
import statistics
import warnings

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain.callbacks.base import ExplainCallback, NotApplicable
from tb_explain.compute import attention, gradients, stats, tiering
from tb_explain.probe import Probe
from tb_explain.summary import ops


class GradientNorms(ExplainCallback):
    """Logs gradient health per variable and per layer, with alerts.

    Keras callbacks never see the training gradients, so this one computes
    them on a fixed probe batch, with the model's own compiled loss
    (loss dicts of multi-output models, sample weights and regularization
    losses included) or the `loss` given, `training=False`, in one compiled
    function.

    Logged at each event (step = epoch):

    - `gradients/<variable.path>/norm` and `gradients/<layer.path>/norm`:
      L2 norms per variable and per layer; `gradients/global_norm`;
    - `gradients/<variable.path>`: gradient histograms (`histograms=True`);
    - `gradients/<layer.path>/update_ratio`: `||W_now - W_prev|| / ||W_prev||`
      between this event and the previous one, from weight snapshots (the
      real update, whatever the optimizer);
    - `gradients/loss`: the probe loss; `gradients/nonfinite_values`: NaN/Inf
      gradient values;
    - `gradients/alerts` (Text) and a Python `RuntimeWarning` naming the layer
      and the figure, for vanishing gradients (a layer's norm below
      `vanishing_ratio` times the last layer's, or below
      `vanishing_threshold`; the query and key projections of attention
      layers only below `vanishing_threshold`: their gradients scale with
      how far the attention is from uniform, so they are tiny in any fresh
      transformer, and exactly zero only when the attention stack gets no
      gradient at all), exploding gradients (the global norm above
      `exploding_factor` times the median of the previous events) and NaN/Inf
      gradients or weights. With `stop_on_nonfinite=True`, NaN/Inf stops
      training cleanly through `model.stop_training`.

    Reading the figures: update ratios near 1e-3 per epoch-interval are the
    usual sign of a healthy learning rate; far above (1e-1) suggests it is
    too high, far below (1e-6) too low or a frozen layer. Norms that shrink by
    orders of magnitude towards the input point to vanishing gradients.

    Args:
        log_dir: Directory of the run (created if missing).
        data: Probe data with labels: `(x, y)` or `(x, y, sample_weight)`,
            lists or dicts for multi-input/-output models, or a
            `tf.data.Dataset`.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        histograms: Whether to log gradient histograms.
        max_samples: Probe samples kept (int >= 1).
        vanishing_ratio: Alert when a layer's gradient norm is below this
            fraction of the last layer's (float in (0, 1)).
        vanishing_threshold: Alert when a layer's gradient norm is below this
            absolute value (float >= 0).
        exploding_factor: Alert when the global norm exceeds this multiple of
            its running median (float > 1).
        stop_on_nonfinite: Stop training when gradients or weights hold
            NaN/Inf.
        loss: Optional callable `(y_true, y_pred) -> scalar` used instead of
            the model's compiled loss (plus the model's regularization
            losses), for models trained by a custom `train_step` without a
            compiled loss. Sample weights, when given, weight its mean.

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        tbx.GradientNorms("runs/exp1", data=(x_val[:32], y_val[:32]), freq=2)])
    # a model trained by its own train_step, without a compiled loss:
    tbx.GradientNorms("runs/gan", data=(x_real[:32], np.zeros((32, 1))),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
    ```
    """

    tag_prefix = "gradients"
    needs_call = True

    def __init__(self, log_dir, data, freq=1, histograms=True, max_samples=32,
                 vanishing_ratio=1e-4, vanishing_threshold=1e-10, exploding_factor=10.0,
                 stop_on_nonfinite=False, loss=None):
        super().__init__(log_dir, freq)
        if loss is not None and not callable(loss):
            raise TypeError(f"`loss` must be None or a callable (y_true, y_pred) -> scalar, "
                            f"got {loss!r}.")
        self.loss = loss
        self.histograms = _validate.check_bool("histograms", histograms)
        self.probe = Probe(data, max_samples=max_samples)
        self.vanishing_ratio = _validate.check_float(
            "vanishing_ratio", vanishing_ratio, 0.0, 1.0, inclusive=False)
        self.vanishing_threshold = _validate.check_float(
            "vanishing_threshold", vanishing_threshold, minimum=0.0)
        self.exploding_factor = _validate.check_float("exploding_factor", exploding_factor,
                                                      minimum=1.0)
        if self.exploding_factor == 1.0:
            raise ValueError("`exploding_factor` must be > 1, got 1.0.")
        self.stop_on_nonfinite = _validate.check_bool("stop_on_nonfinite", stop_on_nonfinite)
        self._query_key = set()  # attention query/key projections (see `_alerts`)
        self._compute = None
        self._global_norms = []
        self._has_snapshot = False

    def validate_model(self):
        model = self.model
        custom_loss = type(model).compute_loss is not keras.Model.compute_loss
        compiled = getattr(model, "_compile_loss", None) is not None
        if self.loss is None and not compiled and not custom_loss:
            raise NotApplicable(
                "GradientNorms needs the model's loss: compile the model with a `loss` "
                "before fit, or pass `loss=` (a callable (y_true, y_pred) -> scalar) for a "
                "model trained by a custom `train_step`")
        if (self.loss is not None or compiled) and self.probe.y is None:
            which = "the model's compiled loss" if self.loss is None else "`loss`"
            raise NotApplicable(
                f"GradientNorms `data` has no labels, but {which} needs them: pass "
                "`data=(x, y)` or `(x, y, sample_weight)`")
        self.probe.validate(model)
        self._global_norms = []
        self._has_snapshot = False

    def prepare(self):
        self._query_key = attention.query_key_paths(self.model)
        self._compute, self._variables = gradients.make_gradient_statistics(self.model,
                                                                            loss=self.loss)
        if not self._variables:
            raise ValueError("GradientNorms: the model has no trainable variables.")
        self._paths = [v.path for v in self._variables]
        self._layers = {}
        for i, path in enumerate(self._paths):
            self._layers.setdefault(gradients.layer_of(path), []).append(i)
        self._has_snapshot = False
        self._inputs = self.probe.tensors()
        try:  # a probe that does not fit fails here, not epochs later
            # traced without running where the backend can (not eagerly);
            # else the probe loss, without its gradients
            if tiering.is_eager() or not self._compute.trace(*self._inputs, stats.zero()):
                gradients.probe_loss(self.model, *self._inputs, loss=self.loss)
        except (ValueError, TypeError, *backend.model_errors()) as exc:
            raise self.probe_failed(exc) from exc

    def log_event(self, epoch):
        capture = self._writer.shared.get("activation_captures", {}).get(id(self.model))
        with (capture.during(epoch, self._inputs[0]) if capture is not None
              else contextlib.nullcontext()):
            result = {k: backend.to_numpy(v)
                      for k, v in self._compute(*self._inputs, stats.zero()).items()}
        norms = result["norms"]
        for i, path in enumerate(self._paths):
            ops.write_scalar(f"gradients/{path}/norm", norms[i], epoch)
            if self.histograms:
                ops.write_histogram(f"gradients/{path}", result["buckets"][i], epoch)
        layer_norms = {}
        for layer, index in self._layers.items():
            layer_norms[layer] = float(np.sqrt(np.sum(norms[index] ** 2)))
            ops.write_scalar(f"gradients/{layer}/norm", layer_norms[layer], epoch)
            if self._has_snapshot:
                update = np.sqrt(np.sum(result["update_norms"][index] ** 2))
                previous = np.sqrt(np.sum(result["previous_norms"][index] ** 2))
                ratio = update / previous if previous > 0 else (0.0 if update == 0 else np.inf)
                ops.write_scalar(f"gradients/{layer}/update_ratio", ratio, epoch)
        self._has_snapshot = True
        global_norm = float(np.sqrt(np.sum(norms ** 2)))
        ops.write_scalar("gradients/global_norm", global_norm, epoch)
        ops.write_scalar("gradients/loss", result["loss"], epoch)
        ops.write_scalar("gradients/nonfinite_values", result["nonfinite"].sum(), epoch)
        alerts = self._alerts(layer_norms, global_norm, result)
        if np.isfinite(global_norm):
            self._global_norms.append(global_norm)
        if alerts:
            ops.write_markdown(
                "gradients/alerts",
                f"**Gradient alerts at epoch {epoch}**\n\n"
                + "\n".join(f"- {a}" for a in alerts), epoch)
            shown = alerts if len(alerts) <= 4 else alerts[:3] + [
                f"and {len(alerts) - 3} more (Text dashboard, tag gradients/alerts)"]
            warnings.warn(f"tb_explain: gradient alerts at epoch {epoch}: " + "; ".join(shown),
                          RuntimeWarning, stacklevel=2)

    def _alerts(self, layer_norms, global_norm, result):
        alerts = []
        bad_grads = [(p, int(n)) for p, n in zip(self._paths, result["nonfinite"]) if n]
        bad_weights = [(p, int(n)) for p, n in zip(self._paths, result["weight_nonfinite"]) if n]
        for kind, bad in (("gradients", bad_grads), ("weights", bad_weights)):
            if bad:
                alerts.append(f"non-finite {kind}: " + ", ".join(
                    f"{p} ({n} NaN/Inf values)" for p, n in bad))
        if (bad_grads or bad_weights) and self.stop_on_nonfinite:
            self.model.stop_training = True
            alerts.append("training stopped (stop_on_nonfinite=True)")
        layers = list(layer_norms)
        last = layer_norms[layers[-1]]
        for layer in layers[:-1]:
            norm = layer_norms[layer]
            if not np.isfinite(norm):
                continue
            if norm < self.vanishing_threshold:
                alerts.append(f"vanishing gradients: {layer} norm {norm:.3g} < "
                              f"vanishing_threshold {self.vanishing_threshold:.3g}")
            elif layer in self._query_key:
                continue  # small at near-uniform attention by design: the threshold only
            elif np.isfinite(last) and norm < self.vanishing_ratio * last:
                alerts.append(f"vanishing gradients: {layer} norm {norm:.3g} is "
                              f"{norm / last:.2g} x the last layer's ({layers[-1]}: {last:.3g})")
        if len(self._global_norms) >= 2 and np.isfinite(global_norm):
            median = statistics.median(self._global_norms)
            if median > 0 and global_norm > self.exploding_factor * median:
                alerts.append(f"exploding gradients: global norm {global_norm:.3g} is "
                              f"{global_norm / median:.3g} x its running median {median:.3g}")
        return alerts
