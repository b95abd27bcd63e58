"""Embeddings callback: how the model arranges whole datasets, in TensorBoard's Projector."""

import logging
import os

import keras
import numpy as np

from tb_explain import _validate, backend, datasets as streams
from tb_explain._errors import NotApplicable
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import embeddings, predictions
from tb_explain.compute.attribution import _outputs
from tb_explain.render import images
from tb_explain.summary import projector

#: Directory of the embeddings' files inside the run directory.
SUBDIR = "embeddings"


class Embeddings(ExplainCallback):
    """Logs a layer's outputs on datasets for TensorBoard's Projector.

    At each logging event the outputs of `layer` on a fixed subset of the
    datasets (at most `max_points`, seeded, stratified by class, the same
    points every epoch) are written as one embedding of the Projector, named
    `<layer.path> @ epoch <e>`: pick an epoch in the Projector's menu and
    watch the classes separate as training goes on. Spatial and sequence
    outputs are averaged to one vector per sample. Each point carries a
    metadata row: `dataset`, `index` (its position in that dataset),
    `label`, `predicted`, `correct` and `confidence` (class names when
    given; unlabeled data: `predicted` and `confidence` only; a regression
    output: `label` and `predicted` values). Image inputs also get a sprite
    (the thumbnails the Projector draws as points) at privacy `"off"`.

    The model's `Embedding` layers are written too, with their vocabulary as
    labels (from `vocabulary`, else the model's own `TextVectorization` or
    `StringLookup` layer): the first `max_points` rows of each, named
    `<layer.path>/embeddings @ epoch <e>`.

    Files (in the run directory): `projector_config.pbtxt` (replaced
    atomically, earlier epochs kept), `embeddings/epoch_<e>/<name>.tsv`
    (vectors, `%.9g`: float32 round-trips exactly) and
    `embeddings/epoch_<e>/<name>.meta.tsv`, `embeddings/sprite.png` (written
    once). A new epoch never rewrites earlier epochs' files. TensorBoard's
    Projector reads the config when it first lists the run: restart
    TensorBoard to see epochs logged after that.

    Args:
        log_dir: Directory of the run (created if missing).
        data: A dataset (an array, `(x,)`, `(x, y)`, `(x, y, sample_weight)`,
            or a stream of such batches: `keras.utils.PyDataset`,
            `tf.data.Dataset`, PyTorch `DataLoader`, grain dataset), or a dict
            `{name: dataset}`; labels are optional.
        layer: The layer to embed, by `layer.path` or name (default: the
            last layer before the model's output head that gives one vector
            per sample).
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        max_points: Points per embedding (int >= 1), shared over the
            datasets in proportion to their sizes.
        class_names: Class names for `label` and `predicted`.
        output: For multi-output models, the output whose predictions the
            metadata shows (default: the first).
        batch_size: Samples per forward pass (int >= 1).
        seed: Seed of the subset (int).
        weights: Whether to write the `Embedding` layers' weights (bool).
        vocabulary: Token strings by id for the `Embedding` layers.
        privacy: `"off"` writes everything; `"inputs"` writes no sprite;
            `"strict"` writes no per-sample embedding (only the `Embedding`
            layers' weights, which hold no data).

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        tbx.Embeddings("runs/exp1", {"val": (x_val, y_val)}, class_names=names, freq=5)])
    # tensorboard --logdir runs, then the Projector tab
    ```
    """

    tag_prefix = "embeddings"
    needs_call = True
    eager_events = 0

    def __init__(self, log_dir, data, layer=None, freq=1, max_points=2000, class_names=None,
                 output=None, batch_size=256, seed=0, weights=True, vocabulary=None,
                 privacy="off"):
        super().__init__(log_dir, freq)
        if data is None:
            raise ValueError("`data` is required: a dataset, or a dict {name: dataset}.")
        datasets = data if isinstance(data, dict) else {"data": data}
        if not datasets:
            raise ValueError("`data` must name at least one dataset, got {}.")
        for name in datasets:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"`data` dataset names must be non-empty str without '/', "
                                 f"got {name!r}.")
        self.datasets = dict(datasets)
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise TypeError(f"`layer` must be a layer's path or name (str), got {layer!r}.")
        self.layer = layer
        self.max_points = _validate.check_int("max_points", max_points, 1)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.output = output
        self.batch_size = _validate.check_int("batch_size", batch_size, 1)
        self.seed = _validate.check_int("seed", seed)
        self.weights = _validate.check_bool("weights", weights)
        self.vocabulary = None if vocabulary is None else [str(t) for t in vocabulary]
        self.privacy, _ = _validate.check_privacy(privacy)
        self.path = None
        self._points = None

    # -- setup ------------------------------------------------------------------------
    def _split(self, data):
        if streams.is_stream(data) or isinstance(data, tuple):
            return data
        return (data,)

    def prepare(self):
        model = self.model
        per = {}
        for name, data in self.datasets.items():
            data = self._split(data)
            if streams.is_stream(data):
                n, labels = 0, []
                for x, y, _ in predictions.batches(data, self.batch_size):
                    n += len(keras.tree.flatten(x)[0])
                    labels.append(None if y is None else predictions.to_numpy(y))
                labels = (None if not labels or labels[0] is None
                          else keras.tree.map_structure(lambda *a: np.concatenate(a), *labels))
            else:
                try:
                    x, y, _ = predictions.split(data)
                except ValueError as exc:
                    raise ValueError(f"`data` dataset {name!r}: {exc}.") from None
                n, labels = len(keras.tree.flatten(x)[0]), predictions.to_numpy(y)
            if n == 0:
                raise ValueError(f"`data` dataset {name!r} is empty.")
            per[name] = (data, n, labels)
        first, _, _ = next(iter(per.values()))
        x0, _, _ = predictions.first_batch(first, self.batch_size)
        x0 = keras.tree.map_structure(lambda a: np.asarray(a)[:2], x0)
        with self.model_checks():
            if self.layer is None:
                self.path = embeddings.default_layer(model, x0)
                if self.path is None:
                    raise NotApplicable(
                        f"Embeddings: no layer of model {model.name!r} gives a vector per sample")
            else:
                paths = embeddings.candidates(model, x0)
                names = {p.rsplit("/", 1)[-1]: p for p in paths}
                self.path = self.layer if self.layer in paths else names.get(self.layer)
                if self.path is None:
                    from tb_explain.compute.activations import all_layers  # noqa: PLC0415

                    known = [p for p, _ in all_layers(model)]
                    why = ("its output is not a float tensor of rank >= 2 (one vector per "
                           "sample)" if self.layer in known or any(
                               p.endswith("/" + self.layer) for p in known) else "no such layer")
                    raise ValueError(f"`layer` {self.layer!r}: {why}. Layers that give a vector "
                                     f"per sample: {paths[:40]}")
            self._embed = embeddings.make_embedder(model, self.path, x0)
            outs = self._embed(x0)[1]
        keys = _outputs.output_names(outs)
        if self.output is not None and self.output not in keys:
            raise ValueError(f"`output` must be one of {keys}, got {self.output!r}.")
        self._key = self.output if self.output is not None else keys[0]
        units = int(_outputs.select(outs, self._key).shape[-1])
        # the points: a fixed, seeded, stratified subset of every dataset
        rng = np.random.default_rng(self.seed)
        counts = embeddings.allocate([n for _, n, _ in per.values()], self.max_points)
        self._points = []
        self._task = None
        for (name, (data, n, labels)), count in zip(per.items(), counts):
            y = None if labels is None else np.asarray(predictions.part_for(labels, self._key))
            if y is not None and self._task is None:
                self._task, self._logits = predictions.task_of(model, self._key, units, y)
            strata = (predictions.class_labels(self._task, y, units)
                      if y is not None and self._task in ("multiclass", "binary") else None)
            index = embeddings.stratified_subset(strata, count, rng, size=n)
            x, yy = embeddings.gather(index, predictions.batches(data, self.batch_size))
            y_sel = None if yy is None else np.asarray(predictions.part_for(yy, self._key))
            self._points.append((name, index, x, y_sel))
        if self._task is None:
            from tb_explain.compute.predictions import output_activation  # noqa: PLC0415

            activation = output_activation(model, self._key)
            self._task = ("multiclass" if units > 1 else
                          "binary" if activation == "sigmoid" else "regression")
            self._logits = activation in ("linear", None) and self._task == "multiclass"
        if self.class_names is not None and self._task in ("multiclass", "binary"):
            need = 2 if self._task == "binary" else units
            if len(self.class_names) != need:
                raise ValueError(f"`class_names` has {len(self.class_names)} names but output "
                                 f"{self._key!r} has {need} classes.")
        self._sprite = None
        if self._writer.chief:
            os.makedirs(os.path.join(self.log_dir, SUBDIR), exist_ok=True)
            if self.privacy == "off":
                self._sprite = self._write_sprite()
        self._vocabulary = self.vocabulary or embeddings.vocabulary_of(model)

    def _write_sprite(self):
        """The shared sprite of image inputs (one tile per point), or None."""
        xs = [x for _, _, x, _ in self._points]
        if any(not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[-1] not in (1, 3)
               for x in xs):
            return None
        tiles = np.concatenate([np.stack([images.image_rgb(s) for s in x]) for x in xs])
        image, side = projector.sprite(tiles)
        projector.write_png(os.path.join(self.log_dir, SUBDIR, "sprite.png"), image)
        return (f"{SUBDIR}/sprite.png", side)

    # -- one event --------------------------------------------------------------------
    def _name(self, label):
        names = self.class_names
        label = int(label)
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    def _rows(self, name, index, x, y):
        """`(vectors, columns)` of one dataset's points."""
        vectors, scores = [], []
        n = len(index)
        for start in range(0, n, self.batch_size):
            part = keras.tree.map_structure(lambda a, s=start: a[s:s + self.batch_size], x)
            v, outs = self._embed(part)
            vectors.append(backend.to_numpy(v))
            scores.append(backend.to_numpy(_outputs.select(outs, self._key)))
        vectors, scores = np.concatenate(vectors), np.concatenate(scores)
        columns = {"dataset": [name] * n, "index": [int(i) for i in index]}
        if self._task == "regression":
            if y is not None:
                columns["label"] = [f"{v:.6g}" for v in y.reshape(n, -1)[:, 0]]
            columns["predicted"] = [f"{v:.6g}" for v in scores.reshape(n, -1)[:, 0]]
            return vectors, columns
        probs = predictions.probabilities(self._task, scores, self._logits)
        if self._task == "multilabel":
            columns["predicted"] = [" ".join(self._name(j) for j in np.flatnonzero(p >= 0.5))
                                    for p in probs]
            return vectors, columns
        units = probs.shape[-1]
        if y is not None:
            predicted, truth, confidence = predictions.decisions(self._task, units, probs, y)
            columns["label"] = [self._name(t) for t in truth]
        else:
            fake = np.zeros((n, 1))
            predicted, _, confidence = predictions.decisions(self._task, units, probs, fake)
        columns["predicted"] = [self._name(p) for p in predicted]
        if y is not None:
            columns["correct"] = ["yes" if p == t else "no" for p, t in zip(predicted, truth)]
        columns["confidence"] = [f"{c:.4f}" for c in confidence]
        return vectors, columns

    def log_event(self, epoch):
        if not self._writer.chief:
            return
        folder = f"{SUBDIR}/epoch_{epoch:04d}"
        entries = []
        if self.privacy != "strict":
            parts = [self._rows(*point) for point in self._points]
            vectors = np.concatenate([v for v, _ in parts])
            columns = {}
            for _, c in parts:
                for key in c:
                    columns.setdefault(key, [])
            for (v, c) in parts:
                for key in columns:
                    columns[key].extend(c.get(key, [""] * len(v)))
            entries.append(self._write(folder, self.path, vectors, columns, epoch, self._sprite))
        if self.weights:
            for path, layer in embeddings.embedding_layers(self.model):
                table = np.asarray(layer.embeddings)[:self.max_points]
                ids = range(len(table))
                vocab = self._vocabulary
                tokens = [(vocab[i] if vocab and i < len(vocab) else str(i)) or "<pad>" for i in ids]
                entries.append(self._write(folder, f"{path}/embeddings", table,
                                           {"id": list(ids), "token": tokens}, epoch))
        if entries:
            projector.add_embeddings(self.log_dir, entries)
        else:
            logging.getLogger("tb_explain").info(
                "Embeddings: nothing to write at epoch %d (privacy='strict' writes only "
                "Embedding layers' weights, and this model has none).", epoch)

    def _write(self, folder, name, vectors, columns, epoch, sprite=None):
        stem = name.replace("/", "__")
        tensor_path = f"{folder}/{stem}.tsv"
        metadata_path = f"{folder}/{stem}.meta.tsv"
        os.makedirs(os.path.join(self.log_dir, folder), exist_ok=True)
        projector.write_vectors(os.path.join(self.log_dir, tensor_path), vectors)
        projector.write_metadata(os.path.join(self.log_dir, metadata_path), columns)
        return {"tensor_name": f"{name} @ epoch {epoch}", "tensor_path": tensor_path,
                "metadata_path": metadata_path, "shape": vectors.shape, "sprite": sprite}
