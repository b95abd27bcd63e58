"""The Explain tab: a TensorBoard plugin that tells the story of a run.

Loaded by TensorBoard through the `tensorboard_plugins` entry point, so this
module stays light (no TensorFlow import) and never raises on import. Every
read goes through `context.data_provider` (both of TensorBoard's loaders,
any logdir it can read). Routes turn tb_explain's tags (`tb_explain.tags`)
into a few view-shaped JSON answers, and send only what a view shows:
downsampled series, one epoch's images. Parameters are validated: an
unknown run, tag, signal or step is a 400 with a JSON message; no route
opens a path taken from the request (static files come from a fixed list).
"""

import json
import logging
import math
import os
import re

from werkzeug import wrappers

from tensorboard import context as tb_context
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin

from tb_explain import reader, tags

logger = logging.getLogger(__name__)
PLUGIN_NAME = tags.PLUGIN_NAME
_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: Files the frontend is made of: route -> (file, content type). Fixed here.
_FILES = {
    "/index.js": ("index.js", "text/javascript"),
    "/util.js": ("util.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
    **{f"/views/{v}.js": (f"views/{v}.js", "text/javascript")
       for v in ("health", "attributions", "outputs", "runs", "data", "attention",
                 "compare")},
}
#: Lines of one alert card shown in the timeline (the rest are counted).
ALERT_LINES = 6
#: Words of an alert line that may name a layer.
_TOKEN = re.compile(r"[^\s(),:;]+")
#: Points per scalar series a route sends at most (the epochs of a fit).
SCALAR_POINTS = 1000
#: Steps of an image series listed (TensorBoard keeps 10 per tag unless
#: started with `--samples_per_plugin images=N`).
IMAGE_STEPS = 1000
_PLUGINS = {"scalars": "scalars", "images": "images", "histograms": "histograms",
            "text": "text", "hparams": "hparams"}


#: Attribution methods with tags of their own (`attributions/<method>/...`).
_METHODS = tags.ATTRIBUTION_METHODS


class BadRequest(ValueError):
    """A request parameter is missing or unknown: answered with a 400."""


def _finite(value):
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


_layers_from_summary = reader.layers_from_summary


class ExplainPlugin(base_plugin.TBPlugin):
    """The Explain tab: health, attributions, outputs and runs compared."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        super().__init__(context)
        self._provider = context.data_provider
        self._thumbnails = {}  # (run, step) -> uint8 array: the last one read

    # -- TensorBoard's plugin protocol -------------------------------------------
    def get_plugin_apps(self):
        apps = {route: self._static(route) for route in _FILES}
        apps.update({"/list": self._route(self.listing), "/runs": self._route(self.runs), "/health": self._route(self.health),
                     "/cell": self._route(self.cell), "/attributions":
                     self._route(self.attributions), "/outputs": self._route(self.outputs),
                     "/dynamics": self._route(self.dynamics),
                     "/curve": self._route(self.curve),
                     "/compare": self._route(self.compare),
                     "/overlay": self._route(self.overlay),
                     "/attention": self._route(self.attention),
                     "/attention_weights": self._route(self.attention_weights),
                     "/thumbnail": self._thumbnail_app, "/image": self._image_app})
        return apps

    def is_active(self):
        if self._provider is None:
            return False
        try:
            return bool(self._explain_runs(tb_context.RequestContext(), ""))
        except Exception:  # noqa: BLE001 (a listing never breaks TensorBoard)
            return False

    def data_plugin_names(self):
        return ("scalars", "images", "text")

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Explain",
                                            disable_reload=False)

    # -- plumbing ----------------------------------------------------------------
    def _static(self, route):
        name, content_type = _FILES[route]

        @wrappers.Request.application
        def app(request):
            with open(os.path.join(_STATIC, name), "rb") as f:
                return http_util.Respond(request, f.read(), content_type)
        return app

    def _route(self, handler):
        @wrappers.Request.application
        def app(request):
            ctx = tb_context.from_environ(request.environ)
            eid = plugin_util.experiment_id(request.environ)
            try:
                body = handler(ctx, eid, request.args)
            except BadRequest as exc:
                return http_util.Respond(request, json.dumps({"error": str(exc)}),
                                         "application/json", code=400)
            except Exception as exc:  # noqa: BLE001 (the page shows why, not an HTML 500)
                logger.exception("tb_explain: %s failed", request.path)
                return http_util.Respond(request, json.dumps({
                    "error": f"{type(exc).__name__}: {exc}"}), "application/json", code=500)
            return http_util.Respond(request, json.dumps(body, allow_nan=False),
                                     "application/json")
        return app

    def _scalars_of(self, ctx, eid, runs=None, wanted=None, points=SCALAR_POINTS):
        """`{run: {tag: [[step, value], ...]}}` of scalar tags (`wanted`: a
        predicate on the tag), downsampled to `points` (the last point is
        always kept)."""
        listing = self._provider.list_scalars(
            ctx, experiment_id=eid, plugin_name="scalars",
            run_tag_filter=provider.RunTagFilter(runs=runs))
        chosen = {run: [t for t in series if wanted is None or wanted(t)]
                  for run, series in listing.items()}
        chosen = {run: t for run, t in chosen.items() if t}
        if not chosen:
            return {}
        all_tags = sorted({t for ts in chosen.values() for t in ts})
        data = self._provider.read_scalars(
            ctx, experiment_id=eid, plugin_name="scalars", downsample=points,
            run_tag_filter=provider.RunTagFilter(runs=list(chosen), tags=all_tags))
        return {run: {tag: [[d.step, _finite(d.value)] for d in points]
                      for tag, points in per.items() if tag in chosen[run]}
                for run, per in data.items()}

    def _texts(self, ctx, eid, run, wanted):
        """`{tag: [[step, text], ...]}` of the run's Text cards `wanted` picks."""
        return self._texts_of(ctx, eid, [run], wanted).get(run, {})

    def _texts_of(self, ctx, eid, runs, wanted):
        """`{run: {tag: [[step, text], ...]}}` of the Text cards `wanted`
        picks, of several runs in one read."""
        listing = self._provider.list_tensors(
            ctx, experiment_id=eid, plugin_name="text",
            run_tag_filter=provider.RunTagFilter(runs=runs))
        chosen = sorted({t for series in listing.values() for t in series if wanted(t)})
        if not chosen:
            return {}
        data = self._provider.read_tensors(
            ctx, experiment_id=eid, plugin_name="text", downsample=SCALAR_POINTS,
            run_tag_filter=provider.RunTagFilter(runs=runs, tags=chosen))
        return {run: {tag: [[d.step, reader._text(d.numpy)] for d in points]
                      for tag, points in per.items()} for run, per in data.items()}

    def _explain_runs(self, ctx, eid):
        """Names of the runs that hold tb_explain data (timing scalars: every
        tb_explain callback logs its seconds)."""
        listing = self._provider.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")
        return sorted(run for run, series in listing.items()
                      if any(t.startswith("timing/") for t in series))

    def _run(self, ctx, eid, args):
        run = args.get("run")
        if not run:
            raise BadRequest("missing parameter `run`")
        if run not in self._explain_runs(ctx, eid):
            raise BadRequest(f"unknown run {run!r} (no tb_explain data)")
        return run

    def _layers(self, ctx, eid, run):
        summary = self._texts(ctx, eid, run, lambda t: t == tags.MODEL_SUMMARY)
        points = summary.get(tags.MODEL_SUMMARY)
        return _layers_from_summary(points[-1][1]) if points else []

    def _blob_series(self, ctx, eid, run, wanted):
        listing = self._provider.list_blob_sequences(
            ctx, experiment_id=eid, plugin_name="images",
            run_tag_filter=provider.RunTagFilter(runs=[run])).get(run, {})
        return {tag: ts for tag, ts in listing.items() if wanted(tag)}

    def _image_steps(self, ctx, eid, run, tag_list):
        """`{tag: {step: images}}` of image tags (images per step, the samples)."""
        if not tag_list:
            return {}
        data = self._provider.read_blob_sequences(
            ctx, experiment_id=eid, plugin_name="images", downsample=IMAGE_STEPS,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tag_list)).get(run, {})
        return {tag: {d.step: max(0, len(d.values) - 2) for d in points}
                for tag, points in data.items()}

    # -- views ---------------------------------------------------------------------
    def listing(self, ctx, eid, args):
        """The tb_explain runs and the last step each logged: what the run
        picker needs, and what tells the page that new epochs arrived."""
        listing = self._provider.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")
        return {"runs": [{"run": run, "step": max(
                    (ts.max_step for t, ts in series.items() if t.startswith("timing/")),
                    default=0)}
                 for run, series in sorted(listing.items())
                 if any(t.startswith("timing/") for t in series)]}

    def runs(self, ctx, eid, args):
        """Every tb_explain run: hyperparameters, final metrics per dataset,
        number of alerts, worst layer by `signal`."""
        signal = args.get("signal", "gradient_norm")
        if signal not in tags.SIGNALS:
            raise BadRequest(f"unknown signal {signal!r}; one of {sorted(tags.SIGNALS)}")
        names = self._explain_runs(ctx, eid)
        hparams = self._hparams(ctx, eid, names)
        head = tags.SIGNALS[signal][1].split("{}")[0]
        # only the last point of each series: final metrics, the worst layer now
        scalars = self._scalars_of(ctx, eid, runs=names, points=1, wanted=lambda t: (
            t.startswith("outputs/") and t.count("/") == 2) or t.startswith(head))
        # every run's alerts and layer order in one read each (not one per run)
        texts = self._texts_of(ctx, eid, names, lambda t: t.endswith("/alerts") or t in (
            tags.SKIPPED, tags.MODEL_SUMMARY))
        completeness = self._scalars_of(ctx, eid, runs=names, wanted=lambda t: t.startswith(
            tags.COMPLETENESS))
        rows = []
        for run in names:
            per = scalars.get(run, {})
            metrics = {tag: {"step": pts[-1][0], "value": pts[-1][1]}
                       for tag, pts in per.items() if tag.startswith("outputs/") and pts}
            own = texts.get(run, {})
            alerts = self._alerts(ctx, eid, run, completeness.get(run, {}), texts={
                t: v for t, v in own.items() if t != tags.MODEL_SUMMARY})
            summary = own.get(tags.MODEL_SUMMARY)
            layers = (reader.layers_from_summary(summary[-1][1]) if summary else []) \
                if signal.startswith("gradient") else None
            rows.append({"run": run, "hparams": hparams.get(run, {}), "metrics": metrics,
                         "alerts": sum(a["count"] for a in alerts),
                         "worst": self._worst(per, signal, layers)})
        return {"runs": rows, "signal": signal, "signals": {
            k: v[0] for k, v in tags.SIGNALS.items()}}

    def _hparams(self, ctx, eid, runs):
        """`{run: {name: value}}` from HParams' session start info."""
        out = {}
        try:
            from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: PLC0415
        except ImportError:  # pragma: no cover
            return out
        listing = self._provider.list_tensors(
            ctx, experiment_id=eid, plugin_name="hparams",
            run_tag_filter=provider.RunTagFilter(runs=runs, tags=[tags.HPARAMS_SESSION]))
        for run, series in listing.items():
            meta = series.get(tags.HPARAMS_SESSION)
            if meta is None:
                continue
            data = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_content)
            values = {}
            for name, value in data.session_start_info.hparams.items():
                kind = value.WhichOneof("kind")
                values[name] = _finite(value.number_value) if kind == "number_value" else (
                    value.string_value if kind == "string_value" else value.bool_value)
            out[run] = values
        return out

    @staticmethod
    def _worst(per, signal, layers=None):
        """`{layer, tag, step, value}` of the worst layer (of `layers`, when
        given) at its last step: the smallest gradient norm (vanishing), else
        the largest value."""
        pattern = tags.SIGNALS[signal][1]
        head, tail = pattern.split("{}")
        found = []
        for tag, pts in per.items():
            if tag.startswith(head) and tag.endswith(tail) and pts and len(tag) > len(
                    head) + len(tail) and (not layers or tag[len(head):len(tag) - len(
                        tail)] in layers):
                value = pts[-1][1]
                if isinstance(value, str):  # NaN/Inf: the worst there is
                    value = math.inf
                found.append((value, tag, pts[-1]))
        if not found:
            return None
        value, tag, last = (min if signal == "gradient_norm" else max)(found)
        return {"layer": tag[len(head):len(tag) - len(tail)], "tag": tag, "step": last[0],
                "value": last[1]}

    def _alerts(self, ctx, eid, run, scalars=None, layers=(), texts=None):
        """Alerts of a run, by step: one `{kind, step, tag, text, count,
        layers}` per kind of a Text card at a step (`count` lines; `text`
        the first few), `layers` the names of `layers` its lines mention
        (`texts`: the run's alert cards, when already read)."""
        if texts is None:
            texts = self._texts(ctx, eid, run, lambda t: t.endswith("/alerts")
                                or t == tags.SKIPPED)
        known = set(layers)
        groups = {}
        for tag, points in texts.items():
            for step, text in points:
                for line in text.splitlines():
                    line = line.strip().lstrip("-").strip()
                    if not line or line.startswith("**Gradient alerts") or line.startswith(
                            "```") or line.startswith("Traceback"):
                        continue
                    kind = ("failed" if "failed to log" in line else "vanishing" if "vanishing"
                            in line else "exploding" if "exploding" in line else "nonfinite"
                            if "non-finite" in line or "NaN" in line else "skipped"
                            if tag == tags.SKIPPED else "alert")
                    if kind == "alert" and tag == tags.SKIPPED:
                        continue
                    group = groups.setdefault((step, kind, tag), {
                        "kind": kind, "step": step, "tag": tag, "lines": [], "layers": set()})
                    # shown as plain text (textContent): no Markdown emphasis or code marks
                    group["lines"].append(line.replace("**", "").replace("`", "")[:600])
                    if known:
                        group["layers"].update(known.intersection(_TOKEN.findall(line)))
        out = []
        for group in groups.values():
            lines = group.pop("lines")
            shown = "\n".join(lines[:ALERT_LINES]) + (
                f"\n… and {len(lines) - ALERT_LINES} more" if len(lines) > ALERT_LINES else "")
            out.append({**group, "text": shown, "count": len(lines),
                        "layers": [r for r in layers if r in group["layers"]]})
        if scalars is None:
            scalars = self._scalars_of(ctx, eid, runs=[run], wanted=lambda t: t.startswith(
                tags.COMPLETENESS)).get(run, {})
        for tag, pts in scalars.items():
            if tag.startswith(tags.COMPLETENESS):
                for step, value in pts:
                    if isinstance(value, str) or value > tags.COMPLETENESS_TOLERANCE:
                        out.append({"kind": "completeness", "step": step, "tag": tag,
                                    "text": f"completeness gap {value} above "
                                            f"{tags.COMPLETENESS_TOLERANCE}", "count": 1,
                                    "layers": []})
        return sorted(out, key=lambda a: (a["step"], a["kind"]))

    def health(self, ctx, eid, args):
        """Layers (rows, model order) by logged epochs (columns) of `signal`,
        with the alerts placed in their cells and as a timeline."""
        run = self._run(ctx, eid, args)
        signal = args.get("signal", "gradient_norm")
        if signal not in tags.SIGNALS:
            raise BadRequest(f"unknown signal {signal!r}; one of {sorted(tags.SIGNALS)}")
        label, pattern, scale = tags.SIGNALS[signal]
        head, tail = pattern.split("{}")
        order = self._layers(ctx, eid, run)
        # variables' gradient norms share the layers' pattern: read layers only
        only = set(order) if order and signal.startswith("gradient") else None
        per = self._scalars_of(ctx, eid, runs=[run], wanted=lambda t: (
            t.startswith(head) and t.endswith(tail) and len(t) > len(head) + len(tail) and (
                only is None or t[len(head):len(t) - len(tail)] in only))
            or t.startswith(tags.COMPLETENESS)).get(run, {})
        series = {tag[len(head):len(tag) - len(tail)]: pts for tag, pts in per.items()
                  if tag.startswith(head) and tag.endswith(tail)}
        rank = {path: i for i, path in enumerate(order)}

        def position(name):
            layer = name if name in rank else name.rsplit("/", 1)[0]
            return (rank.get(layer, len(rank)), name)

        rows = sorted(series, key=position)
        epochs = sorted({p[0] for pts in series.values() for p in pts})
        alerts = self._alerts(ctx, eid, run, {t: v for t, v in per.items()
                                              if t.startswith(tags.COMPLETENESS)}, rows)
        column = {step: k for k, step in enumerate(epochs)}

        def aligned(points):  # one value per epoch column, None where not logged
            values = [None] * len(epochs)
            for step, value in points:
                values[column[step]] = value
            return values

        return {"run": run, "signal": signal, "label": label, "scale": scale,
                "curves": self._curves(ctx, eid, run),
                "rows": [{"name": r, "tag": pattern.format(r),
                          "values": aligned(series[r])} for r in rows],
                "epochs": epochs, "alerts": alerts,
                "signals": {k: v[0] for k, v in tags.SIGNALS.items()}}

    def _curves(self, ctx, eid, run, tag=tags.EPOCH_LOSS):
        """`{"tag": tag, "train": [[step, value], ...], "validation": [...]}`:
        the training curves of `run` (`TrainingCurves`, or Keras's TensorBoard
        callback: the `train` and `validation` runs under it)."""
        subruns = {name: name if run == "." else f"{run}/{name}" for name in tags.CURVE_RUNS}
        per = self._scalars_of(ctx, eid, runs=list(subruns.values()), wanted=lambda t: t == tag)
        return {"tag": tag, **{name: per.get(full, {}).get(tag, [])
                               for name, full in subruns.items()}}

    def cell(self, ctx, eid, args):
        """A layer's activation image and histogram at an epoch."""
        run = self._run(ctx, eid, args)
        layer = args.get("layer", "")
        try:
            step = int(args.get("step", ""))
        except ValueError:
            raise BadRequest(f"`step` must be an int, got {args.get('step')!r}") from None
        image_tag = tags.ACTIVATION_IMAGE.format(layer)
        hist_tag = tags.ACTIVATION_HISTOGRAM.format(layer)
        images = self._image_steps(ctx, eid, run, list(self._blob_series(
            ctx, eid, run, lambda t: t == image_tag)))
        steps = sorted(images.get(image_tag, {}))
        listing = self._provider.list_tensors(
            ctx, experiment_id=eid, plugin_name="histograms",
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[hist_tag])).get(run, {})
        if not steps and hist_tag not in listing:
            raise BadRequest(f"no activations of layer {layer!r} in run {run!r}")
        histogram = None
        if hist_tag in listing:
            data = self._provider.read_tensors(
                ctx, experiment_id=eid, plugin_name="histograms", downsample=SCALAR_POINTS,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[hist_tag]))[run][hist_tag]
            at = [d for d in data if d.step == step]
            if at:
                histogram = [[_finite(v) for v in row] for row in at[0].numpy.tolist()]
        return {"run": run, "layer": layer, "step": step, "image_tag": image_tag,
                "image_steps": steps, "image": step in steps, "samples": images.get(
                    image_tag, {}).get(step, 0), "histogram": histogram,
                "histogram_tag": hist_tag}

    def attributions(self, ctx, eid, args):
        """Per probe sample, the input (where logged) and each method's map,
        at every logged epoch; the sanity check's verdict per method."""
        run = self._run(ctx, eid, args)
        series = self._blob_series(ctx, eid, run, lambda t: t.startswith("attributions/"))
        steps = self._image_steps(ctx, eid, run, sorted(series))
        columns, probes = [], {}
        for tag in sorted(series):
            parts = tag.split("/")
            if parts[-1] not in ("probe", "heatmap") or "comparison" in parts:
                continue
            named = parts[1] in _METHODS
            method = parts[1] if named else "integrated gradients"
            column = {"label": method, "input": "/".join(parts[2 if named else 1:-1]),
                      "tag": tag, "steps": sorted(steps.get(tag, {})),
                      "samples": max(steps.get(tag, {0: 0}).values(), default=0)}
            if parts[-1] == "heatmap":
                columns.append(column)
                continue
            # Every method logs the same probe: one input column per input,
            # the series with the most steps (the input does not change).
            column["label"] = "input"
            kept = probes.get(column["input"])
            if kept is None or len(column["steps"]) > len(kept["steps"]):
                probes[column["input"]] = column
        columns = sorted(probes.values(), key=lambda c: c["input"]) + sorted(
            columns, key=lambda c: (c["label"], c["input"]))
        sanity = self._scalars_of(ctx, eid, runs=[run], wanted=lambda t: t.startswith(
            "attributions/sanity/") and t.count("/") == 2).get(run, {})
        badges = [{"method": tag.split("/")[2], "tag": tag, "step": pts[-1][0],
                   "value": pts[-1][1], "passes": not isinstance(pts[-1][1], str)
                   and pts[-1][1] < tags.SANITY_PASS_BELOW}
                  for tag, pts in sorted(sanity.items()) if pts]
        features, feature_scalars = self._feature_tables(ctx, eid, run)
        texts = self._texts(ctx, eid, run, lambda t: (t.startswith(("attributions/",
                            "importance/")) and t.endswith("/ranking")) or (
                            t.startswith("rules/") and t.endswith("text")))
        epochs = sorted({s for c in columns for s in c["steps"]} | {
            p[0] for pts in feature_scalars.values() for p in pts} | {
            p[0] for pts in texts.values() for p in pts})
        return {"run": run, "columns": columns, "epochs": epochs, "sanity": badges,
                "samples": max((c["samples"] for c in columns), default=0),
                "features": features, "scalars": feature_scalars,
                "texts": [{"tag": t, "points": texts[t]} for t in sorted(texts)]}

    def _feature_tables(self, ctx, eid, run):
        """Per-feature scores of tables: each attribution method's mean
        |attribution| (`attributions/.../features/<name>`) and permutation
        importance (`importance/<name>`): `([{label, tags: {feature: tag}}],
        {tag: points})`."""
        per = self._scalars_of(ctx, eid, runs=[run], wanted=lambda t: (
            t.startswith("attributions/") and "/features/" in t) or (
            t.startswith("importance/") and not t.endswith("/ranking"))).get(run, {})
        sources = {}
        for tag in sorted(per):
            if tag.startswith("importance/"):
                label, feature = "permutation importance", tag[len("importance/"):]
                if "/" in feature:  # a multi-output model: importance/<output>/<feature>
                    output, feature = feature.split("/", 1)
                    label = f"permutation importance ({output})"
            else:
                head, feature = tag.split("/features/", 1)
                parts = head.split("/")
                named = len(parts) > 1 and parts[1] in _METHODS
                method = parts[1] if named else "integrated gradients"
                source = "/".join(parts[2 if named else 1:])
                label = f"{method} ({source})" if source else method
            sources.setdefault(label, {})[feature] = tag
        features = [{"label": label, "tags": sources[label]} for label in sorted(
            sources, key=lambda k: (k.startswith("permutation importance"), k))]
        return features, per

    def outputs(self, ctx, eid, args):
        """Per dataset, the metrics across epochs; the diagnostics; the
        confusion matrix and the most confident mistakes (image tags)."""
        run = self._run(ctx, eid, args)
        per = self._scalars_of(ctx, eid, runs=[run], wanted=lambda t: t.startswith(
            "outputs/") and t.count("/") == 2).get(run, {})
        datasets = {}
        for tag, pts in sorted(per.items()):
            _, dataset, metric = tag.split("/")
            datasets.setdefault(dataset, []).append({"metric": metric, "tag": tag,
                                                     "points": pts})
        texts = self._texts(ctx, eid, run, lambda t: t == tags.DIAGNOSTICS or (
            t.startswith("outputs/") and t.endswith("/mistakes")))  # tables' mistakes: text
        images = self._blob_series(ctx, eid, run, lambda t: t.startswith("outputs/") and (
            t.endswith("/confusion_matrix") or t.endswith("/mistakes")))
        image_steps = self._image_steps(ctx, eid, run, sorted(images))
        epochs = sorted({p[0] for pts in per.values() for p in pts})
        return {"run": run, "datasets": [{"name": d, "metrics": m}
                                         for d, m in datasets.items()],
                "epochs": epochs, "diagnostics": texts.get(tags.DIAGNOSTICS, []),
                "images": [{"tag": t, "steps": sorted(image_steps.get(t, {}))}
                           for t in sorted(images)],
                "mistakes": [{"tag": t, "points": texts[t]} for t in sorted(texts)
                             if t != tags.DIAGNOSTICS]}

    def _own_tensors(self, ctx, eid, run, wanted):
        """`({tag: info}, {tag: [(step, array)]})` of tb_explain's own tensors
        `wanted` picks: their parsed metadata (`summary.metadata`) and data,
        read through `reader.ProviderSource`."""
        source = reader.ProviderSource(self._provider, ctx, eid, run)
        chosen = {t: info for t, info in source.tensor_tags().items() if wanted(t)}
        return chosen, source.tensors(list(chosen)) if chosen else {}

    def dynamics(self, ctx, eid, args):
        """The Data view: per tracked example its dataset, index, label,
        predicted class (last logged epoch), likely true label, every score,
        and its inputs as text (tables, tokens) or whether a thumbnail exists
        (images); the noise matrix as counts (given x likely label). The
        probability curves come one example at a time (`curve`): every
        example's would be 3 MB at 10,000 examples x 50 epochs."""
        import numpy as np  # noqa: PLC0415 (the module stays light for TensorBoard's loader)

        from tb_explain.compute import dynamics  # noqa: PLC0415

        run = self._run(ctx, eid, args)
        source = reader.ProviderSource(self._provider, ctx, eid, run)
        result = reader.dynamics(source)
        if result is None:
            return {"run": run, "examples": 0}
        info = source.tensor_tags(tags.DYNAMICS_EXAMPLES)[tags.DYNAMICS_EXAMPLES]
        epochs = result.epochs.tolist()
        listed = source.tensor_tags("dynamics/")
        extra = source.tensors([tags.DYNAMICS_INPUTS] if tags.DYNAMICS_INPUTS in listed else [])
        positions = {name: i for i, name in enumerate(info["datasets"])}

        def rounded(values, decimals=5):
            return [_finite(v) for v in np.round(np.asarray(values, np.float64), decimals)]
        body = {"run": run, "examples": len(result), "epochs": epochs,
                "datasets": info["datasets"], "class_names": info["class_names"],
                "dataset": [positions[d] for d in result.dataset], "index": result.index.tolist(),
                "label": result.labels.tolist(), "predicted": result.predicted[-1].tolist(),
                "likely": result.likely_label.tolist(),
                "noise_counts": np.rint(result.noise_matrix * len(result)).astype(int).tolist(),
                "scores": {name: rounded(value) for name, value in result.scores().items()},
                "regions": list(dynamics.REGIONS), "region": result.region.tolist(),
                "thresholds": {"variability": dynamics.AMBIGUOUS_VARIABILITY,
                               "confidence": dynamics.EASY_CONFIDENCE},
                "thumbnails": tags.DYNAMICS_THUMBNAILS in listed}
        if tags.DYNAMICS_INPUTS in extra:
            body["inputs"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                              for v in extra[tags.DYNAMICS_INPUTS][-1][1].reshape(-1)]
        return body

    def curve(self, ctx, eid, args):
        """One tracked example's given-label probability at each logged
        epoch (`i`: its position), for the Data view's picked example."""
        import numpy as np  # noqa: PLC0415

        run = self._run(ctx, eid, args)
        result = reader.dynamics(reader.ProviderSource(self._provider, ctx, eid, run))
        if result is None:
            raise BadRequest(f"run {run!r} has no training dynamics")
        try:
            i = int(args.get("i", ""))
        except ValueError:
            raise BadRequest(f"`i` must be an integer, got {args.get('i')!r}") from None
        if not 0 <= i < len(result):
            raise BadRequest(f"`i` must be in [0, {len(result)}), got {i}")
        return {"run": run, "i": i, "epochs": result.epochs.tolist(),
                "probability": [_finite(v) for v in np.round(result.probability[:, i], 4)]}

    def compare(self, ctx, eid, args):
        """The Compare view's two-run part: `tbx.compare`'s numbers for runs
        `a` and `b` (default `a`: two of its epochs) at `epoch` / `epoch_b`,
        as `Comparison.to_json()`; with `examples`, per dataset the first rows
        each run alone gets right, with both predictions (and the Data view's
        thumbnail position where the run tracked that row); with
        `attribution` (a tag of `attributions`) and `sample`, both runs' maps
        of that probe sample."""
        import numpy as np  # noqa: PLC0415 (the module stays light for TensorBoard's loader)

        from tb_explain import comparison  # noqa: PLC0415

        known = self._explain_runs(ctx, eid)
        a = args.get("a")
        if not a:
            raise BadRequest("missing parameter `a`")
        b = args.get("b") or a
        for name in (a, b):
            if name not in known:
                raise BadRequest(f"unknown run {name!r} (no tb_explain data)")
        epochs = {}
        for key in ("epoch", "epoch_b"):
            value = args.get(key)
            try:
                epochs[key] = None if value in (None, "") else int(value)
            except ValueError:
                raise BadRequest(f"`{key}` must be an int, got {value!r}") from None
        source_a = reader.ProviderSource(self._provider, ctx, eid, a)
        source_b = source_a if b == a else reader.ProviderSource(self._provider, ctx, eid, b)
        try:
            result = comparison.from_sources(source_a, source_b, same=a == b, names=(a, b),
                                          **epochs)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        body = result.to_json()
        tracked = reader.tracked(source_a) if tags.DYNAMICS_THUMBNAILS in source_a.tensor_tags(
            "dynamics/") else {}
        body["examples"] = {name: self._disagreeing(name, d, tracked)
                            for name, d in result.disagreement.items()}
        tag = args.get("attribution")
        if tag:
            if tag not in result.attributions:
                raise BadRequest(f"no attribution {tag!r} in both runs at these epochs (compared:"
                                 f" {sorted(result.attributions)})")
            maps = {}
            for key, source, epoch in (("a", source_a, result.epoch),
                                       ("b", source_b, result.epoch_b)):
                maps[key] = reader.attributions(source, epoch, [tag])[tag][0]
            try:
                sample = int(args.get("sample", "0"))
            except ValueError:
                raise BadRequest(f"`sample` must be an int, got {args.get('sample')!r}") from None
            if not 0 <= sample < len(maps["a"]):
                raise BadRequest(f"`sample` must be in [0, {len(maps['a'])}), got {sample}")
            body["attribution_maps"] = {
                "tag": tag, "sample": sample, "samples": len(maps["a"]),
                "spearman": body["attributions"][tag][sample],
                **{k: [[_finite(v) for v in row] for row in np.atleast_2d(m[sample]).tolist()]
                   for k, m in maps.items()}}
        return body

    #: Runs the Compare view overlays at most.
    OVERLAY_RUNS = 50
    #: Headline metrics overlaid per dataset (`outputs/<dataset>/<metric>`).
    OVERLAY_METRICS = ("accuracy", "loss", "macro_f1", "mae")

    def overlay(self, ctx, eid, args):
        """The Compare view's many-run part, for the runs `run` (repeated;
        default: every tb_explain run, at most `OVERLAY_RUNS`): each one's
        hyperparameters, training curves (`epoch_loss`, train and
        validation) and headline metrics per dataset, every epoch; the weight
        histogram tags any of them logged (with how many runs did); with
        `tag` (and `step`, default the last step every run that logged the
        tag logged), that histogram of each run that has it at `step`."""
        known = self._explain_runs(ctx, eid)
        runs = args.getlist("run") if hasattr(args, "getlist") else []
        runs = runs or known[-self.OVERLAY_RUNS:]
        if len(runs) > self.OVERLAY_RUNS:
            raise BadRequest(f"at most {self.OVERLAY_RUNS} runs at once, got {len(runs)}")
        for name in runs:
            if name not in known:
                raise BadRequest(f"unknown run {name!r} (no tb_explain data)")
        subruns = {run: {c: c if run == "." else f"{run}/{c}" for c in tags.CURVE_RUNS}
                   for run in runs}
        curves = self._scalars_of(ctx, eid, runs=[s for per in subruns.values()
                                                  for s in per.values()],
                                  wanted=lambda t: t == tags.EPOCH_LOSS)
        metrics = self._scalars_of(ctx, eid, runs=runs, wanted=lambda t: t.startswith(
            "outputs/") and t.count("/") == 2 and t.rsplit("/", 1)[1] in self.OVERLAY_METRICS)
        by_tag = {}
        for run, per in metrics.items():
            for tag, points in per.items():
                by_tag.setdefault(tag, {})[run] = points
        listing = self._provider.list_tensors(
            ctx, experiment_id=eid, plugin_name="histograms",
            run_tag_filter=provider.RunTagFilter(runs=runs))
        logged = {}  # weight histogram tag -> the runs that logged it
        for run in runs:
            for tag in listing.get(run, {}):
                if tag.startswith("weights/"):
                    logged.setdefault(tag, []).append(run)
        body = {"runs": runs, "hparams": self._hparams(ctx, eid, runs),
                "curves": {run: {c: curves.get(sub, {}).get(tags.EPOCH_LOSS, [])
                                 for c, sub in subruns[run].items()} for run in runs},
                "metrics": dict(sorted(by_tag.items())),
                "histograms": {tag: len(have) for tag, have in sorted(logged.items())}}
        tag = args.get("tag")
        if tag:
            if tag not in logged:
                raise BadRequest(f"unknown histogram tag {tag!r}: no chosen run logged it")
            have = logged[tag]
            data = self._provider.read_tensors(
                ctx, experiment_id=eid, plugin_name="histograms", downsample=SCALAR_POINTS,
                run_tag_filter=provider.RunTagFilter(runs=have, tags=[tag]))
            per = {run: {d.step: d.numpy for d in data.get(run, {}).get(tag, [])}
                   for run in have}
            every = sorted(set().union(*per.values()))
            shared = set.intersection(*(set(v) for v in per.values())) if per else set()
            step = args.get("step")
            try:
                step = (max(shared or every) if step in (None, "") else int(step))
            except (TypeError, ValueError):
                raise BadRequest(f"`step` must be an int, got {step!r}") from None
            if step not in every:
                raise BadRequest(f"no step {step} of {tag!r} (steps {every})")
            body["histogram"] = {"tag": tag, "step": step, "steps": every, "runs": {
                run: [[_finite(v) for v in row] for row in values[step].tolist()]
                for run, values in per.items() if step in values}}
        return body

    #: Rows per side the Compare view's disagreement table lists.
    DISAGREEING_ROWS = 100

    def _disagreeing(self, dataset, d, tracked):
        """Rows of one dataset's disagreement for the table: index, side,
        both predictions (class names), and the position of A's thumbnail
        of that row (`tracked`: `(dataset, row) -> position`) or None."""
        names = d.class_names

        def label(c):
            return names[c] if 0 <= c < len(names) else str(c)

        rows = []
        for side, indices in (("a_only", d.a_only), ("b_only", d.b_only)):
            for i in indices[:self.DISAGREEING_ROWS]:
                rows.append({"i": int(i), "side": side, "a": label(int(d.predicted_a[i])),
                             "b": label(int(d.predicted_b[i])),
                             "thumbnail": tracked.get((dataset, int(i)))})
        return rows

    def attention(self, ctx, eid, args):
        """The Attention view: the attention layers (run order, from their
        entropy series), each one's entropy per epoch, the epochs whose
        weights exist, and the probe's tokens (privacy "off")."""
        run = self._run(ctx, eid, args)
        head, tail = tags.ATTENTION_ENTROPY.split("{}")
        per = self._scalars_of(ctx, eid, runs=[run], wanted=lambda t: t.startswith(head)
                               and t.endswith(tail)).get(run, {})
        w_head, w_tail = tags.ATTENTION_WEIGHTS.split("{}")
        _, data = self._own_tensors(ctx, eid, run, lambda t: t == tags.ATTENTION_TOKENS or (
            t.startswith(w_head) and t.endswith(w_tail)))
        steps = {t[len(w_head):-len(w_tail)]: [step for step, _ in points]
                 for t, points in data.items() if t != tags.ATTENTION_TOKENS}
        tokens = None
        if tags.ATTENTION_TOKENS in data:
            tokens = [[v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                       for v in row] for row in data[tags.ATTENTION_TOKENS][-1][1]]
        layers = [tag[len(head):-len(tail)] for tag in per]
        order = self._layers(ctx, eid, run)
        rank = {p: i for i, p in enumerate(order)}
        layers.sort(key=lambda p: (rank.get(p, rank.get(p.rsplit("/", 1)[0], len(rank))), p))
        return {"run": run, "layers": [{"path": p, "tag": tags.ATTENTION_ENTROPY.format(p),
                                        "entropy": per[tags.ATTENTION_ENTROPY.format(p)],
                                        "steps": sorted(steps.get(p, []))} for p in layers],
                "tokens": tokens}

    def attention_weights(self, ctx, eid, args):
        """One layer's logged weights at one epoch: `(n, heads, Tq, Tk)` uint8
        (each map scaled by its maximum), with the block factor."""
        run = self._run(ctx, eid, args)
        layer = args.get("layer", "")
        try:
            step = int(args.get("step", ""))
        except ValueError:
            raise BadRequest("`step` must be an int") from None
        tag = tags.ATTENTION_WEIGHTS.format(layer)
        listing, data = self._own_tensors(ctx, eid, run, lambda t: t == tag)
        data = data.get(tag)
        if not data:
            raise BadRequest(f"no attention weights of layer {layer!r} in run {run!r}")
        at = [array for logged, array in data if logged == step]
        if not at:
            raise BadRequest(f"no step {step} of {tag!r} (steps {[d for d, _ in data]})")
        info = listing[tag]
        return {"run": run, "layer": layer, "step": step, "weights": at[-1].tolist(),
                **{k: info.get(k) for k in ("factor", "query_length", "key_length")}}

    @wrappers.Request.application
    def _thumbnail_app(self, request):
        """One tracked example's thumbnail (PNG), by its position `i`."""
        ctx = tb_context.from_environ(request.environ)
        eid = plugin_util.experiment_id(request.environ)
        try:
            run = self._run(ctx, eid, request.args)
            try:
                i = int(request.args.get("i", ""))
            except ValueError:
                raise BadRequest("`i` must be an int") from None
            _, data = self._own_tensors(ctx, eid, run, lambda t: t == tags.DYNAMICS_THUMBNAILS)
            if not data:
                raise BadRequest(f"run {run!r} holds no thumbnails (privacy, or no image input)")
            last_step, last = data[tags.DYNAMICS_THUMBNAILS][-1]
            key = (run, last_step)
            if key not in self._thumbnails:
                self._thumbnails = {key: last}
            tiles = self._thumbnails[key]
            if not 0 <= i < len(tiles):
                raise BadRequest(f"`i` must be in [0, {len(tiles)}), got {i}")
            import io  # noqa: PLC0415

            from PIL import Image  # noqa: PLC0415

            buffer = io.BytesIO()
            Image.fromarray(tiles[i]).save(buffer, format="PNG")
        except BadRequest as exc:
            return http_util.Respond(request, json.dumps({"error": str(exc)}),
                                     "application/json", code=400)
        return http_util.Respond(request, buffer.getvalue(), "image/png")

    # -- blobs -----------------------------------------------------------------------
    @wrappers.Request.application
    def _image_app(self, request):
        ctx = tb_context.from_environ(request.environ)
        eid = plugin_util.experiment_id(request.environ)
        args = request.args
        try:
            run = self._run(ctx, eid, args)
            tag = args.get("tag", "")
            try:
                step, index = int(args.get("step", "")), int(args.get("index", "0"))
            except ValueError:
                raise BadRequest("`step` and `index` must be ints") from None
            if not self._blob_series(ctx, eid, run, lambda t: t == tag):
                raise BadRequest(f"unknown image tag {tag!r} in run {run!r}")
            data = self._provider.read_blob_sequences(
                ctx, experiment_id=eid, plugin_name="images", downsample=IMAGE_STEPS,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]))[run][tag]
            at = [d for d in data if d.step == step]
            if not at:
                raise BadRequest(f"no step {step} of {tag!r} (steps "
                                 f"{[d.step for d in data]})")
            blobs = at[0].values[2:]  # width, height, then one PNG per sample
            if not 0 <= index < len(blobs):
                raise BadRequest(f"`index` must be in [0, {len(blobs)}), got {index}")
            png = self._provider.read_blob(ctx, blob_key=blobs[index].blob_key)
        except BadRequest as exc:
            return http_util.Respond(request, json.dumps({"error": str(exc)}),
                                     "application/json", code=400)
        return http_util.Respond(request, png, "image/png")
