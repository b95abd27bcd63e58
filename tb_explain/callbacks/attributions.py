"""Attributions callback: several attribution methods side by side, with a sanity check."""

import numpy as np

from tb_explain import _validate, tags
from tb_explain.callbacks._attribution_render import AttributionRendering
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import attribution
from tb_explain.compute.attribution import _outputs as output_selection
from tb_explain.compute.attribution import gradcam, sanity
from tb_explain.compute.attribution import methods as registry
from tb_explain.probe import Probe, named_leaves
from tb_explain.render import charts, images
from tb_explain.summary import ops

DEFAULT_METHODS = ("saliency", "smoothgrad", "gradcam", "occlusion")


class Attributions(AttributionRendering, ExplainCallback):
    """Logs several attribution methods on the same probe samples, side by side.

    Each method of `tbx.attribute` runs on the probe at every event and is
    rendered by input kind as `IntegratedGradients` renders its maps, under
    `attributions/<method>/<input>/...`: images (`heatmap`, `overlay`,
    `signed`; Grad-CAM: `heatmap` and `overlay`), tables (`features/<name>`
    scalars, `table`, `ranking`) and tokens (`tokens`). Per sample, one
    comparison image puts the input and each method's heatmap side by side,
    labelled (`attributions/comparison/<input>`; tables: a methods x features
    map; tokens: one Text table with a column per method).

    With `sanity_check=True`, the model-parameter randomization test
    (Adebayo et al., 2018; `tbx.randomization_test`) runs on a copy of the
    model at the last epoch of the fit: its correlations as scalars
    `attributions/sanity/<method>/<layer>`, the final one (every layer
    randomized, the verdict's figure) as `attributions/sanity/<method>`, and
    a verdict per method as Text
    (`attributions/sanity`).

    `integrated_gradients` as a method here uses the same function as
    `IntegratedGradients`, whose own tags stay as they are.

    Args:
        log_dir: Directory of the run (created if missing).
        data: Probe data (labels ignored), as for the other probe callbacks.
        methods: Names of `tbx.attribute` methods (`tags.ATTRIBUTION_METHODS`:
            the gradient methods, Grad-CAM, occlusion and the SHAP family
            `shapley`, `kernel_shap`, `gradient_shap`). Grad-CAM needs an
            image input: without one it is refused before training. Tables
            also get shap's summary plot per method (`.../summary`).
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        max_samples: Probe samples explained (int >= 1).
        sanity_check: Whether to run the randomization test at the last epoch.
        log_inputs: Whether the probe itself may be drawn (the comparison's
            first panel, the overlays' background); False is
            `privacy="inputs"`.
        privacy: `"off"`, `"inputs"` (no probe image, no overlay, no input
            panel in the comparison, tokens as positions) or `"strict"` (no
            per-sample rendering: maps and the comparison become means over
            the probe, written with at least `min_samples` samples), as for
            `IntegratedGradients`; the sanity check's figures stay.
        min_samples: Samples an aggregate needs at `privacy="strict"` (int >= 2).
        target: None (the predicted class), an int, or one int per sample.
        position: For a sequence output `(n, T, V)`: the position explained,
            an int or `"last"` (each sample's last unmasked position).
        output: The output explained, for multi-output models (default:
            every output, each under its name after the input's:
            `attributions/<method>/<input>/<output>/...`; the sanity check
            reads the first).
        batch_size: Rows per compiled call (None: automatic).
        feature_names: Names of tabular features.
        vocabulary: Token strings by id.
        **method_options: Options of the methods (`samples=`, `noise=`,
            `base=` for SmoothGrad; `layer=` for Grad-CAM; `window=`,
            `stride=`, `baseline=` for occlusion; `steps=` for integrated
            gradients and SmoothGrad's IG base), each given to the methods
            that take it; one that no chosen method takes is a TypeError.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        tbx.Attributions("runs/exp1", data=x_val[:4], sanity_check=True,
                         methods=("saliency", "smoothgrad", "gradcam"), samples=25)])
    ```
    """

    tag_prefix = "attributions"
    needs_call = True

    def __init__(self, log_dir, data, methods=DEFAULT_METHODS, freq=1, max_samples=4,
                 sanity_check=False, log_inputs=True, target=None, output=None, batch_size=None,
                 feature_names=None, vocabulary=None, privacy="off", min_samples=8,
                 position="last", **method_options):
        super().__init__(log_dir, freq)
        self.position = output_selection.check_position(position)
        if isinstance(methods, str) or not methods:
            raise TypeError(f"`methods` must be a non-empty list of method names, got "
                            f"{methods!r}.")
        self.methods = list(methods)
        accepted = set()
        for method in self.methods:
            registry.check_method(method)
            accepted |= set(registry.METHODS[method][1])
        unknown = sorted(set(method_options) - accepted)
        if unknown:
            raise TypeError(f"no method of {self.methods} takes option(s) {unknown}; their "
                            f"options are {sorted(accepted)}.")
        self.method_options = method_options
        self.probe = Probe(data, max_samples=max_samples)
        self.sanity_check = _validate.check_bool("sanity_check", sanity_check)
        self.log_inputs = _validate.check_bool("log_inputs", log_inputs)
        self.privacy, self.min_samples = _validate.check_privacy(privacy, log_inputs, min_samples)
        if batch_size is not None:
            _validate.check_int("batch_size", batch_size, minimum=1)
        self.target, self.output, self.batch_size = target, output, batch_size
        self.feature_names, self.vocabulary = feature_names, vocabulary
        self._sanity_done = False

    #: Its methods send many rows through the model: compiled from the start.
    eager_events = 0

    def _options(self, method):
        takes = registry.METHODS[method][1]
        return {k: v for k, v in self.method_options.items() if k in takes}

    def _attribute(self, method, output):
        return registry.attribute(self.model, self.probe.x, method, target=self._targets[output],
                                 output=output, batch_size=self.batch_size,
                                 position=self.position, **self._options(method))

    def validate_model(self):
        self.probe.validate(self.model)
        self._sanity_done = False

    def prepare(self):
        with self.model_checks(passing=("`", "Grad-CAM")):
            plan = attribution.plan_inputs(self.model, self.probe.x)
            if "gradcam" in self.methods:  # an image input and a conv layer, or an error now
                gradcam.find_layer(self.model, plan, self._options("gradcam").get("layer"))
            # every output by default; one forward pass validates output and target
            self._targets = attribution.explained_targets(self.model, plan, self.output,
                                                          self.target)
            for output, target in self._targets.items():
                attribution._outputs.outputs_and_targets(self.model, plan, target, output)
        self._remember_plan(plan)

    def log_event(self, epoch):
        for output in self._targets:
            suffix = "" if len(self._targets) == 1 else f"/{output}"
            self._log_output(output, suffix, epoch)
        if self.sanity_check and self._epochs is not None and epoch == self._epochs - 1:
            self._log_sanity(epoch)

    def _log_output(self, output, suffix, epoch):
        results = {method: self._attribute(method, output) for method in self.methods}
        leaves = self._shown_leaves(self.probe.x)
        names = {name: ("input" if name is None else name) for name in leaves}
        for method, result in results.items():
            title = method.replace("_", " ")
            if method == "gradcam":
                image = [n for n in leaves if leaves[n].ndim == 4][0]
                self._log_images(f"attributions/gradcam/{names[image]}{suffix}", leaves[image],
                                 result.attributions[..., None], epoch, signed=False)
                continue
            attributions = dict(named_leaves(result.attributions))
            for name, value in leaves.items():
                kind = self._kinds[names[name]]
                if kind == "skip":
                    continue
                tag = f"attributions/{method}/{names[name]}{suffix}"
                attr = attributions[name]
                if kind == "token":
                    self._log_tokens(tag, value, attr, result, epoch, title=title,
                                     name=names[name])
                elif value.ndim == 4:
                    self._log_images(tag, value, attr, epoch)
                elif value.ndim == 2:
                    self._log_table(tag, names[name], attr, epoch, title=title, values=value)
                else:  # sequences (time x features) and other shapes: as IntegratedGradients
                    self._log_flat(tag, attr, epoch)
        self._log_comparison(leaves, names, results, epoch, suffix)

    def on_train_end(self, logs=None):
        if (self.sanity_check and not self._sanity_done and self._last_epoch is not None
                and self._writer is not None and self._last_logged == self._last_epoch):
            with self._writer.record(self._last_epoch):  # a fit cut short (EarlyStopping)
                try:
                    self._log_sanity(self._last_epoch)
                except Exception as exc:  # noqa: BLE001 (a logging fault never ends a fit)
                    self.event_failed(self._last_epoch, exc)
        super().on_train_end(logs)

    def _magnitude(self, method, attr):
        """Per-sample `(h, w)` importance maps of image attributions."""
        if method == "gradcam":
            return [images.attribution_heatmap(a[..., None]) for a in attr]
        return [images.attribution_heatmap(a) for a in attr]

    def _log_comparison(self, leaves, names, results, epoch, suffix=""):
        for name, value in leaves.items():
            kind = self._kinds[names[name]]
            if kind == "skip":
                continue
            tag = f"attributions/comparison/{names[name]}{suffix}"
            strict, enough = self._aggregate(len(value))
            if strict and not enough:
                continue
            if value.ndim == 4 and kind == "float":
                panels, labels = [], []
                if self.privacy == "off":
                    panels.append([images.image_rgb(v) for v in value])
                    labels.append("input")
                for method, result in results.items():
                    attr = result.attributions if method == "gradcam" else dict(
                        named_leaves(result.attributions))[name]
                    maps = self._magnitude(method, attr)
                    if strict:  # one mean map over the probe
                        maps = [np.mean(maps, axis=0)]
                    panels.append([images.colormap.apply(h, "viridis") for h in maps])
                    labels.append(method + (" (mean)" if strict else ""))
                factor = images.fit_factor(*value.shape[1:3], min_side=128, max_side=256)
                rows = []
                for i in range(len(panels[0])):
                    tiles = np.stack([images.upscale(p[i], factor) for p in panels])
                    rows.append(charts.captioned_grid(tiles, [[label] for label in labels],
                                                      cols=3, size=16))
                ops.write_images(tag, np.stack(rows), epoch)
            elif value.ndim == 2 and kind == "float":
                feature_names = self._names(names[name], value.shape[1])
                table = [dict(named_leaves(r.attributions))[name] for m, r in results.items()
                         if m != "gradcam"]
                labels = [m for m in results if m != "gradcam"]
                if strict:  # per-feature means over the probe
                    table = [t.mean(axis=0, keepdims=True) for t in table]
                ops.write_images(tag, np.stack([charts.labelled_heatmap(
                    np.stack([t[i] for t in table]), labels, feature_names)
                    for i in range(len(table[0]))]), epoch)
            elif kind == "float":  # sequences and other shapes: a row per method
                labels = [m for m in results if m != "gradcam"]
                table = [np.asarray(dict(named_leaves(results[m].attributions))[name]).reshape(
                    len(value), -1) for m in labels]
                if strict:
                    table = [t.mean(axis=0, keepdims=True) for t in table]
                ops.write_images(tag, np.stack([images.signed_table(
                    np.stack([t[i] for t in table]), 99.0, (16, 4))
                    for i in range(len(table[0]))]), epoch)
            elif kind == "token":
                parts = [f"Attributions per token at epoch {epoch}, one column per method."]
                labels = [m for m in results if m != "gradcam"]
                per = [dict(named_leaves(results[m].attributions))[name] for m in labels]
                if strict:
                    parts.append(f"\nMeans over {len(value)} samples, per position:\n")
                    parts.append(ops.markdown_table(["position"] + labels, [
                        [p] + [f"{a[:, p].mean():+.4g}" for a in per]
                        for p in range(value.shape[1])]))
                for i, ids in enumerate(value if not strict else []):
                    parts.append(f"\n**sample {i}**\n")
                    shown = self.privacy == "off"
                    parts.append(ops.markdown_table(
                        ["position"] + (["token"] if shown else []) + labels, [
                            [p] + ([self._token(t, names[name])] if shown else [])
                            + [f"{a[i, p]:+.4g}" for a in per] for p, t in enumerate(ids)]))
                ops.write_markdown(tag, "\n".join(parts), epoch)

    def _log_sanity(self, epoch):
        self._sanity_done = True
        lines = [f"**Sanity check at epoch {epoch}** (model-parameter randomization, Adebayo "
                 f"et al. 2018): mean Spearman correlation of |attributions| with the trained "
                 f"model's, as layers are re-initialized from the output down, on a copy of "
                 f"the model.\n"]
        for method in self.methods:
            output, target = next(iter(self._targets.items()))  # the first output
            test = sanity.randomization_test(self.model, self.probe.x, method,
                                             target=target, output=output,
                                             batch_size=self.batch_size, **self._options(method))
            for layer, value in zip(test.layers, test.correlations):
                ops.write_scalar(tags.SANITY.format(method, layer), value, epoch)
            if len(test.correlations):  # the verdict's figure: all layers randomized
                ops.write_scalar(tags.SANITY.format(method, "")[:-1], test.correlations[-1],
                                 epoch)
            where = "" if len(self._targets) == 1 else f" (output {output!r})"
            lines.append("- " + test.verdict() + where + " Cascade: " + ", ".join(
                f"{layer} {value:.2f}" for layer, value in zip(test.layers, test.correlations)))
        ops.write_markdown(tags.SANITY_TEXT, "\n".join(lines), epoch)
