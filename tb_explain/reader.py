"""Reading tb_explain's own data back: one reader for every consumer.

Two things read runs: `tb_explain.runs` (TensorBoard's `EventAccumulator`,
in Python) and the Explain tab (TensorBoard's `data_provider`, in the
server). Both wrap their loader in a `Source` and call the same parse
functions here, so `tbx.load_run(...).dynamics`, `tbx.compare` and the
Explain tab's routes read the same tags the same way (contents parsed by
`tb_explain.summary.metadata`, old runs included).

A `Source` has four methods:

- `tensor_tags(prefix)`: `{tag: info}` of tb_explain's tensors whose tag
  starts with `prefix` (`info`: the parsed metadata content);
- `tensors(tag_list)`: `{tag: [(step, ndarray)]}`;
- `scalar_tags()`: the scalar tags;
- `scalars(tag_list)`: `{tag: [(step, float)]}`;
- `texts(tag_list)`: `{tag: [(step, str)]}`.
"""

import dataclasses
import re

import numpy as np

from tb_explain import tags
from tb_explain.summary import metadata

_EPOCH = re.compile(r"(\d{6})$")


# -- sources --------------------------------------------------------------------------
class AccumulatorSource:
    """A `Source` over an `EventAccumulator` that has been `Reload()`ed."""

    def __init__(self, accumulator):
        self._acc = accumulator
        self._tensor_tags = None

    def _plugin_of(self, tag):
        return self._acc.SummaryMetadata(tag).plugin_data.plugin_name

    def tensor_tags(self, prefix=""):
        if self._tensor_tags is None:
            self._tensor_tags = [t for t in self._acc.Tags()["tensors"]
                                 if self._plugin_of(t) == tags.PLUGIN_NAME]
        return {t: metadata.parse(self._acc.SummaryMetadata(t).plugin_data.content)
                for t in self._tensor_tags if t.startswith(prefix)}

    def tensors(self, tag_list):
        from tensorboard.util import tensor_util  # noqa: PLC0415

        return {t: [(e.step, tensor_util.make_ndarray(e.tensor_proto))
                    for e in self._acc.Tensors(t)] for t in tag_list}

    def _of_plugin(self, plugin):
        return [t for t in self._acc.Tags()["tensors"] if self._plugin_of(t) == plugin]

    def scalar_tags(self):
        return self._of_plugin("scalars")

    def scalars(self, tag_list):
        from tensorboard.util import tensor_util  # noqa: PLC0415

        return {t: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                    for e in self._acc.Tensors(t)] for t in tag_list}

    def texts(self, tag_list):
        from tensorboard.util import tensor_util  # noqa: PLC0415

        out = {}
        for t in tag_list:
            if t in self._acc.Tags()["tensors"]:
                out[t] = [(e.step, _text(tensor_util.make_ndarray(e.tensor_proto)))
                          for e in self._acc.Tensors(t)]
        return out


class ProviderSource:
    """A `Source` over TensorBoard's `data_provider`, for one run of one
    request (the Explain tab's routes)."""

    #: Events per tag read at most (per-epoch tags hold one each).
    POINTS = 1000

    def __init__(self, data_provider, ctx, experiment_id, run):
        self._provider, self._ctx, self._eid, self._run = data_provider, ctx, experiment_id, run
        self._listing = {}

    def _filter(self, tag_list=None):
        from tensorboard.data import provider  # noqa: PLC0415

        return provider.RunTagFilter(runs=[self._run], tags=tag_list)

    def _list(self, plugin, scalars=False):
        if plugin not in self._listing:
            lister = self._provider.list_scalars if scalars else self._provider.list_tensors
            self._listing[plugin] = lister(self._ctx, experiment_id=self._eid, plugin_name=plugin,
                                           run_tag_filter=self._filter()).get(self._run, {})
        return self._listing[plugin]

    def tensor_tags(self, prefix=""):
        return {t: metadata.parse(series.plugin_content)
                for t, series in self._list(tags.PLUGIN_NAME).items() if t.startswith(prefix)}

    def _read(self, plugin, tag_list, scalars=False):
        if not tag_list:
            return {}
        reader = self._provider.read_scalars if scalars else self._provider.read_tensors
        return reader(self._ctx, experiment_id=self._eid, plugin_name=plugin,
                      downsample=self.POINTS, run_tag_filter=self._filter(list(tag_list))
                      ).get(self._run, {})

    def tensors(self, tag_list):
        return {t: [(d.step, d.numpy) for d in points]
                for t, points in self._read(tags.PLUGIN_NAME, tag_list).items()}

    def scalar_tags(self):
        return list(self._list("scalars", scalars=True))

    def scalars(self, tag_list):
        return {t: [(d.step, float(d.value)) for d in points]
                for t, points in self._read("scalars", tag_list, scalars=True).items()}

    def texts(self, tag_list):
        known = [t for t in tag_list if t in self._list("text")]
        return {t: [(d.step, _text(d.numpy)) for d in points]
                for t, points in self._read("text", known).items()}


def _text(array):
    value = np.asarray(array).reshape(-1)[0] if np.size(array) else b""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- what is read -------------------------------------------------------------------------
def per_epoch(source, pattern, kind):
    """`{epoch: [(tag, info)]}` of a one-tag-per-epoch tensor of `kind`
    (`pattern` such as `tags.SIMILARITY_GRAM`; its part before the first
    `{` is the tags' prefix)."""
    head = pattern.split("{")[0]
    found = {}
    for tag, info in source.tensor_tags(head).items():
        match = _EPOCH.search(tag)
        if match and info.get("kind") == kind:
            found.setdefault(int(match.group(1)), []).append((tag, info))
    return found


def layers_from_summary(text):
    """Layer paths, in model order, from the `model/summary` Markdown table."""
    paths = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| layer") or line.startswith("|---"):
            continue
        cell = line[2:].split(" | ", 1)[0].replace("&nbsp;", "").strip()
        if cell:
            paths.append(cell)
    return paths


def model_layers(source):
    """The model's layer paths in order (from `model/summary`), or []."""
    texts = source.texts([tags.MODEL_SUMMARY]).get(tags.MODEL_SUMMARY)
    return layers_from_summary(texts[-1][1]) if texts else []


def dynamics(source):
    """The training dynamics a run logged (`compute.dynamics.Dynamics` over
    every logged epoch), or None (no TrainingDynamics, or privacy "strict")."""
    from tb_explain.compute import dynamics as compute  # noqa: PLC0415

    head = tags.DYNAMICS_RECORDS.split("{")[0]
    listing = source.tensor_tags("dynamics/")
    wanted = [t for t in listing if t.startswith(head)]
    if tags.DYNAMICS_EXAMPLES not in listing or not wanted:
        return None
    data = source.tensors(wanted + [tags.DYNAMICS_EXAMPLES])
    records = {points[-1][0]: points[-1][1] for t, points in data.items()
               if t.startswith(head) and points}
    if not records:
        return None
    meta = data[tags.DYNAMICS_EXAMPLES][-1][1]
    info = listing[tags.DYNAMICS_EXAMPLES]
    epochs = sorted(records)
    names = np.array(info["datasets"], dtype=object)
    return compute.Dynamics(
        epochs=np.array(epochs, np.int64), records=np.stack([records[e] for e in epochs]),
        labels=meta[0].astype(np.int64), dataset=names[meta[1]], index=meta[2].astype(np.int64),
        class_names=list(info["class_names"]))


def tracked(source):
    """`{(dataset, row): position}` of the examples TrainingDynamics tracks
    (their position in its records and thumbnails), or {}."""
    listing = source.tensor_tags(tags.DYNAMICS_EXAMPLES)
    if tags.DYNAMICS_EXAMPLES not in listing:
        return {}
    meta = source.tensors([tags.DYNAMICS_EXAMPLES])[tags.DYNAMICS_EXAMPLES][-1][1]
    names = listing[tags.DYNAMICS_EXAMPLES]["datasets"]
    return {(names[int(d)], int(i)): k for k, (d, i) in enumerate(zip(meta[1], meta[2]))}


@dataclasses.dataclass
class Grams:
    """One epoch's Gram matrices, packed (`compute.similarity.pack`).

    Attributes:
        layers: Layer paths, one per row of `packed`.
        packed: `(len(layers), n (n + 1) / 2)`.
        n: Probe rows.
        probe: Fingerprint of the probe rows.
    """
    layers: list
    packed: np.ndarray
    n: int
    probe: str


def gram_epochs(source):
    """The epochs whose Gram matrices a run logged, with each one's tag and
    metadata: `{epoch: (tag, info)}`."""
    return {e: found[0] for e, found in per_epoch(source, tags.SIMILARITY_GRAM, "gram").items()}


def grams(source, epoch, listing=None):
    """`Grams` of `epoch`, or None when not logged."""
    listing = gram_epochs(source) if listing is None else listing
    if epoch not in listing:
        return None
    from tb_explain.compute import similarity  # noqa: PLC0415

    tag, info = listing[epoch]
    (_, payload), = source.tensors([tag])[tag][-1:]
    payload = np.asarray(payload)
    packed = np.stack([similarity.decode(payload[r["offset"]:r["offset"] + r["bytes"]], r)
                       for r in info["records"]])
    return Grams(layers=list(info["layers"]), packed=packed, n=int(info["n"]),
                 probe=info["probe"])


@dataclasses.dataclass
class Predicted:
    """One dataset's per-example results at one epoch (`Predictions`).

    Attributes:
        predicted: int `(n,)` predicted class (-1: multilabel).
        correct: bool `(n,)`.
        data: Fingerprint of the dataset's inputs and labels.
        class_names: The output's class names.
    """
    predicted: np.ndarray
    correct: np.ndarray
    data: str
    class_names: list


def predicted_epochs(source):
    """`{epoch: {dataset: (tag, info)}}` of the per-example results a run
    logged (`dataset` is `<name>` or `<name>/<output>`)."""
    return {e: {info["dataset"]: (tag, info) for tag, info in found}
            for e, found in per_epoch(source, tags.PREDICTED, "predicted").items()}


def predicted(source, epoch, listing=None):
    """`{dataset: Predicted}` at `epoch` (empty when none was logged)."""
    listing = predicted_epochs(source) if listing is None else listing
    chosen = listing.get(epoch, {})
    data = source.tensors([tag for tag, _ in chosen.values()])
    out = {}
    for name, (tag, info) in chosen.items():
        array = np.asarray(data[tag][-1][1])
        out[name] = Predicted(predicted=array[0].astype(np.int64), correct=array[1].astype(bool),
                              data=info["data"], class_names=list(info["class_names"]))
    return out


def attribution_epochs(source):
    """`{epoch: {tag: (values_tag, info)}}` of the per-sample attributions a
    run logged (`tag`: the method's tag, such as `attributions/saliency/input`)."""
    return {e: {info["tag"]: (tag, info) for tag, info in found}
            for e, found in per_epoch(source, "attributions/", "attribution_values").items()}


def attributions(source, epoch, wanted=None, listing=None):
    """`{tag: (values, probe fingerprint)}` at `epoch` (of the tags `wanted`)."""
    listing = attribution_epochs(source) if listing is None else listing
    chosen = {t: v for t, v in listing.get(epoch, {}).items() if wanted is None or t in wanted}
    data = source.tensors([tag for tag, _ in chosen.values()])
    return {t: (np.asarray(data[tag][-1][1], np.float64), info["probe"])
            for t, (tag, info) in chosen.items()}
