"""TrainingDynamics callback: how the model learns each training example."""

import logging

import keras
import numpy as np

from tb_explain import _validate, backend, tags
from tb_explain import datasets as streams
from tb_explain._errors import NotApplicable
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.callbacks.predictions import describe
from tb_explain.compute import activations, dynamics, predictions
from tb_explain.compute.attribution import _inputs, _outputs
from tb_explain.render import charts, images
from tb_explain.summary import metadata, ops

#: Suspects shown per logged epoch.
MAX_SUSPECTS = 16
#: Longest side of an example's thumbnail in the Data view.
THUMBNAIL_SIDE = 32


class TrainingDynamics(ExplainCallback):
    """Finds mislabeled and hard examples from how the model learns them.

    At every `freq`-th epoch end (and the last) the model runs
    (`training=False`, so no dropout or augmentation) over the tracked
    examples and records, per example, the probability of its given label,
    the margin (the given label's logit minus the largest other one), the
    predicted class, and the self-influence term of the last Dense layer.
    From the records of every logged epoch come the scores (see
    `tb_explain.compute.dynamics`): `confidence`, `variability`,
    `correctness` (dataset cartography), `aum` (area under the margin),
    `forgetting` (forgetting events), `self_influence` (TracIn on the last
    Dense layer, with the optimizer's learning rate at each logged epoch) and
    `mislabel_score` (the mean margin over the logged epochs whose margins
    split best). `scores()` returns them, with `label_issues()` (the
    flagged set, its size estimated), `likely_label` and `noise_matrix`;
    `tbx.load_run(log_dir).dynamics` reads them back from the logs.

    Statistics continue over fits: a second `fit` with the same callback (or
    a new callback on the same `log_dir`, which reads the earlier records
    back) extends them; a logged epoch fitted again replaces its record.

    Tags, at every logged epoch:

    - `dynamics/data_map` (image): confidence against variability, one
      point per example coloured by correctness, the regions marked;
    - `dynamics/region/easy`, `.../ambiguous`, `.../hard` (scalars): the
      fractions of examples in each region (`compute.dynamics.regions`);
    - `dynamics/suspects`: the `MAX_SUSPECTS` highest mislabel scores with
      index, given and predicted label and score; an image grid of the
      examples for image inputs at privacy `"off"`, else a table (inputs
      described only at `"off"`);
    - `dynamics/records/<epoch>` (tb_explain tensors, one tag per logged
      epoch so TensorBoard's sampling keeps them all): the per-example
      records; `dynamics/examples` (labels, dataset and index of each
      example) and, at privacy `"off"`, `dynamics/thumbnails` (image
      inputs) or `dynamics/inputs` (a short text per example), written at
      the first event of each fit. Privacy `"strict"` writes none of these:
      only the data map and the fractions.

    Args:
        log_dir: Directory of the run (created if missing).
        data: The tracked examples: `(x, y)` arrays with class labels (ids,
            or one-hot rows), or a stream of such batches in a fixed order
            (`keras.utils.PyDataset`, `tf.data.Dataset`, PyTorch
            `DataLoader` without shuffling, grain dataset: read in its own
            batches at each pass, never copied whole; a pass that meets the
            examples in another order leaves the callback out), or a dict
            `{name: dataset}` (examples are then concatenated in dict order;
            `.dataset` and `.index` say where each comes from). For a
            multi-output model, `y` is a dict (or list) of labels per output.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        max_examples: Track a seeded subset of this many examples, stratified
            by dataset and class (int >= 1), or None for all.
        batch_size: Examples per forward pass (int >= 1).
        class_names: Names of the classes (a list), for the suspects.
        privacy: `"off"`, `"inputs"` (no example inputs written) or
            `"strict"` (nothing per example written).
        output: For a multi-output model, the classification output to
            follow (a key of the labels' dict, or an index of their list);
            default: the only output whose labels are class ids.

    Example:

    ```python
    dyn = tbx.TrainingDynamics("runs/exp1", data=(x_train, y_train))
    model.fit(x_train, y_train, epochs=20, callbacks=[dyn])
    suspects = dyn.ranking()[:50]          # most likely mislabeled first
    print(dyn.scores().aum[suspects])
    ```
    """

    tag_prefix = "dynamics"
    needs_call = True
    eager_events = 0

    def __init__(self, log_dir, data, freq=1, max_examples=None, batch_size=256,
                 class_names=None, privacy="off", output=None):
        super().__init__(log_dir, freq)
        datasets = _validate.check_datasets(
            data, "train", "the tracked examples `(x, y)` or a dict {name: (x, y)}")
        self.max_examples = (None if max_examples is None
                             else _validate.check_int("max_examples", max_examples, 1))
        self.batch_size = _validate.check_int("batch_size", batch_size, 1)
        self.privacy, _ = _validate.check_privacy(privacy)
        if class_names is not None and not isinstance(class_names, (list, tuple)):
            raise TypeError(f"`class_names` must be a list of names, got "
                            f"{type(class_names).__name__}.")
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.output = output
        self.datasets, self._sizes = {}, {}
        labels, names, rows = [], [], []
        for name, dataset in datasets.items():
            x, y = self._check_dataset(name, dataset)
            self.datasets[name] = x  # the inputs (a nest of arrays), or the stream
            self._sizes[name] = len(y)
            labels.append(y)
            names.append(np.full(len(y), name, dtype=object))
            rows.append(np.arange(len(y)))
        self._all_labels = np.concatenate(labels)
        self._all_dataset = np.concatenate(names)
        self._all_index = np.concatenate(rows)
        self.tracked = self._subset()
        self.labels = self._all_labels[self.tracked]
        self._classes = None
        self._output = None
        self._dense = None
        self._logits = True
        self._task = None
        self._logged, self._records = [], []
        self._model_id = None
        self._written_examples = None
        #: Filled by `Predictions` when it reads the same examples in its own
        #: pass (`explain()` shares it): epoch -> (outputs, last Dense inputs).
        self.shared = {}

    # -- construction checks ------------------------------------------------------
    def _check_dataset(self, name, dataset):
        """`(inputs or stream, class ids)` of one dataset, checked."""
        where = f"`data` dataset {name!r}"
        if streams.is_stream(dataset):
            streams.check_stream(dataset, where)
            sampler = type(getattr(dataset, "sampler", None)).__name__
            if sampler == "RandomSampler":
                raise ValueError(f"{where} is a DataLoader that shuffles (shuffle=True): "
                                 f"TrainingDynamics tracks examples by position, the same at "
                                 f"every pass; give it a DataLoader without shuffling.")
            parts = []
            for _, y, _ in streams.batches(dataset):
                if y is None:
                    raise ValueError(f"{where} has no labels: its batches must be (x, y).")
                parts.append(self._picked(where, y))
            if not parts:
                raise ValueError(f"{where} is an empty {streams.kind(dataset)}.")
            return dataset, self._class_ids(where, np.concatenate(parts))
        if not isinstance(dataset, tuple) or len(dataset) not in (2, 3):
            raise TypeError(f"{where} must be (x, y) with class labels, or a stream of such "
                            f"batches ({streams.accepted()}), got {type(dataset).__name__}.")
        x, y = dataset[0], dataset[1]
        if y is None:
            raise ValueError(f"{where} has no labels: pass (x, y).")
        leaves = keras.tree.flatten(x)
        if not leaves or any(not hasattr(leaf, "shape") or not leaf.shape for leaf in leaves):
            raise TypeError(f"{where}: x must be arrays (or a dict/list of arrays) with a batch "
                            f"axis.")
        y = self._picked(where, y)
        lengths = {len(leaf) for leaf in leaves} | {len(y)}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"{where}: x and y must share one non-zero number of examples, "
                             f"got {sorted(lengths)}.")
        return x, self._class_ids(where, y)

    def _picked(self, where, y):
        """The labels of the followed output, as numpy: `y` itself, or its
        entry `output` for a multi-output model (found on first use when
        `output` is None: the only entry holding class ids)."""
        if not isinstance(y, (dict, list, tuple)):
            return np.asarray(backend.to_numpy_any(y))
        keys = list(y) if isinstance(y, dict) else list(range(len(y)))
        if self.output is None:
            candidates = []
            for key in keys:
                try:
                    self._class_ids(where, np.asarray(backend.to_numpy_any(y[key])))
                    candidates.append(key)
                except ValueError:
                    pass
            if len(candidates) != 1:
                raise ValueError(
                    f"{where} has labels for the outputs {keys}, "
                    + ("none of which are class ids: there is no classifier output to follow"
                       if not candidates else f"and {candidates} all hold class ids: pass "
                       f"`output=` naming the one to follow") + ".")
            self.output = candidates[0]
        if self.output not in keys:
            raise ValueError(f"`output` must be one of the outputs {where} has labels for, "
                             f"{keys}; got {self.output!r}.")
        return np.asarray(backend.to_numpy_any(y[self.output]))

    @staticmethod
    def _class_ids(where, y):
        """`y` (class ids or one-hot rows) as int64 class ids, checked."""
        if y.dtype.kind not in "iubf":
            raise ValueError(f"{where}: labels must be class ids or one-hot rows, got dtype "
                             f"{y.dtype}.")
        flat = y.reshape(len(y), -1)
        if flat.shape[1] > 1:  # one-hot
            if not (np.isin(flat, (0, 1)).all() and np.all(flat.sum(axis=1) == 1)):
                raise ValueError(f"{where}: labels of shape {y.shape[1:]} per example are not "
                                 f"one-hot rows (one 1 per row); TrainingDynamics needs one "
                                 f"class per example.")
            return np.argmax(flat, axis=1).astype(np.int64)
        values = flat[:, 0]
        if flat.shape[1] != 1 or not np.all(np.isfinite(values)) \
                or not np.all(values == np.round(values)):
            raise ValueError(f"{where}: labels must be class ids (integers), got non-integer "
                             f"values such as {values[values != np.round(values)][:3]}: "
                             f"regression targets have no training dynamics to track.")
        if values.min() < 0:
            raise ValueError(f"{where}: labels must be class ids >= 0, got {values.min():g}.")
        return values.astype(np.int64)

    def _subset(self):
        n = len(self._all_labels)
        if self.max_examples is None or self.max_examples >= n:
            return np.arange(n)
        rng = np.random.default_rng(0)
        groups = {}
        for i, key in enumerate(zip(self._all_dataset, self._all_labels)):
            groups.setdefault(key, []).append(i)
        keys = sorted(groups, key=str)
        quota = np.array([len(groups[k]) * self.max_examples / n for k in keys])
        take = np.floor(quota).astype(int)
        for j in np.argsort(-(quota - take), kind="stable")[:self.max_examples - take.sum()]:
            take[j] += 1
        chosen = [rng.choice(groups[k], size=t, replace=False) for k, t in zip(keys, take) if t]
        return np.sort(np.concatenate(chosen))

    # -- model checks -------------------------------------------------------------------
    def validate_model(self):
        model = self.model
        outputs = _outputs.static_outputs(model)
        if outputs is not None and len(keras.tree.flatten(outputs)) != 1 \
                and self.output is None:
            raise NotApplicable("TrainingDynamics follows one classifier output; the model has "
                                f"{len(keras.tree.flatten(outputs))} and the labels name none "
                                f"(pass `output=`)")

    def prepare(self):
        model = self.model
        x = self._inputs_for(self.tracked[:2])
        with self.model_checks():  # eagerly: two examples trace no compiled pass
            out = keras.tree.map_structure(backend.to_numpy, model(x, training=False))
        if isinstance(out, (list, tuple, dict)):
            names = _outputs.output_names(out)
            if self.output not in names:
                raise NotApplicable(
                    f"TrainingDynamics follows one classifier output; the model returns "
                    f"{names}" + ("" if self.output is None else
                                  f", not the labels' output {self.output!r}"))
            out = _outputs.raw(out, self.output)
        elif self.output is not None:
            raise NotApplicable(f"TrainingDynamics: `output` {self.output!r} names one of "
                                f"several outputs, but the model has one")
        out = np.asarray(out)
        if out.ndim != 2:
            raise NotApplicable(f"TrainingDynamics needs one class score vector per example; "
                                f"the model outputs shape {out.shape[1:]} per example")
        units = out.shape[1]
        task, logits = predictions.task_of(model, self.output, units, self.labels[:64, None])
        if task not in ("multiclass", "binary"):
            raise NotApplicable(f"TrainingDynamics needs a classifier (softmax, logits, or one "
                                f"sigmoid unit); output with {units} unit(s) is {task}")
        self._task, self._logits = task, bool(logits)
        self._classes = 2 if task == "binary" else units
        if self._all_labels.max() >= self._classes:
            bad = self._all_labels[self._all_labels >= self._classes]
            raise ValueError(f"`data`: labels must be class ids in [0, {self._classes}) for this "
                             f"model's output, got {bad[:3].tolist()}.")
        if self.class_names is not None and len(self.class_names) != self._classes:
            raise ValueError(f"`class_names` has {len(self.class_names)} names but the model "
                             f"has {self._classes} classes.")
        self._dense = self._last_dense(units)
        if self._dense is None:
            why = (f"self_influence: no Dense layer with {units} unit(s) makes the output, so "
                   f"the score is NaN (the mislabel score does not use it)")
            if self.suite is not None:
                self.suite.skip("TrainingDynamics self_influence", why)
            else:
                logging.getLogger("tb_explain").warning("TrainingDynamics: %s.", why)
        if self._model_id != id(model):
            if self._model_id is not None:
                self._logged, self._records = [], []
            self._model_id = id(model)
            if not self._records:
                self._restore()
        self._written_examples = None

    @property
    def capture_layer(self):
        """The last Dense layer whose inputs self-influence needs (or None)."""
        return self._dense

    def accepts_feed(self, model):
        """Whether another callback's pass over all of `data` on `model` can
        stand in for this callback's own pass (`shared`)."""
        return model is self.model and self._task is not None and not self._skipped

    def _last_dense(self, units):
        layer = predictions.output_layer(self.model, self.output)
        if isinstance(layer, keras.layers.Dense) and layer.units == units:
            return layer
        dense = [lay for _, lay in activations.all_layers(self.model)
                 if isinstance(lay, keras.layers.Dense) and lay.units == units]
        return dense[-1] if dense else None

    def _restore(self):
        """Reads the records of an earlier fit on this `log_dir` back."""
        from tb_explain.runs import Run  # noqa: PLC0415

        try:
            earlier = Run(self.log_dir).dynamics
        except ValueError:  # no event files yet
            return
        if earlier is None or len(earlier) != len(self.labels) \
                or not np.array_equal(earlier.labels, self.labels) \
                or not np.array_equal(earlier.index, self._all_index[self.tracked]):
            return
        self._logged = [int(e) for e in earlier.epochs]
        self._records = list(earlier.records)

    # -- data ----------------------------------------------------------------------------
    def _chunks(self, rows):
        """Yields the inputs (numpy nests) of the examples `rows` (ascending
        positions in the concatenation), in chunks of at most `batch_size`
        rows (arrays) or of the stream's own batches. A stream's labels are
        checked against the first pass's on the way: `NotApplicable` when
        they come in another order."""
        start = 0
        for name, source in self.datasets.items():
            size = self._sizes[name]
            mine = rows[(rows >= start) & (rows < start + size)] - start
            if len(mine) and not streams.is_stream(source):
                for first in range(0, len(mine), self.batch_size):
                    picked = mine[first:first + self.batch_size]
                    yield keras.tree.map_structure(
                        lambda a, p=picked: np.asarray(backend.to_numpy(a))[p], source)
            elif len(mine):
                yield from self._stream_chunks(name, source, start, mine)
            start += size

    def _stream_chunks(self, name, source, offset, mine):
        position = 0
        for x, y, _ in streams.batches(source):
            n = len(keras.tree.flatten(x)[0])
            self._check_order(name, offset + position, y)
            picked = mine[(mine >= position) & (mine < position + n)] - position
            if len(picked):
                yield keras.tree.map_structure(
                    lambda a, p=picked: np.asarray(backend.to_numpy(a))[p], x)
            position += n
            if position > mine[-1]:
                return

    def _check_order(self, name, first, y):
        """Raises `NotApplicable` unless the labels `y` of a stream's batch
        are the recorded labels of examples `first`, `first + 1`, ..."""
        where = f"`data` dataset {name!r}"
        given = self._class_ids(where, self._picked(where, y))
        if not np.array_equal(given, self._all_labels[first:first + len(given)]):
            raise NotApplicable(
                f"TrainingDynamics: dataset {name!r} gave its examples in another order than "
                f"at the first pass (shuffled?); examples are tracked by position, so give "
                f"it a dataset in a fixed order")

    def _inputs_for(self, rows):
        """The inputs of the tracked examples `rows` (positions in the
        concatenation, any order)."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")
        parts = list(self._chunks(rows[order]))
        joined = parts[0] if len(parts) == 1 else keras.tree.map_structure(
            lambda *a: np.concatenate(a), *parts)
        back = np.argsort(order, kind="stable")
        return keras.tree.map_structure(lambda a: a[back], joined)

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        try:
            return float(backend.to_numpy(optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            return None

    def _pass(self, epoch):
        """`(z, features)` of every tracked example at `epoch`."""
        shared = self.shared.pop(epoch, None)
        self.shared.clear()
        if shared is not None and len(_outputs.raw(shared[0], self.output)) \
                == len(self._all_labels):
            outs, feats, labels = shared
            name = next(iter(self.datasets))
            if streams.is_stream(self.datasets[name]):
                self._check_order(name, 0, labels)
            outs = _outputs.raw(outs, self.output)[self.tracked]
            feats = None if feats is None else feats[self.tracked]
        else:
            step = predictions.evaluation_step(self.model, capture=self._dense)
            out_parts, feat_parts = [], []
            for x in self._chunks(self.tracked):
                result = step(x, None, None)
                out_parts.append(np.asarray(backend.to_numpy(
                    _outputs.raw(result[0], self.output))))
                if self._dense is not None:
                    feat_parts.append(np.asarray(backend.to_numpy(result[2])))
            outs = np.concatenate(out_parts)
            feats = np.concatenate(feat_parts) if feat_parts else None
        if feats is not None and feats.ndim != 2:
            feats = None
        return dynamics.class_logits(self._task, outs, self._logits), feats

    # -- one event ------------------------------------------------------------------------
    def log_event(self, epoch):
        try:
            z, feats = self._pass(epoch)
        except NotApplicable as exc:  # a stream that changed its order
            self._skipped = True
            if self.suite is None:
                raise
            self.suite.skip(type(self).__name__, exc)
            self.suite.report(epoch)
            return
        record = dynamics.epoch_record(z, self.labels, feats, self._learning_rate())
        keep = [i for i, e in enumerate(self._logged) if e < epoch]
        self._logged = [self._logged[i] for i in keep] + [epoch]
        self._records = [self._records[i] for i in keep] + [record]
        result = self.scores()
        ops.write_images("dynamics/data_map", charts.data_map(
            result.confidence, result.variability, result.correctness,
            (dynamics.AMBIGUOUS_VARIABILITY, dynamics.EASY_CONFIDENCE)), epoch)
        region = result.region
        for i, name in enumerate(dynamics.REGIONS):
            ops.write_scalar(f"dynamics/region/{name}", float(np.mean(region == i)), epoch,
                             description=f"Fraction of the tracked examples in the data map's "
                                         f"{name} region.")
        if self.privacy == "strict":
            return
        if self._written_examples != id(self._writer):
            self._write_examples(epoch)
            self._written_examples = id(self._writer)
        ops.write_tensor(tags.DYNAMICS_RECORDS.format(epoch), record, epoch, tags.PLUGIN_NAME,
                         metadata.content("dynamics_records", rows=list(dynamics.RECORD_ROWS)),
                         description="tb_explain training dynamics: per-example records.")
        self._write_suspects(result, record, epoch)

    def _names(self):
        return self.class_names or [str(c) for c in range(self._classes)]

    def _write_examples(self, epoch):
        datasets = list(self.datasets)
        meta = np.stack([self.labels, np.array([datasets.index(d) for d in
                                                self._all_dataset[self.tracked]]),
                         self._all_index[self.tracked]]).astype(np.int64)
        content = metadata.content("dynamics_examples", datasets=datasets,
                                   class_names=self._names(), rows=["label", "dataset", "index"])
        ops.write_tensor(tags.DYNAMICS_EXAMPLES, meta, epoch, tags.PLUGIN_NAME, content)
        if self.privacy != "off":
            return
        thumbnails, texts = [], []  # a chunk at a time: no copy of every input
        for x in self._chunks(self.tracked):
            leaves = _inputs.flatten_inputs(x)[0]
            leaf = leaves[0]
            if leaf.ndim == 4 and leaf.dtype.kind == "f" and leaf.shape[-1] in (1, 3, 4):
                thumbnails.append(self._thumbnails(leaf))
            else:
                texts.extend(_describe(leaves, i) for i in range(len(leaf)))
        if thumbnails:
            ops.write_tensor(tags.DYNAMICS_THUMBNAILS, np.concatenate(thumbnails), epoch,
                             tags.PLUGIN_NAME, metadata.content("dynamics_thumbnails"))
        else:
            ops.write_tensor(tags.DYNAMICS_INPUTS, np.array(texts, dtype=object), epoch,
                             tags.PLUGIN_NAME, metadata.content("dynamics_inputs"))

    @staticmethod
    def _thumbnails(leaf):
        """uint8 `(n, h, w, 3)` thumbnails (min-max per example), longest
        side at most `THUMBNAIL_SIDE`."""
        from PIL import Image  # noqa: PLC0415

        leaf = np.asarray(leaf, np.float64)[..., :3]
        h, w = leaf.shape[1:3]
        scale = min(1.0, THUMBNAIL_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        out = np.empty((len(leaf), size[1], size[0], 3), np.uint8)
        for i, sample in enumerate(leaf):
            tile = Image.fromarray(images.image_rgb(sample))
            out[i] = np.asarray(tile.resize(size, Image.BOX) if scale < 1 else tile)
        return out

    def _write_suspects(self, result, record, epoch):
        top = result.ranking()[:MAX_SUSPECTS]
        names = self._names()
        predicted = record[dynamics.RECORD_ROWS.index("predicted")].astype(np.int64)
        where = [f"{result.dataset[i]}[{result.index[i]}]" for i in top]
        if self.privacy == "off":
            leaves = _inputs.flatten_inputs(self._inputs_for(self.tracked[top]))[0]
            leaf = leaves[0]
            if leaf.ndim == 4 and leaf.dtype.kind == "f":
                tiles = images.input_images(leaf, max_tile=96)
                captions = [[where[j], f"given: {names[self.labels[i]]}",
                             f"predicted: {names[predicted[i]]}",
                             f"score: {result.mislabel_score[i]:.3f}"] for j, i in enumerate(top)]
                ops.write_images("dynamics/suspects", charts.captioned_grid(tiles, captions),
                                 epoch)
                return
        header = ["example", "given", "predicted", "mislabel score", "AUM", "confidence"]
        if self.privacy == "off":
            header.append("inputs")
        rows = []
        for j, i in enumerate(top):
            row = [where[j], names[self.labels[i]], names[predicted[i]],
                   f"{result.mislabel_score[i]:.3f}", f"{result.aum[i]:.3f}",
                   f"{result.confidence[i]:.3f}"]
            if self.privacy == "off":
                row.append(_describe(leaves, j))
            rows.append(row)
        ops.write_markdown("dynamics/suspects", f"Most likely mislabeled at epoch {epoch} "
                           f"(over {len(self._logged)} logged epochs):\n\n"
                           + ops.markdown_table(header, rows), epoch)

    # -- results ----------------------------------------------------------------------------
    def scores(self):
        """The scores over the epochs logged so far.

        Returns:
            A `compute.dynamics.Dynamics`: `confidence`, `variability`,
            `correctness`, `aum`, `forgetting`, `self_influence`,
            `mislabel_score` (`(n,)` arrays aligned to the tracked examples),
            with `.dataset`, `.index`, `.labels`, `ranking()`,
            `label_issues()`, `likely_label` and `noise_matrix`.

        Raises:
            RuntimeError: before the first logged epoch.
        """
        if not self._records:
            raise RuntimeError("TrainingDynamics.scores(): no epoch logged yet (call it after "
                               "model.fit).")
        return dynamics.Dynamics(
            epochs=np.array(self._logged, np.int64), records=np.stack(self._records),
            labels=self.labels.copy(), dataset=self._all_dataset[self.tracked],
            index=self._all_index[self.tracked], class_names=self._names())

    def ranking(self):
        """Tracked example positions, most likely mislabeled first
        (`scores().ranking()`)."""
        return self.scores().ranking()

    def label_issues(self):
        """Tracked example positions flagged as mislabeled, most likely
        first; the set's size is estimated (`scores().label_issues()`)."""
        return self.scores().label_issues()


def _describe(leaves, i):
    """Example `i` of the input `leaves` as text (`predictions.describe`)."""
    return "; ".join(describe(leaf[i]) for leaf in leaves)
