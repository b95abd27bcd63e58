"""Reading runs back: typed access to what was logged, via TensorBoard's loader.

Built on `tensorboard.backend.event_processing` (never a hand-written event
parser). A run is one directory of event files; `load_runs(root)` finds every
run below a root, as `tensorboard --logdir root` does.

Example:

```python
run = tbx.load_run("runs/exp1")
steps, norms = run.scalars("gradients/global_norm")
image = run.images("activations/digits_cnn/conv1")[-1].images[0]   # uint8 HxWx3
for name, r in tbx.load_runs("runs").items():
    print(name, r.tags("scalars")[:3])
```
"""

import dataclasses
import os

import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import io_wrapper
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

_KINDS = {"scalars": "scalars", "histograms": "histograms", "images": "images",
          "text": "text", "graph_keras_model": "keras_graph", "hparams": "hparams"}


@dataclasses.dataclass
class HistogramEvent:
    """One histogram: `step` and `buckets` `[k, 3]` (left, right, count)."""
    step: int
    buckets: np.ndarray


@dataclasses.dataclass
class ImageEvent:
    """One image summary: `step` and `images`, a list of uint8 `(h, w, c)`."""
    step: int
    images: list


class Run:
    """Everything logged in one run directory.

    Args:
        path: The run directory (the one holding event files).

    Raises:
        ValueError: if `path` holds no event files.

    Example:

    ```python
    run = tbx.Run("runs/exp1")
    for event in run.histograms("weights/dense/kernel"):
        print(event.step, event.buckets[:, 2].sum())
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path) or not any(
            io_wrapper.IsSummaryEventsFile(os.path.join(self.path, f))
            for f in os.listdir(self.path)
        ):
            raise ValueError(f"{self.path!r} holds no TensorBoard event files.")
        self._acc = ea.EventAccumulator(self.path, size_guidance={
            ea.TENSORS: 0, ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0, ea.GRAPH: 0})
        self._acc.Reload()
        self._kinds = {}
        for tag in self._acc.Tags()["tensors"]:
            plugin = self._acc.SummaryMetadata(tag).plugin_data.plugin_name
            self._kinds[tag] = _KINDS.get(plugin, plugin)

    def tags(self, kind=None):
        """Tags in the run, of one kind (`"scalars"`, `"histograms"`,
        `"images"`, `"text"`...) or all, sorted."""
        return sorted(t for t, k in self._kinds.items() if kind is None or k == kind)

    def _events(self, tag, kind):
        if self._kinds.get(tag) != kind:
            close = [t for t in self.tags(kind) if tag.split("/")[-1] in t][:5]
            raise KeyError(f"No {kind} tag {tag!r} in run {self.path!r}."
                           + (f" Similar: {close}" if close else ""))
        return self._acc.Tensors(tag)

    def scalars(self, tag):
        """Returns `(steps, values)`: int64 and float64 arrays."""
        events = self._events(tag, "scalars")
        return (np.array([e.step for e in events], np.int64),
                np.array([float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]))

    def last(self, tag, default=None):
        """The last value of a scalar tag, or `default` if absent."""
        if self._kinds.get(tag) != "scalars":
            return default
        return float(self.scalars(tag)[1][-1])

    def histograms(self, tag):
        """Returns a list of `HistogramEvent`."""
        return [HistogramEvent(e.step, tensor_util.make_ndarray(e.tensor_proto))
                for e in self._events(tag, "histograms")]

    def images(self, tag):
        """Returns a list of `ImageEvent` with decoded uint8 arrays."""
        import io  # noqa: PLC0415

        from PIL import Image  # noqa: PLC0415

        out = []
        for event in self._events(tag, "images"):
            encoded = tensor_util.make_ndarray(event.tensor_proto)
            out.append(ImageEvent(event.step, [np.asarray(_rgb(Image.open(io.BytesIO(png))))
                                               for png in encoded[2:]]))
        return out

    def text(self, tag):
        """Returns a list of `(step, str)`."""
        return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode())
                for e in self._events(tag, "text")]

    @property
    def hparams(self):
        """The run's hyperparameters (HParams dashboard values) as a dict."""
        tag = hparams_metadata.SESSION_START_INFO_TAG
        if tag not in self._kinds:
            return {}
        content = self._acc.SummaryMetadata(tag).plugin_data.content
        info = hparams_metadata.parse_session_start_info_plugin_data(content)
        values = {}
        for name, value in info.hparams.items():
            kind = value.WhichOneof("kind")
            values[name] = getattr(value, kind) if kind else None
        return values

    @property
    def dynamics(self):
        """The training dynamics `TrainingDynamics` logged, or None.

        Returns:
            A `tb_explain.compute.dynamics.Dynamics` over every logged epoch
            (the same scores as the callback's `scores()`), or None when the
            run holds none (no TrainingDynamics, or privacy `"strict"`).
        """
        from tb_explain import reader  # noqa: PLC0415

        return reader.dynamics(self.source)

    @property
    def source(self):
        """This run as a `tb_explain.reader` source (what `tbx.compare` and
        the Explain tab's parsers read)."""
        from tb_explain import reader  # noqa: PLC0415

        return reader.AccumulatorSource(self._acc)

    @property
    def has_graph(self):
        """Whether an op graph was logged."""
        return self._acc.Tags()["graph"]

    def __repr__(self):
        return f"Run({self.path!r}, {len(self._kinds)} tags)"


def _rgb(picture):
    """An indexed PNG's (`render.colormap.PALETTE`) colours; others as they are."""
    return picture.convert("RGB") if picture.mode == "P" else picture


def load_run(path):
    """Loads one run directory: everything its event files hold.

    Args:
        path: The run directory (holding `events.out.tfevents.*` files).

    Returns:
        A `Run`.

    Example:

    ```python
    steps, values = tbx.load_run("runs/exp1").scalars("gradients/global_norm")
    ```
    """
    return Run(path)


def load_runs(root):
    """Loads every run below `root` (`root` itself included).

    Returns:
        A dict from the run's path relative to `root` (`"."` for `root`) to
        `Run`, sorted by name.

    Raises:
        ValueError: if no run is found.

    Example:

    ```python
    for name, run in tbx.load_runs("runs").items():
        print(name, run.last("gradients/global_norm"))
    ```
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is not a directory.")
    dirs = sorted(io_wrapper.GetLogdirSubdirectories(root))
    if not dirs:
        raise ValueError(f"No TensorBoard runs under {root!r} (no event files found).")
    return {os.path.relpath(d, root): Run(d) for d in dirs}
