"""Predictions callback: what the model outputs on whole named datasets."""

import logging

import keras
import numpy as np

from tb_explain import _validate, backend, datasets as streams, tags
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import metrics, predictions, similarity
from tb_explain.compute.attribution import _cores, _inputs, _outputs
from tb_explain.render import charts, images
from tb_explain.summary import metadata, ops

#: Thresholds of the PR curves (TensorBoard's default).
PR_THRESHOLDS = 201
#: Feature values shown per mistake in the Markdown table of a tabular input.
MAX_TABLE_FEATURES = 12
#: Inference-mode loss over batch-statistics loss above which BatchNormalization
#: lag is reported (a fitted model with caught-up statistics gives about 1).
BATCHNORM_LAG_FACTOR = 2.0


class Predictions(ExplainCallback):
    """Logs what the model outputs on whole datasets: metrics, where it fails.

    At each logging event every dataset is read whole, in batches of
    `batch_size`, through one compiled function (outputs and compiled loss,
    `training=False`); per sample only the scores that the curves need are
    kept, and the inputs of the current `max_mistakes` most confident
    mistakes. The task of each output is detected from its layer and labels
    (or given as `task=`):

    - `multiclass`: >= 2 units, softmax or logits; integer or one-hot labels;
    - `binary`: 1 unit, sigmoid or a logit (a binary cross-entropy loss);
    - `multilabel`: >= 2 sigmoid units, a 0/1 label matrix;
    - `regression`: anything else.

    Logits (a linear output layer, or a loss with `from_logits=True`) go
    through softmax (multiclass) or sigmoid first, so every metric reads
    probabilities; the predicted class is the argmax (multiclass) or
    probability >= 0.5.

    Tags, for dataset `<d>` and class `<c>` (from `class_names`, else the
    index); for multi-output models the output name follows `<d>`:

    - classification: `outputs/<d>/accuracy` (subset accuracy for
      multilabel), `outputs/<d>/loss` (the compiled loss on the whole
      dataset, as `model.evaluate` gives it), `outputs/<d>/macro_f1` (over
      all the model's classes), `outputs/<d>/ece` (expected calibration error
      of the top-class probability, `calibration_bins` bins of equal width),
      and per class `precision/<c>`, `recall/<c>`, `f1/<c>` (one-vs-rest, 0
      where undefined) and `roc_auc/<c>` (exact; not written when the
      dataset lacks the class or holds only it); binary outputs use the same
      names without `/<c>`;
    - `outputs/<d>/confusion` (Text: Markdown counts, a row per true class)
      and `outputs/<d>/confusion_matrix` (image, colour by row-normalized
      rate);
    - `outputs/<d>/pr_curve/<c>` (binary: `outputs/<d>/pr_curve`) in the PR
      Curves dashboard;
    - `outputs/<d>/calibration` (reliability diagram) and
      `outputs/<d>/confidence` (histogram of the top-class probability);
    - `outputs/<d>/mistakes`: the most confident errors with true and
      predicted label and confidence: an image grid for image inputs, else a
      Markdown table of feature values (or tokens, through `vocabulary`);
      never written with `log_inputs=False`;
    - regression: `outputs/<d>/loss`, `mae`, `rmse`, `r2` (averaged over
      targets, as scikit-learn does), `outputs/<d>/residuals` (histogram of
      predicted - true) and `outputs/<d>/predicted_vs_true` (2-D density
      with the diagonal);
    - `outputs/<d>/predicted/<epoch>` (a tb_explain tensor, one tag per
      epoch; classification): per example, the predicted class (-1 for
      multilabel outputs) and whether the prediction is right, int16
      `(2, n)` (int32 past 32,767 classes), with a fingerprint of the dataset's inputs and labels:
      what `tbx.compare` needs to say which examples two runs disagree on
      (not written at `privacy="strict"`);
    - `outputs/diagnostics` (Text): every dataset's headline metrics side by
      side with their gap to the first dataset, and the classes with the
      lowest recall per dataset;
    - for a model with BatchNormalization layers and a compiled loss,
      `outputs/batchnorm_lag` (scalar): on the first batch of the first
      dataset, the loss in inference mode (moving statistics) over the loss
      with each BatchNormalization layer normalizing by the batch's own
      statistics, as in training; above `BATCHNORM_LAG_FACTOR`, an alert
      once per fit (`outputs/alerts` and a log warning) naming the layers
      and their momentum: the moving statistics lag the weights, and every
      inference-mode view (these metrics, training dynamics, activations)
      shows a worse model than training does until they catch up.

    Args:
        log_dir: Directory of the run (created if missing).
        data: One labelled dataset (`(x, y)`, `(x, y, sample_weight)`, or a
            stream of such batches: `keras.utils.PyDataset`, `tf.data.Dataset`,
            PyTorch `DataLoader`, grain dataset, read in its own batches),
            named `eval`, or a dict `{name: dataset}`; the first is the
            reference of the diagnostics.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        class_names: Class names (a list, or a dict of lists per output).
        output: For multi-output models, the output to report (default:
            every output).
        task: `"auto"`, `"multiclass"`, `"binary"`, `"multilabel"` or
            `"regression"`.
        calibration_bins: Bins of the reliability diagram and ECE (int >= 1).
        max_mistakes: Confident mistakes shown per dataset (int >= 0).
        batch_size: Samples per forward pass for array datasets (int >= 1).
        log_inputs: Whether raw inputs may be written (the mistakes); False
            is `privacy="inputs"`.
        privacy: `"off"` writes the mistakes; `"inputs"` and `"strict"`
            write no input (no mistakes gallery or table); `"strict"` writes
            no per-example result either (`outputs/<d>/predicted`); every
            other tag is an aggregate over the dataset and stays.
        vocabulary: Token strings by id, for token inputs in the mistakes.

    Example:

    ```python
    model.fit(x, y, epochs=20, validation_data=(x_val, y_val), callbacks=[
        tbx.Predictions("runs/exp1", data={"train": (x, y), "val": (x_val, y_val),
                                           "shifted": (x_shift, y_shift)},
                        class_names=names, freq=5)])
    ```
    """

    tag_prefix = "outputs"
    needs_call = True

    def __init__(self, log_dir, data, freq=1, class_names=None, output=None, task="auto",
                 calibration_bins=15, max_mistakes=8, batch_size=256, log_inputs=True,
                 vocabulary=None, privacy="off"):
        super().__init__(log_dir, freq)
        datasets = _validate.check_datasets(
            data, "eval", "a labelled dataset `(x, y)` or a dict {name: dataset}")
        self.datasets = {name: self._check_dataset(name, dataset)
                         for name, dataset in datasets.items()}
        self.class_names = class_names
        self.output = output
        self.task = _validate.check_choice("task", task, predictions.TASKS)
        self.calibration_bins = _validate.check_int("calibration_bins", calibration_bins, 1)
        self.max_mistakes = _validate.check_int("max_mistakes", max_mistakes, 0)
        self.batch_size = _validate.check_int("batch_size", batch_size, 1)
        self.log_inputs = _validate.check_bool("log_inputs", log_inputs)
        self.privacy, _ = _validate.check_privacy(privacy, log_inputs)
        self.vocabulary = vocabulary
        self._outputs = None
        #: Dataset name -> a `TrainingDynamics` fed by this callback's pass
        #: over that dataset (`explain()` sets it: one pass feeds both).
        self.feeds = {}

    @staticmethod
    def _check_dataset(name, dataset):
        if streams.is_stream(dataset):
            return streams.check_stream(dataset, f"`data` dataset {name!r}")
        if not isinstance(dataset, tuple):
            unlabelled = hasattr(dataset, "shape") or isinstance(dataset, (list, dict))
            raise (ValueError if unlabelled else TypeError)(
                f"`data` dataset {name!r} must be (x, y), (x, y, sample_weight) or a stream of "
                f"such batches ({streams.accepted()}), got {type(dataset).__name__}: without "
                f"labels there is nothing to score.")
        try:
            x, y, weights = predictions.split(dataset)
        except ValueError as exc:
            raise ValueError(f"`data` dataset {name!r}: {exc}.") from None
        if y is None:
            raise ValueError(f"`data` dataset {name!r} has no labels: pass (x, y).")
        lengths = {len(a) for a in keras.tree.flatten((x, y, weights)) if a is not None}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"`data` dataset {name!r}: x, y and sample_weight must share one "
                             f"non-zero number of samples, got {sorted(lengths)}.")
        return dataset

    # -- setup ------------------------------------------------------------------------
    def _names_for(self, key, units):
        names = self.class_names
        if isinstance(names, dict):
            names = names.get(key)
        if names is None:
            return [str(i) for i in range(units)]
        return [str(n) for n in names]

    def prepare(self):
        model = self.model
        first = {}
        for name, data in self.datasets.items():
            try:
                first[name] = predictions.first_batch(data, self.batch_size)
            except ValueError:
                raise ValueError(f"`data` dataset {name!r} is empty.") from None
            if first[name][1] is None:
                raise ValueError(f"`data` dataset {name!r} has no labels: its elements must be "
                                 f"(x, y) or (x, y, sample_weight).")
        name0, (x0, y0, _) = next(iter(first.items()))
        try:  # the outputs' structure and units (labels are checked before any loss)
            outs = _cores.forward(model)(x0)
        except (ValueError, TypeError, *backend.model_errors()) as exc:
            raise self.probe_failed(exc) from exc
        keys = _outputs.output_names(outs)
        if self.output is not None:
            if self.output not in keys:
                raise ValueError(f"`output` must be one of {keys}, got {self.output!r}.")
            keys = [self.output]
        self._outputs = {}
        for key in keys:
            shape = tuple(_outputs.raw(outs, key).shape)
            units = int(shape[-1] if len(shape) == 3 else shape[1])
            labels = predictions.to_numpy(predictions.part_for(y0, key))
            if labels is None:
                raise ValueError(f"`data` dataset {name0!r} has no labels for output {key!r}.")
            if len(shape) == 3 and self.task in ("auto", "sequence"):
                # (n, T, V) scores: a token per position (language models,
                # sequence labelling)
                task = "sequence"
                logits = predictions.loss_from_logits(model, key)
                if logits is None:
                    logits = predictions.output_activation(model, key) in ("linear", None)
            else:
                task, logits = predictions.task_of(model, key, units, labels, self.task)
            classes = 2 if task == "binary" else units
            names = self._names_for(key, classes)
            if task != "regression" and len(names) != classes:
                raise ValueError(
                    f"`class_names` has {len(names)} names but output {key!r} has {classes} "
                    f"classes ({task}).")
            self._outputs[key] = {"task": task, "units": units, "logits": logits,
                                  "names": names}
            for name, (_, y, _) in first.items():
                self._check_labels(name, key, predictions.to_numpy(predictions.part_for(y, key)))
            for name, data in self.datasets.items():  # arrays: every label, here
                if not streams.is_stream(data):
                    self._check_labels(name, key, np.asarray(predictions.part_for(predictions.split(data)[1], key)))
        self._step = predictions.evaluation_step(model)
        self._norms = predictions.batch_norms(model) if predictions.has_loss(model) else []
        self._lag_reported = False
        self._prints = {}  # dataset -> fingerprint of its inputs and labels (first pass)

    def _check_labels(self, dataset, key, labels):
        info = self._outputs[key]
        task, units = info["task"], info["units"]
        where = f"`data` dataset {dataset!r}" + ("" if key is None else f", output {key!r}")
        labels = np.asarray(labels)
        flat = labels.reshape(len(labels), -1)
        if task == "sequence":
            if labels.ndim != 2 or labels.dtype.kind not in "iu" and not np.all(
                    labels == np.round(labels)):
                raise ValueError(f"{where}: the output scores {units} classes per position "
                                 f"(n, T, {units}); labels must be token ids (n, T), got shape "
                                 f"{labels.shape} of {labels.dtype}.")
            if labels.size and (labels.min() < 0 or labels.max() >= units):
                raise ValueError(f"{where}: labels must be token ids in [0, {units}), got values "
                                 f"from {labels.min()} to {labels.max()}.")
            return
        if task == "multiclass":
            if flat.shape[1] == units and units > 1:
                if not (np.isin(flat, (0, 1)).all() and np.all(flat.sum(axis=1) == 1)):
                    raise ValueError(
                        f"{where}: labels are a {flat.shape[1]}-column matrix but not one-hot "
                        f"(one 1 per row), and the output is multiclass; for several labels per "
                        f"sample use sigmoid outputs (task='multilabel').")
            elif flat.shape[1] != 1:
                raise ValueError(f"{where}: labels of shape {labels.shape[1:]} per sample fit "
                                 f"neither class ids nor one-hot rows of {units} classes.")
            elif flat.size and (flat.min() < 0 or flat.max() >= units
                                or not np.all(flat == np.round(flat))):
                raise ValueError(f"{where}: labels must be class ids in [0, {units}), got values "
                                 f"from {flat.min()} to {flat.max()}.")
        elif task in ("binary", "multilabel"):
            expected = 1 if task == "binary" else units
            if flat.shape[1] != expected or not np.isin(flat, (0, 1)).all():
                raise ValueError(
                    f"{where}: {task} labels must be 0/1 with {expected} column(s), got shape "
                    f"{labels.shape[1:]} per sample and values {np.unique(flat)[:6]}"
                    + (" (class ids? use a softmax output for one class per sample)"
                       if task == "multilabel" and flat.shape[1] == 1 else "") + ".")

    # -- one event --------------------------------------------------------------------
    def log_event(self, epoch):
        headline = {}
        for dname, data in self.datasets.items():
            scores = {key: [] for key in self._outputs}
            labels = {key: [] for key in self._outputs}
            keep = self.max_mistakes if self.privacy == "off" else 0
            buffers = {key: predictions.MistakeBuffer(keep)
                       for key in self._outputs}
            loss_sum, count = 0.0, 0
            feed = self._feed(dname)
            step = self._step if feed is None else predictions.evaluation_step(
                self.model, capture=feed.capture_layer)
            fed = []
            fingerprint = None if dname in self._prints else similarity.Fingerprint()
            for x, y, weights in predictions.batches(data, self.batch_size):
                if fingerprint is not None:
                    fingerprint.add((predictions.to_numpy(x), predictions.to_numpy(y)))
                outs, loss, *captured = step(x, y, weights)
                if feed is not None:
                    fed.append((keras.tree.map_structure(backend.to_numpy, outs),
                                backend.to_numpy(captured[0]) if captured else None,
                                predictions.to_numpy(y)))
                n = len(keras.tree.flatten(x)[0])
                loss_sum += float(loss) * n
                count += n
                for key, info in self._outputs.items():
                    if info["task"] == "sequence":
                        scores[key].append(predictions.token_sums(
                            backend.to_numpy(_outputs.raw(outs, key)), info["logits"],
                            predictions.to_numpy(predictions.part_for(y, key)),
                            predictions.token_weights(x, y if weights is None else weights,
                                                      key, weights is not None)))
                        continue
                    selected = backend.to_numpy(_outputs.select(outs, key))
                    s = predictions.probabilities(info["task"], selected,
                                                  info["logits"])
                    t = predictions.to_numpy(predictions.part_for(y, key))
                    scores[key].append(s)
                    labels[key].append(t)
                    if info["task"] != "regression":
                        self._offer_mistakes(buffers[key], info, s, t, x)
            if fingerprint is not None:
                self._prints[dname] = fingerprint.hexdigest()
            if feed is not None:
                join = lambda *parts: np.concatenate(parts)  # noqa: E731
                feed.shared[epoch] = (
                    keras.tree.map_structure(join, *[o for o, _, _ in fed]),
                    None if fed[0][1] is None else np.concatenate([f for _, f, _ in fed]),
                    keras.tree.map_structure(join, *[t for _, _, t in fed]))
            for key, info in self._outputs.items():
                tag = f"outputs/{dname}" + ("" if len(self._outputs) == 1 else f"/{key}")
                if info["task"] == "sequence":
                    headline[(dname, key)] = self._log_sequence(tag, np.sum(scores[key], axis=0),
                                                                epoch)
                    continue
                s, t = np.concatenate(scores[key]), np.concatenate(labels[key])
                if info["task"] == "regression":
                    values = self._log_regression(tag, s, t, epoch)
                else:
                    values = self._log_classification(tag, info, s, t, buffers[key], epoch)
                    if self.privacy != "strict":
                        self._log_predicted(tag, info, s, t, self._prints[dname], epoch)
                headline[(dname, key)] = values
            with_loss = predictions.has_loss(self.model)
            loss = loss_sum / max(count, 1) if with_loss else np.nan
            if with_loss:  # no compiled loss: no loss card
                ops.write_scalar(f"outputs/{dname}/loss", loss, epoch)
            for key in self._outputs:
                headline[(dname, key)]["loss"] = loss
        self._log_diagnostics(headline, epoch)
        if self._norms:
            self._log_batchnorm_lag(epoch)

    def _log_batchnorm_lag(self, epoch):
        """`outputs/batchnorm_lag`, and the alert once per fit (see the class docstring)."""
        name, data = next(iter(self.datasets.items()))
        x, y, weights = predictions.first_batch(data, self.batch_size)
        inference = float(self._step(x, y, weights)[1])
        batch = float(predictions.evaluation_step(self.model, batch_statistics=True)(
            x, y, weights)[1])
        ratio = inference / batch if batch > 0 else float("nan")
        ops.write_scalar("outputs/batchnorm_lag", ratio, epoch, description=(
            "Loss in inference mode (BatchNormalization's moving statistics) over the loss "
            "with the batch's own statistics, on the first batch of the first dataset."))
        if self._lag_reported or not ratio > BATCHNORM_LAG_FACTOR:
            return
        self._lag_reported = True
        n = len(keras.tree.flatten(x)[0])
        momenta = sorted({float(layer.momentum) for _, layer in self._norms})
        if len(self._norms) > 4:  # a ResNet has 53: name a few, say how many
            layers = (f"{len(self._norms)} BatchNormalization layers (momentum "
                      f"{', '.join(f'{m:g}' for m in momenta)}; "
                      + ", ".join(f"`{path}`" for path, _ in self._norms[:3]) + ", ...)")
        else:
            layers = ", ".join(f"`{path}` (momentum {layer.momentum:g})"
                               for path, layer in self._norms)
        text = (f"**BatchNormalization lag at epoch {epoch}**: on the first {n} examples of "
                f"`{name}`, the loss in inference mode (moving statistics) is {inference:.4g}, "
                f"{ratio:.1f}x the loss with the batch's own statistics ({batch:.4g}), as "
                f"training sees the model. The moving statistics lag the weights in {layers}. "
                f"Until they catch up, every inference-mode view (these metrics, validation "
                f"loss, training dynamics, activations) shows a worse model than training "
                f"does: read them at later epochs, or lower the momentum (0.9) for a short fit.")
        ops.write_markdown("outputs/alerts", text, epoch)
        logging.getLogger("tb_explain").warning("Predictions: %s", text.replace("**", ""))

    def _feed(self, dname):
        """The `TrainingDynamics` this pass over `dname` feeds, or None."""
        feed = self.feeds.get(dname)
        if feed is None or not feed.accepts_feed(self.model):
            return None
        return feed

    def _offer_mistakes(self, buffer, info, probs, labels, x):
        if buffer.k == 0:
            return
        predicted, truth, confidence = predictions.decisions(info["task"], info["units"], probs, labels)
        wrong = (predicted != truth).reshape(len(probs), -1).any(axis=1)
        conf = confidence.reshape(len(probs), -1).max(axis=1)
        leaves = _inputs.flatten_inputs(predictions.to_numpy(x))[0]
        buffer.offer(conf, wrong, lambda i: (
            [leaf[i].copy() for leaf in leaves], truth[i].copy() if np.ndim(truth[i]) else truth[i],
            predicted[i].copy() if np.ndim(predicted[i]) else predicted[i], float(conf[i])))

    def _log_classification(self, tag, info, probs, labels, buffer, epoch):
        task, names = info["task"], info["names"]
        predicted, truth, confidence = predictions.decisions(info["task"], info["units"], probs, labels)
        correct = predicted == truth
        if task == "multilabel":
            accuracy = float(np.mean(correct.all(axis=1)))
            tp = (predicted & truth).sum(axis=0).astype(np.float64)
            fp = (predicted & (1 - truth)).sum(axis=0)
            fn = ((1 - predicted) & truth).sum(axis=0)
            precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
            recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
            both = precision + recall
            f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
            matrix = None
            columns = [(names[c], truth[:, c], probs[:, c]) for c in range(len(names))]
        else:
            accuracy = float(np.mean(correct))
            classes = len(names)
            matrix = metrics.confusion(truth, predicted, classes)
            precision, recall, f1 = metrics.per_class(matrix)
            if task == "binary":
                precision, recall, f1 = precision[1:], recall[1:], f1[1:]
                columns = [(None, truth, probs[:, 0])]
            else:
                columns = [(names[c], truth == c, probs[:, c]) for c in range(classes)]
        ops.write_scalar(f"{tag}/accuracy", accuracy, epoch)
        macro = float(np.mean(f1))
        ops.write_scalar(f"{tag}/macro_f1", macro, epoch)
        ece, counts, bin_acc, bin_conf = metrics.expected_calibration_error(
            confidence.ravel(), correct.ravel(), self.calibration_bins)
        ops.write_scalar(f"{tag}/ece", ece, epoch)
        for (name, positive, score), p, r, f in zip(columns, precision, recall, f1):
            suffix = "" if name is None else f"/{name}"
            ops.write_scalar(f"{tag}/precision{suffix}", p, epoch)
            ops.write_scalar(f"{tag}/recall{suffix}", r, epoch)
            ops.write_scalar(f"{tag}/f1{suffix}", f, epoch)
            auc = metrics.roc_auc(positive, score)
            if np.isfinite(auc):
                ops.write_scalar(f"{tag}/roc_auc{suffix}", auc, epoch)
            ops.write_pr_curve(f"{tag}/pr_curve{suffix}", positive, score, epoch, PR_THRESHOLDS)
        if matrix is not None:
            ops.write_markdown(f"{tag}/confusion", self._confusion_markdown(matrix, names, epoch),
                               epoch)
            ops.write_images(f"{tag}/confusion_matrix", charts.confusion_matrix(matrix, names),
                             epoch)
        else:
            rows = [[n, int(tp_), int(fp_), int(fn_)] for n, tp_, fp_, fn_ in zip(
                names, (predicted & truth).sum(0), (predicted & (1 - truth)).sum(0),
                ((1 - predicted) & truth).sum(0))]
            ops.write_markdown(f"{tag}/confusion", f"Per-label counts at epoch {epoch}:\n\n"
                               + ops.markdown_table(["label", "TP", "FP", "FN"], rows), epoch)
        ops.write_images(f"{tag}/calibration",
                         charts.reliability_diagram(counts, bin_acc, bin_conf, ece), epoch)
        top = confidence.reshape(len(confidence), -1).max(axis=1) if task != "multilabel" \
            else confidence.ravel()
        ops.write_histogram(f"{tag}/confidence", _buckets(top, 0.0, 1.0), epoch)
        if self.privacy == "off" and buffer.k:
            self._log_mistakes(tag, info, buffer.items(), epoch)
        lowest = np.argsort(recall, kind="stable")[:3]
        return {"accuracy": accuracy, "macro_f1": macro, "ece": ece,
                "lowest_recall": [(columns[i][0] or names[-1], float(recall[i])) for i in lowest]}

    @staticmethod
    def _log_predicted(tag, info, probs, labels, fingerprint, epoch):
        """`outputs/<d>/predicted/<epoch>`: predicted class and correctness per example."""
        predicted, truth, _ = predictions.decisions(info["task"], info["units"], probs, labels)
        correct = (predicted == truth).reshape(len(probs), -1).all(axis=1)
        classes = np.full(len(probs), -1) if info["task"] == "multilabel" else predicted
        name = tag[len("outputs/"):]
        ops.write_tensor(
            tags.PREDICTED.format(name, epoch), np.stack([classes, correct]).astype(
                np.int16 if len(info["names"]) < 2 ** 15 else np.int32),
            epoch, tags.PLUGIN_NAME,
            metadata.content("predicted", dataset=name, n=len(probs), data=fingerprint,
                             class_names=list(info["names"]), rows=["predicted", "correct"]),
            description="tb_explain: per example, the predicted class and whether it is right "
                        "(for tbx.compare).")

    @staticmethod
    def _confusion_markdown(matrix, names, epoch):
        header = ["true \\ predicted"] + list(names)
        rows = [[name] + [int(c) for c in row] for name, row in zip(names, matrix)]
        return (f"Confusion matrix at epoch {epoch} (counts; a row per true class, a column per "
                f"predicted class):\n\n" + ops.markdown_table(header, rows))

    def _label_text(self, info, value):
        names = info["names"]
        if info["task"] == "multilabel":
            return "{" + ", ".join(names[c] for c in np.flatnonzero(value)) + "}"
        return names[int(value)]

    def _log_mistakes(self, tag, info, items, epoch):
        if not items:
            return
        first = items[0][0][0]
        if first.ndim == 3 and first.dtype.kind == "f":  # images
            tiles = images.same_size([images.input_images(np.stack([leaves[0]]), max_tile=96)[0]
                                      for leaves, *_ in items])
            captions = [[f"true: {self._label_text(info, t)}",
                         f"predicted: {self._label_text(info, p)}", f"confidence: {c:.3f}"]
                        for _, t, p, c in items]
            ops.write_images(f"{tag}/mistakes", charts.captioned_grid(tiles, captions), epoch)
            return
        header = ["#", "true", "predicted", "confidence", "inputs"]
        rows = []
        for i, (leaves, t, p, c) in enumerate(items):
            rows.append([i, self._label_text(info, t), self._label_text(info, p), f"{c:.4f}",
                         "; ".join(self._describe(leaf) for leaf in leaves)])
        ops.write_markdown(f"{tag}/mistakes", f"Most confident mistakes at epoch {epoch}:\n\n"
                           + ops.markdown_table(header, rows), epoch)

    def _describe(self, leaf):
        return describe(leaf, self.vocabulary)

    @staticmethod
    def _log_sequence(tag, sums, epoch):
        """Per-token metrics of a sequence output from `token_sums`' totals."""
        weight, cross_entropy, correct = (float(v) for v in sums)
        mean = cross_entropy / weight if weight > 0 else float("nan")
        perplexity = float(np.exp(mean)) if weight > 0 else float("nan")
        accuracy = correct / weight if weight > 0 else float("nan")
        ops.write_scalar(f"{tag}/perplexity", perplexity, epoch, description=(
            "exp of the token cross-entropy averaged over the tokens, weighted by their "
            "sample weights (padding: 0)."))
        ops.write_scalar(f"{tag}/token_accuracy", accuracy, epoch, description=(
            "Weighted fraction of tokens whose argmax is the label."))
        return {"perplexity": perplexity, "token_accuracy": accuracy}

    def _log_regression(self, tag, predicted, labels, epoch):
        truth = np.asarray(labels, np.float64).reshape(len(labels), -1)
        predicted = predicted.reshape(len(predicted), -1)
        mae, rmse, r2 = metrics.regression(truth, predicted)
        ops.write_scalar(f"{tag}/mae", mae, epoch)
        ops.write_scalar(f"{tag}/rmse", rmse, epoch)
        ops.write_scalar(f"{tag}/r2", r2, epoch)
        residuals = (predicted - truth).ravel()
        ops.write_histogram(f"{tag}/residuals", _buckets(residuals), epoch)
        ops.write_images(f"{tag}/predicted_vs_true", charts.density(truth, predicted), epoch)
        return {"mae": mae, "rmse": rmse, "r2": r2}

    def _log_diagnostics(self, headline, epoch):
        datasets = list(self.datasets)
        parts = [f"**Outputs at epoch {epoch}**: headline metrics per dataset; in brackets the "
                 f"gap to `{datasets[0]}`.\n"]
        for key, info in self._outputs.items():
            names = (["loss", "mae", "rmse", "r2"] if info["task"] == "regression"
                     else ["loss", "perplexity", "token_accuracy"] if info["task"] == "sequence"
                     else ["accuracy", "loss", "macro_f1", "ece"])
            rows = []
            for metric in names:
                reference = headline[(datasets[0], key)][metric]
                row = [metric]
                for d in datasets:
                    value = headline[(d, key)][metric]
                    gap = "" if d == datasets[0] else f" ({value - reference:+.4f})"
                    row.append(f"{value:.4f}{gap}")
                rows.append(row)
            if info["task"] not in ("regression", "sequence"):
                rows.append(["lowest recall"] + [", ".join(
                    f"{n} {r:.2f}" for n, r in headline[(d, key)]["lowest_recall"])
                    for d in datasets])
            title = "" if len(self._outputs) == 1 else f"\nOutput `{key}` ({info['task']}):\n"
            parts.append(title + "\n" + ops.markdown_table(["metric"] + datasets, rows))
        ops.write_markdown("outputs/diagnostics", "\n".join(parts), epoch)


def describe(leaf, vocabulary=None):
    """One sample's input as text: token strings (integer ids, through
    `vocabulary`), else its first `MAX_TABLE_FEATURES` values."""
    leaf = np.asarray(leaf).ravel()
    if leaf.dtype.kind in "iu" and vocabulary is not None:
        words = []
        for token in leaf:
            try:
                words.append(str(vocabulary[int(token)]))
            except (KeyError, IndexError):
                words.append(f"<{int(token)}>")
        return " ".join(words)
    shown = [f"{v:.4g}" if leaf.dtype.kind == "f" else str(v)
             for v in leaf[:MAX_TABLE_FEATURES]]
    more = f" … (+{len(leaf) - MAX_TABLE_FEATURES})" if len(leaf) > MAX_TABLE_FEATURES else ""
    return ", ".join(shown) + more


def _buckets(values, low=None, high=None, bins=30):
    """`[bins, 3]` histogram buckets (left, right, count) for `ops.write_histogram`."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if low is None:
        low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if high <= low:
        high = low + 1e-9
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
