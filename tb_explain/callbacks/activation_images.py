"""ActivationImages callback."""

import keras
import numpy as np

from tb_explain import _validate, backend, tags
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import activations, similarity, stats, tiering
from tb_explain.probe import Probe, named_leaves
from tb_explain.render import images
from tb_explain.summary import metadata, ops


#: Rows of the similarity probe sent through the model at once.
GRAM_CHUNK = 128


class ActivationImages(ExplainCallback):
    """Logs what every layer computes on a fixed probe: images and statistics.

    Works on every model kind: Sequential, Functional, nested models (a
    `keras.applications` model used as a layer shows its inner layers, named
    by path), subclassed models, multi-input/-output models and RNNs. The
    outputs are captured in one forward pass (`training=False`), compiled
    once and never retraced.

    Logged per layer (step = epoch), with `<path>` the Keras layer path:

    - `activations/<path>` (Images): 4-D outputs as a grid of feature maps
      per sample (each channel normalized on its own over the probe, at most
      `max_channels`), 3-D outputs (Conv1D, RNN sequences) as units x time
      heatmaps, 2-D outputs as one samples x units strip; viridis colormap,
      small maps upscaled;
    - `activations/<path>/histogram` (Histograms);
    - `activations/<path>/dead_fraction` (Scalars): fraction of units (last
      axis) that are zero for every probe sample and position;
    - `activations/<path>/saturated_fraction` (Scalars), for tanh and sigmoid
      layers: fraction of values within 0.01 of the bounds;
    - `activations/input` (or `activations/input/<name>`): the probe itself,
      unless `log_inputs=False` (probes can be private data);
    - `similarity/gram/<epoch>` (a tb_explain tensor, one tag per epoch): each
      layer's centred Gram matrix on the first `similarity_samples` rows of
      `data` (`compute.similarity`), what `tbx.compare` needs for the linear
      CKA between two runs' layers: at most n (n + 1) bytes per layer (512
      rows: 263 kB; a layer narrower than n / 4 units logs its centred
      outputs instead, 4 n bytes per unit), with a fingerprint of those rows;
    - `similarity/<path>/cka_previous` (Scalars): the linear CKA of the layer
      with itself at the previous logged epoch (from the second event on):
      near 1, its representation stopped changing.

    By default, inputs, pure reshapes and dropout are skipped, and big models
    keep at most `max_layers` layers: block outputs first (a conv or BN that
    only feeds a BN, an activation or a residual add is an intermediate
    step), then evenly spaced (the last always), so one event on
    ResNet50 with 2 probe samples stays a few MB.

    Args:
        log_dir: Directory of the run (created if missing).
        data: Probe data (labels are ignored): an array, `(x,)`, `(x, y)`,
            `(x, y, sample_weight)`, lists/dicts of arrays, or a
            `tf.data.Dataset`.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        layers: Optional list of layer names, paths or regular expressions
            (full match); an unknown entry is an error listing close matches.
        max_samples: Probe samples shown (int >= 1).
        max_channels: Feature maps shown per layer (int >= 1).
        max_layers: Layers in the default selection (int >= 1).
        log_inputs: Whether to log the probe inputs as images (False is
            `privacy="inputs"`).
        privacy: `"off"`: everything above. `"inputs"`: no probe image;
            per-sample activation maps stay (first-layer maps can reproduce
            an input: use "strict" for logs that get shared). `"strict"`: no
            per-sample map: each layer's image is the mean over the probe,
            written only with at least `min_samples` samples (raise
            `max_samples`); histograms and fractions stay.
        min_samples: Samples an aggregate needs at `privacy="strict"` (int >= 2).
        similarity_samples: Rows of `data` (at most) whose Gram matrices are
            logged for `tbx.compare` (int >= 0; 0 logs none). Fewer than 2
            rows log none. Not written at `privacy="strict"` (they relate
            examples to one another).

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        tbx.ActivationImages("runs/exp1", data=x_val[:4], layers=["conv.*"])])
    ```
    """

    tag_prefix = "activations"
    needs_call = True

    def __init__(self, log_dir, data, freq=1, layers=None, max_samples=4, max_channels=16,
                 max_layers=32, log_inputs=True, privacy="off", min_samples=8,
                 similarity_samples=similarity.MAX_SAMPLES):
        super().__init__(log_dir, freq)
        self.probe = Probe(data, max_samples=max_samples)
        self.similarity_samples = _validate.check_int("similarity_samples", similarity_samples,
                                                      minimum=0)
        self._similar = None
        self._previous_grams = {}  # path -> packed Gram matrix of the last event
        if self.similarity_samples >= 2:
            similar = Probe(data, max_samples=self.similarity_samples)
            if len(keras.tree.flatten(similar.x)[0]) >= 2:
                self._similar = similar
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(p, str) for p in layers):
                raise TypeError(
                    f"`layers` must be a list of layer names or regular expressions, "
                    f"got {layers!r}.")
            if not layers:
                raise ValueError("`layers` must name at least one layer, got [].")
        self.layers = None if layers is None else list(layers)
        self.max_channels = _validate.check_int("max_channels", max_channels, minimum=1)
        self.max_layers = _validate.check_int("max_layers", max_layers, minimum=1)
        self.log_inputs = _validate.check_bool("log_inputs", log_inputs)
        self.privacy, self.min_samples = _validate.check_privacy(privacy, log_inputs, min_samples)
        self._fn = None

    def validate_model(self):
        self.probe.validate(self.model)
        if self.layers is not None and self.model.layers:
            activations.select_layers(self.model, self.layers)  # raises early

    def _selection(self):
        if self.layers is not None:
            return activations.select_layers(self.model, self.layers)
        return activations.default_selection(self.model, self.max_layers)

    def prepare(self):
        self._x = self.probe.tensors()[0]
        selection = self._selection()
        try:
            self._fn, self._paths = activations.make_layer_outputs(
                self.model, selection, self._x, max_channels=self.max_channels)
        except (ValueError, TypeError, *backend.model_errors()) as exc:
            raise self.probe_failed(exc) from exc
        if not self._paths:
            raise ValueError(
                f"ActivationImages: none of the selected layers of {self.model.name!r} is "
                "called by the model's forward pass.")
        self._features = None
        if self._similar is not None and self.privacy != "strict":
            chosen = [(p, layer) for p, layer in selection if p in self._paths]
            self._features = similarity.make_layer_features(self.model, chosen)
            self._similar_x = self._similar.tensors()[0]
            self._similar_id = similarity.fingerprint(self._similar.x)
            if not tiering.is_eager():  # compiled from the first event: ahead, where it can
                try:
                    for chunk in self._gram_chunks(shapes_only=True)[1]:
                        self._features.trace(chunk)
                except (ValueError, TypeError, *backend.model_errors()) as exc:
                    raise self.probe_failed(exc) from exc
        # A GradientNorms of the same run logging first can capture for us.
        self._capture = activations.SharedCapture(self._fn, self._x, self._wants_capture)
        self._writer.shared.setdefault("activation_captures", {})[id(self.model)] = self._capture

    def _wants_capture(self, step):
        return (self._ready and not self._skipped and self._last_logged != step
                and self.should_log(step) and self._events < self._eager_limit)

    def log_event(self, epoch):
        outputs = self._capture.take(epoch) if tiering.is_eager() else None
        if outputs is not None:  # from GradientNorms' pass (`SharedCapture`)
            result = self._fn.from_captured(outputs, stats.zero())
        else:
            result = self._fn(self._x, stats.zero())
        dead = backend.to_numpy(result["dead"])
        saturated = backend.to_numpy(result["saturated"])
        buckets = backend.to_numpy(result["buckets"])
        for i, path in enumerate(self._paths):
            tag = f"activations/{path}"
            display = backend.to_numpy(result["display"][path])
            if self.privacy == "strict":  # one mean over the probe, or nothing
                if len(display) < self.min_samples:
                    display = None
                else:
                    display = display.mean(axis=0, keepdims=True)
            rendered = None if display is None else images.activation_images(display)
            if rendered is not None:
                ops.write_images(tag, rendered, epoch)
            ops.write_histogram(tag + "/histogram", buckets[i], epoch)
            ops.write_scalar(tag + "/dead_fraction", dead[i], epoch)
            if saturated[i] >= 0:
                ops.write_scalar(tag + "/saturated_fraction", saturated[i], epoch)
        if self.privacy == "off":
            self._log_inputs(epoch)
        if self._features is not None:
            self._log_grams(epoch)

    def _gram_chunks(self, shapes_only=False):
        """`(n, chunks)`: the similarity probe's size and its chunks of at most
        `GRAM_CHUNK` rows (a generator); with `shapes_only`, one chunk of
        each shape (the first, and a shorter last)."""
        x = self._similar_x
        n = len(keras.tree.flatten(x)[0])
        if n <= GRAM_CHUNK:
            return n, iter([x])
        starts = range(0, n, GRAM_CHUNK)
        if shapes_only:
            starts = [0, starts[-1]] if n % GRAM_CHUNK else [0]
        return n, (keras.tree.map_structure(lambda t, s=start: t[s:s + GRAM_CHUNK], x)
                   for start in starts)

    def _log_grams(self, epoch):
        """`similarity/gram/<epoch>`: every layer's packed Gram matrix."""
        n, chunks = self._gram_chunks()
        parts = {}
        for chunk in chunks:
            for path, value in self._features(chunk).items():
                parts.setdefault(path, []).append(backend.to_numpy(value))
        paths = [p for p in self._paths if p in parts]
        payloads, entries, offset = [], [], 0
        previous, grams = self._previous_grams, {}
        for path in paths:
            payload, entry = similarity.encode(np.concatenate(parts[path]))
            entries.append({"path": path, "offset": offset, "bytes": len(payload), **entry})
            payloads.append(payload)
            offset += len(payload)
            grams[path] = similarity.decode(payload, entry)
            if path in previous:
                value = similarity.cka(previous[path][None], grams[path][None])[0, 0]
                ops.write_scalar(tags.CKA_PREVIOUS.format(path), value, epoch, description=(
                    "Linear CKA of the layer's outputs on the probe with its outputs at the "
                    "previous logged epoch: near 1, the representation stopped changing."))
        self._previous_grams = grams
        ops.write_tensor(
            tags.SIMILARITY_GRAM.format(epoch), np.concatenate(payloads), epoch,
            tags.PLUGIN_NAME,
            metadata.content("gram", layers=paths, n=n, probe=self._similar_id, records=entries),
            description="tb_explain: each layer's outputs on the probe as a centred Gram matrix "
                        "(or the centred outputs of a narrow layer), for tbx.compare's CKA.")

    def _log_inputs(self, epoch):
        for name, value in named_leaves(self.probe.x):
            if not np.issubdtype(value.dtype, np.floating) and value.ndim < 3:
                continue  # token ids: not an image
            rendered = images.input_images(value)
            if rendered is not None:
                tag = "activations/input" + (f"/{name}" if name is not None else "")
                ops.write_images(tag, rendered, epoch)
