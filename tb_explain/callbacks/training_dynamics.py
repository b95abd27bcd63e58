"""TrainingDynamics callback: how the model learns each training example."""

import json
import logging

import keras
import numpy as np

from tb_explain import _validate, backend, tags
from tb_explain._errors import NotApplicable
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.callbacks.predictions import describe
from tb_explain.compute import activations, dynamics, predictions
from tb_explain.compute.attribution import _inputs, _outputs
from tb_explain.render import charts, images
from tb_explain.summary import ops

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
    `mislabel_score`, their combination. `scores()` returns them;
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
            or one-hot rows), or a dict `{name: (x, y)}` (examples are then
            concatenated in dict order; `.dataset` and `.index` say where
            each comes from).
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        max_examples: Track a seeded subset of this many examples, stratified
            by dataset and class (int >= 1), or None for all.
        batch_size: Examples per forward pass (int >= 1).
        class_names: Names of the classes (a list), for the suspects.
        privacy: `"off"`, `"inputs"` (no example inputs written) or
            `"strict"` (nothing per example written).

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
                 class_names=None, privacy="off"):
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
        self.datasets = {}
        labels, names, rows = [], [], []
        for name, dataset in datasets.items():
            x, y = self._check_dataset(name, dataset)
            self.datasets[name] = x
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
    @staticmethod
    def _check_dataset(name, dataset):
        where = f"`data` dataset {name!r}"
        if backend.is_dataset(dataset):
            raise TypeError(f"{where} is a tf.data.Dataset; TrainingDynamics tracks examples "
                            f"by position and needs arrays `(x, y)`.")
        if not isinstance(dataset, tuple) or len(dataset) not in (2, 3):
            raise ValueError(f"{where} must be a tuple (x, y) of arrays with class labels, got "
                             f"{type(dataset).__name__}.")
        x, y = dataset[0], dataset[1]
        if y is None:
            raise ValueError(f"{where} has no labels: pass (x, y).")
        leaves = keras.tree.flatten(x)
        if not leaves or any(not hasattr(leaf, "shape") or not leaf.shape for leaf in leaves):
            raise TypeError(f"{where}: x must be arrays (or a dict/list of arrays) with a batch "
                            f"axis.")
        y = np.asarray(backend.to_numpy(y))
        lengths = {len(leaf) for leaf in leaves} | {len(y)}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"{where}: x and y must share one non-zero number of examples, "
                             f"got {sorted(lengths)}.")
        if y.dtype.kind not in "iubf":
            raise ValueError(f"{where}: labels must be class ids or one-hot rows, got dtype "
                             f"{y.dtype}.")
        flat = y.reshape(len(y), -1)
        if flat.shape[1] > 1:  # one-hot
            if not (np.isin(flat, (0, 1)).all() and np.all(flat.sum(axis=1) == 1)):
                raise ValueError(f"{where}: labels of shape {y.shape[1:]} per example are not "
                                 f"one-hot rows (one 1 per row); TrainingDynamics needs one "
                                 f"class per example.")
            return x, np.argmax(flat, axis=1).astype(np.int64)
        values = flat[:, 0]
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError(f"{where}: labels must be class ids (integers), got non-integer "
                             f"values such as {values[values != np.round(values)][:3]}: "
                             f"regression targets have no training dynamics to track.")
        if values.min() < 0:
            raise ValueError(f"{where}: labels must be class ids >= 0, got {values.min():g}.")
        return x, values.astype(np.int64)

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
        if outputs is not None and len(keras.tree.flatten(outputs)) != 1:
            raise NotApplicable("TrainingDynamics follows one classifier output; the model has "
                                f"{len(keras.tree.flatten(outputs))}")

    def prepare(self):
        model = self.model
        x = self._inputs_for(self.tracked[:2])
        with self.model_checks():  # eagerly: two examples trace no compiled pass
            out = keras.tree.map_structure(backend.to_numpy, model(x, training=False))
        if isinstance(out, (list, tuple, dict)):
            raise NotApplicable("TrainingDynamics follows one classifier output; the model "
                                "returns several")
        out = np.asarray(out)
        if out.ndim != 2:
            raise NotApplicable(f"TrainingDynamics needs one class score vector per example; "
                                f"the model outputs shape {out.shape[1:]} per example")
        units = out.shape[1]
        task, logits = predictions.task_of(model, None, units, self.labels[:64, None])
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
        layer = predictions.output_layer(self.model, None)
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
    def _inputs_for(self, rows):
        """The inputs of the tracked examples `rows` (positions in the concatenation)."""
        names = self._all_dataset[rows]
        index = self._all_index[rows]
        parts = []
        for name in dict.fromkeys(names):
            picked = index[names == name]
            parts.append(keras.tree.map_structure(
                lambda a, p=picked: np.asarray(backend.to_numpy(a))[p], self.datasets[name]))
        if len(parts) == 1:
            return parts[0]
        return keras.tree.map_structure(lambda *a: np.concatenate(a), *parts)

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
        if shared is not None and len(shared[0]) == len(self._all_labels):
            outs, feats = shared
            outs = outs[self.tracked]
            feats = None if feats is None else feats[self.tracked]
        else:
            step = predictions.evaluation_step(self.model, capture=self._dense)
            out_parts, feat_parts = [], []
            for start in range(0, len(self.tracked), self.batch_size):
                rows = self.tracked[start:start + self.batch_size]
                result = step(self._inputs_for(rows), None, None)
                out_parts.append(np.asarray(backend.to_numpy(result[0])))
                if self._dense is not None:
                    feat_parts.append(np.asarray(backend.to_numpy(result[2])))
            outs = np.concatenate(out_parts)
            feats = np.concatenate(feat_parts) if feat_parts else None
        if feats is not None and feats.ndim != 2:
            feats = None
        return dynamics.class_logits(self._task, outs, self._logits), feats

    # -- one event ------------------------------------------------------------------------
    def log_event(self, epoch):
        z, feats = self._pass(epoch)
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
                         json.dumps({"rows": list(dynamics.RECORD_ROWS)}).encode(),
                         description="tb_explain training dynamics: per-example records.")
        self._write_suspects(result, record, epoch)

    def _names(self):
        return self.class_names or [str(c) for c in range(self._classes)]

    def _write_examples(self, epoch):
        datasets = list(self.datasets)
        meta = np.stack([self.labels, np.array([datasets.index(d) for d in
                                                self._all_dataset[self.tracked]]),
                         self._all_index[self.tracked]]).astype(np.int64)
        content = json.dumps({"datasets": datasets, "class_names": self._names(),
                              "rows": ["label", "dataset", "index"]}).encode()
        ops.write_tensor(tags.DYNAMICS_EXAMPLES, meta, epoch, tags.PLUGIN_NAME, content)
        if self.privacy != "off":
            return
        leaves = _inputs.flatten_inputs(self._inputs_for(self.tracked))[0]
        leaf = leaves[0]
        if leaf.ndim == 4 and leaf.dtype.kind == "f" and leaf.shape[-1] in (1, 3, 4):
            ops.write_tensor(tags.DYNAMICS_THUMBNAILS, self._thumbnails(leaf), epoch,
                             tags.PLUGIN_NAME)
        else:
            ops.write_tensor(tags.DYNAMICS_INPUTS, np.array(
                [_describe(leaves, i) for i in range(len(self.tracked))], dtype=object), epoch,
                tags.PLUGIN_NAME)

    def _first_leaf(self, rows):
        return _inputs.flatten_inputs(self._inputs_for(rows))[0][0]

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
            leaf = self._first_leaf(self.tracked[top])
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
                row.append(_describe(_inputs.flatten_inputs(
                    self._inputs_for(self.tracked[i:i + 1]))[0], 0))
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
            with `.dataset`, `.index`, `.labels` and `ranking()`.

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


def _describe(leaves, i):
    """Example `i` of the input `leaves` as text (`predictions.describe`)."""
    return "; ".join(describe(leaf[i]) for leaf in leaves)
