"""FeatureVisualization callback: what pattern each unit responds to most, as training goes on."""

import math

import keras
import numpy as np

from tb_explain import _validate
from tb_explain._errors import NotApplicable
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import features
from tb_explain.compute.activations import all_layers, select_layers
from tb_explain.compute.embeddings import _capturing
from tb_explain.render import charts, images
from tb_explain.summary import ops

#: Options of `tbx.feature_visualization` the callback passes on.
OPTIONS = ("steps", "size", "seed", "learning_rate", "jitter", "scales", "tv_weight",
           "parameterization", "value_range")


class FeatureVisualization(ExplainCallback):
    """Logs, per layer, the input each of its units responds to most.

    At each logging event `tbx.feature_visualization` optimizes one image per
    unit (activation maximization with jitter, scaling, a total-variation
    penalty and a decorrelated Fourier parameterization, all units of a layer
    in one batched compiled loop) and writes them as one captioned grid per
    layer, `features/<layer.path>` (Images dashboard), each tile captioned
    with its unit and the activation it reaches. It reads no data, so it
    writes the same at every privacy level.

    Args:
        log_dir: Directory of the run (created if missing).
        layers: Layers to visualize, by path, name or regular expression
            (default: the last layer with a spatial output, the last conv
            block, and the model's output layer: its classes).
        units: Units per layer: an int (the first `units`, >= 1) or a list
            of indices (checked against every layer before training).
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        steps, size, seed, learning_rate, jitter, scales, tv_weight,
        parameterization, value_range: as in `tbx.feature_visualization`.

    Example:

    ```python
    model.fit(x, y, epochs=30, callbacks=[
        tbx.FeatureVisualization("runs/exp1", layers=["conv2"], units=16, freq=10)])
    ```
    """

    tag_prefix = "features"
    needs_call = True
    eager_events = 0

    def __init__(self, log_dir, layers=None, units=16, freq=5, steps=256, size=None, seed=0,
                 learning_rate=0.05, jitter=2, scales=(1.0, 0.975, 1.025, 0.95, 1.05),
                 tv_weight=0.05, parameterization="fourier", value_range=(0.0, 1.0)):
        super().__init__(log_dir, freq)
        if layers is not None:
            if isinstance(layers, str):
                layers = [layers]
            if not layers or not all(isinstance(p, str) and p for p in layers):
                raise TypeError(f"`layers` must be None or a list of layer names or paths, got "
                                f"{layers!r}.")
        self.layers = None if layers is None else list(layers)
        if isinstance(units, (int, np.integer)) and not isinstance(units, bool):
            self.units = _validate.check_int("units", units, 1)
        else:
            try:
                self.units = [int(u) for u in units]
            except (TypeError, ValueError):
                raise TypeError(f"`units` must be an int or a list of unit indices, got "
                                f"{units!r}.") from None
            if not self.units or min(self.units) < 0:
                raise ValueError(f"`units` must be non-empty indices >= 0, got {units!r}.")
        self.options = {"steps": _validate.check_int("steps", steps, 1), "size": size,
                        "seed": _validate.check_int("seed", seed),
                        "learning_rate": _validate.check_float("learning_rate", learning_rate,
                                                               minimum=0, inclusive=False),
                        "jitter": _validate.check_int("jitter", jitter, 0),
                        "scales": tuple(float(s) for s in scales),
                        "tv_weight": _validate.check_float("tv_weight", tv_weight, minimum=0),
                        "parameterization": _validate.check_choice(
                            "parameterization", parameterization, features.PARAMETERIZATIONS),
                        "value_range": tuple(float(v) for v in value_range)}
        self._chosen = None

    def prepare(self):
        model = self.model
        if len(model.inputs or []) != 1 or len(model.inputs[0].shape) != 4:
            raise NotApplicable(f"FeatureVisualization needs a model with one image input "
                                f"(h, w, c); model {model.name!r} has "
                                f"{[tuple(t.shape) for t in model.inputs or []]}")
        shape = list(model.inputs[0].shape[1:])
        if self.options["size"] is not None:
            shape[:2] = [int(s) for s in self.options["size"]]
        if None in shape:
            raise ValueError(f"`size` is needed: the model's input shape {tuple(shape)} has "
                             f"free dimensions.")
        chosen = (select_layers(model, self.layers) if self.layers is not None
                  else all_layers(model))
        captured = {}
        with _capturing(chosen, captured):
            model(keras.ops.zeros([1, *shape], model.inputs[0].dtype), training=False)
        usable = [(p, int(captured[p].shape[-1]), len(captured[p].shape)) for p, _ in chosen
                  if captured.get(p) is not None
                  and keras.backend.is_float_dtype(captured[p].dtype)
                  and len(captured[p].shape) >= 2]
        if self.layers is not None:
            bad = [p for p, _ in chosen if p not in {u[0] for u in usable}]
            if bad:
                raise ValueError(f"`layers` {bad}: no float output with units to maximize.")
        else:
            spatial = [u for u in usable if u[2] == 4]
            usable = list({u[0]: u for u in spatial[-1:] + usable[-1:]}.values())
        self._chosen = []
        for path, available, _ in usable:
            units = (list(range(min(self.units, available))) if isinstance(self.units, int)
                     else self.units)
            bad = [u for u in units if u >= available]
            if bad:
                raise ValueError(f"`units` {bad} out of range: layer {path!r} has {available} "
                                 f"units (0..{available - 1}).")
            self._chosen.append((path, units))

    def log_event(self, epoch):
        for path, units in self._chosen:
            result = features.feature_visualization(self.model, path, units, **self.options)
            tiles = np.stack([images.image_rgb(x) for x in result.images])
            factor = images.fit_factor(*tiles.shape[1:3], min_side=96, max_side=192)
            tiles = np.stack([images.upscale(t, factor) for t in tiles])
            captions = [[f"unit {u}", f"act {a:.3g}"]
                        for u, a in zip(result.units, result.activations)]
            grid = charts.captioned_grid(tiles, captions, cols=math.ceil(math.sqrt(len(units))))
            ops.write_images(f"features/{path}", grid, epoch)
