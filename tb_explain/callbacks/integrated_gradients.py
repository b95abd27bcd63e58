"""IntegratedGradients callback."""

import logging
import warnings

import numpy as np

from tb_explain import _validate
from tb_explain.callbacks._attribution_render import AttributionRendering
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import attribution
from tb_explain.compute.attribution import _outputs as output_selection
from tb_explain.compute.quadrature import METHODS
from tb_explain.probe import Probe, named_leaves
from tb_explain.render import images
from tb_explain.summary import ops


def _named_leaves(x):
    """Probe inputs by tag name: `input` for a single-input model."""
    return [(name or "input", value) for name, value in named_leaves(x)]


#: `|F(x) - F(baseline)|` at most this fraction of `|F(x)| + |F(baseline)|`
#: is "near zero": no number of steps makes the relative gap meaningful.
NEAR_ZERO = 1e-3


class IntegratedGradients(AttributionRendering, ExplainCallback):
    """Logs integrated-gradients attributions of the probe as training goes.

    Uses `tbx.integrated_gradients` (exact on linear models, compiled once
    per model and shape) and renders by input kind, tagged
    `attributions/<input>/...` (`<input>` is `input` for single-input
    models, else the input's key or index):

    - images `(n, h, w, c)`: `.../probe` (the input), `.../heatmap` (sum
      of |attribution| over channels, clipped at the 99th percentile),
      `.../overlay` (the heatmap over a grayscale input) and `.../signed`
      (red positive, blue negative evidence), one image per sample;
    - tables `(n, features)`: `.../features/<name>` scalars (mean |attribution|
      per feature, so trends show in the Scalars dashboard), a samples x
      features signed heatmap `.../table` (Images), and `.../ranking`, a
      Markdown table of features by mean |attribution| (Text);
    - tokens (integer ids into an Embedding): a Text table per sample of
      tokens (through `vocabulary` when given) and their attributions;
    - `attributions/completeness_delta`: the largest relative completeness gap
      `|sum(IG) - (F(x) - F(x'))| / |F(x) - F(x')|` over the probe, with a
      warning above `delta_tolerance` (the IG paper's 5% check) suggesting
      more steps.

    Args:
        log_dir: Directory of the run (created if missing).
        data: Probe data (labels ignored), as for the other callbacks.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        steps: Quadrature points (int >= 1).
        method: One of `"gausslegendre"`, `"riemann_left"`, `"riemann_right"`,
            `"riemann_middle"`, `"riemann_trapezoid"`.
        baseline: See `tbx.integrated_gradients`.
        target: See `tbx.integrated_gradients` (None: predicted class).
        batch_size: Interpolated inputs per gradient computation (bounds
            memory), or None: automatic, as many as hold at most 4M input
            values, and at least 32 (big images: 32 rows; the demo's 8x8
            digits: everything at once). Fewer rows than the whole path keep
            the first event's memory, and its cost, down on large models.
        max_samples: Probe samples explained (int >= 1).
        output: The output to explain in multi-output models.
        position: For a sequence output `(n, T, V)`: the position explained,
            an int or `"last"` (each sample's last unmasked position: a
            causal LM's next token).
        feature_names: Names of tabular features (a list, or a dict of lists
            per input name).
        vocabulary: Token strings by id (a list or dict) for token inputs.
        delta_tolerance: Relative completeness gap above which a warning is
            raised (float > 0).
        log_inputs: Whether to log the probe images beside the attributions
            (False is `privacy="inputs"`).
        privacy: `"off"`: everything above. `"inputs"`: no raw input (no
            `probe`, no `overlay`; tokens as positions, no strings or ids);
            per-sample heatmaps, signed maps, tables and rankings stay (a
            map can still outline its input: an IG map is zero wherever the
            input is zero). `"strict"`: no per-sample rendering: `heatmap`
            and `signed` become one mean over the probe (mean |attribution|,
            mean attribution), tokens a mean per position, the ranking
            per-feature means; written only with at least `min_samples`
            probe samples. Scalars (features, completeness) stay at every
            level.
        min_samples: Samples an aggregate needs at `privacy="strict"` (int >= 2).

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        tbx.IntegratedGradients("runs/exp1", data=x_val[:4], steps=64, freq=2)])
    ```
    """

    tag_prefix = "attributions"
    needs_call = True

    #: Compiled from the start, as the other attribution methods: on
    #: TensorFlow (Grappler's rewrites off) tracing its core costs about two
    #: eager events on the demo CNN (setup 70 -> 90 ms, first event 30 -> 40
    #: ms), and each later event 12-18 ms against 30-45 ms eagerly: even by
    #: the third event; on a big model eager kernels are several times slower.
    eager_events = 0

    def __init__(self, log_dir, data, freq=1, steps=50, method="gausslegendre", baseline=None,
                 target=None, batch_size=None, max_samples=4, output=None, feature_names=None,
                 vocabulary=None, delta_tolerance=0.05, log_inputs=True, privacy="off",
                 min_samples=8, position="last"):
        super().__init__(log_dir, freq)
        self.position = output_selection.check_position(position)
        self.probe = Probe(data, max_samples=max_samples)
        self.steps = _validate.check_int("steps", steps, minimum=1)
        self.method = _validate.check_choice("method", method, METHODS)
        if method == "riemann_trapezoid" and steps < 2:
            raise ValueError(f"`steps` must be >= 2 for riemann_trapezoid, got {steps}.")
        if batch_size is not None:
            _validate.check_int("batch_size", batch_size, minimum=1)
        if isinstance(baseline, str) and baseline not in ("blur", "uniform"):
            raise ValueError(f"`baseline` must be None, a number, an array, 'blur' or "
                             f"'uniform', got {baseline!r}.")
        self.baseline, self.target, self.batch_size = baseline, target, batch_size
        self.output = output
        self.feature_names = feature_names
        self.vocabulary = vocabulary
        self.delta_tolerance = _validate.check_float("delta_tolerance", delta_tolerance,
                                                     minimum=0.0, inclusive=False)
        self.log_inputs = _validate.check_bool("log_inputs", log_inputs)
        self.privacy, self.min_samples = _validate.check_privacy(privacy, log_inputs, min_samples)

    def validate_model(self):
        self.probe.validate(self.model)
        for name, value in _named_leaves(self.probe.x):
            if isinstance(self.feature_names, (list, tuple)) and value.ndim == 2 and (
                value.dtype.kind == "f" and len(self.feature_names) != value.shape[1]
            ):
                raise ValueError(
                    f"`feature_names` has {len(self.feature_names)} names but input {name!r} "
                    f"has {value.shape[1]} features.")

    def prepare(self):
        # Validates without computing the attributions: one gradient per output.
        with self.model_checks():
            plan = attribution.plan_inputs(self.model, self.probe.x)
            self._targets = attribution.explained_targets(self.model, plan, self.output,
                                                          self.target)
            self._outputs = list(self._targets)
            for output in self._outputs:  # traces (validates) each output's core
                attribution.warm_up(
                    self.model, self.probe.x, target=self._targets[output],
                    baseline=self.baseline, steps=self.steps, method=self.method,
                    batch_size=self._batch_size(), output=output, position=self.position)
        self._remember_plan(plan)
        self._skipped_note = plan.skipped_note()
        if self._skipped_note:
            logging.getLogger("tb_explain").warning(
                "IntegratedGradients: %s", self._skipped_note)

    def log_event(self, epoch):
        if self._skipped_note:
            ops.write_markdown("attributions/skipped_inputs",
                               f"Integrated gradients: {self._skipped_note}.", epoch)
        for output in self._outputs:
            result = self._explain_output(output)
            suffix = "" if len(self._outputs) == 1 else f"/{output}"
            leaves = {"input" if k is None else k: v
                      for k, v in self._shown_leaves(self.probe.x).items()}
            attributions = dict(_named_leaves(result.attributions))
            for name, value in leaves.items():
                if self._kinds[name] == "skip":
                    continue
                attr = attributions[name]
                tag = f"attributions/{name}{suffix}"
                if self._kinds[name] == "token":
                    self._log_tokens(tag, value, attr, result, epoch, name=name)
                elif value.ndim == 4:
                    self._log_images(tag, value, attr, epoch)
                elif value.ndim == 2:
                    self._log_table(tag, name, attr, epoch, values=value)
                    self._share_means(name, attr)
                else:
                    self._log_flat(tag, attr, epoch)
            ops.write_scalar("attributions/completeness_delta" + suffix,
                             float(np.max(result.relative_delta)), epoch)
            self._warn_gap(result, output if len(self._outputs) > 1 else None, epoch)

    def _warn_gap(self, result, output, epoch):
        """Warns when the completeness gap exceeds `delta_tolerance`, and says
        whether more steps can close it: not where `F(x) - F(baseline)` is
        itself near zero (the baseline scores about as the input does), where
        the relative gap divides by almost nothing."""
        relative = result.relative_delta
        if not np.max(relative) > self.delta_tolerance:
            return
        where = "" if output is None else f" (output {output!r})"
        difference = np.abs(result.output - result.baseline_output)
        scale = np.abs(result.output) + np.abs(result.baseline_output)
        flat = difference <= NEAR_ZERO * scale + 1e-7
        over = relative > self.delta_tolerance
        if np.all(flat[over]):
            i = int(np.argmax(np.where(over, difference, -1)))
            warnings.warn(
                f"tb_explain: integrated gradients completeness gap {np.max(relative):.1%}"
                f"{where} at epoch {epoch} exceeds {self.delta_tolerance:.0%}, but F(x) - "
                f"F(baseline) is near zero ({float(result.output[i] - result.baseline_output[i]):.2g}"
                f" for sample {i}): the baseline scores about as the input does, so the "
                f"relative gap divides by almost nothing and no number of steps closes it; "
                f"use a baseline the model scores differently (`baseline='blur'`, a reference "
                f"input).", RuntimeWarning, stacklevel=3)
            return
        gap = float(np.max(relative[~flat])) if np.any(over & ~flat) else float(np.max(relative))
        other = "" if self.method == "gausslegendre" else " or use method='gausslegendre'"
        warnings.warn(
            f"tb_explain: integrated gradients completeness gap {gap:.1%}{where} at "
            f"epoch {epoch} exceeds {self.delta_tolerance:.0%}: raise `steps` (now "
            f"{self.steps}){other}.", RuntimeWarning, stacklevel=3)

    def _explain_output(self, output):
        return attribution.integrated_gradients(
            self.model, self.probe.x, target=self._targets[output], baseline=self.baseline,
            steps=self.steps, method=self.method, batch_size=self._batch_size(), output=output,
            position=self.position)

    def _batch_size(self):
        leaves = [v for _, v in named_leaves(self.probe.x)]
        return attribution._feeding.auto_batch_size(leaves, self.batch_size)

    def _share_means(self, name, attr):
        """Mean |attribution| per feature, for FeatureImportance's ranking."""
        names = self._names(name, attr.shape[1])
        prefix = "" if len(self._kinds) == 1 else f"{name}/"
        means = self._writer.shared.setdefault("attribution_means", {})
        means.update({prefix + n: float(v) for n, v in zip(names, np.abs(attr).mean(axis=0))})
