"""Feature visualization: the input each unit of a layer responds to most.

Activation maximization (Erhan et al. 2009) with the regularizers that make
the images readable (Olah et al., "Feature Visualization", Distill 2017):
every step the image is randomly jittered (rolled by a few pixels) and
rescaled before the forward pass, a total-variation penalty keeps it smooth,
and the image can be parameterized in a decorrelated Fourier basis scaled by
1/frequency (`parameterization="fourier"`), which favours natural, low
frequency structure. All units of a call are optimized together as one
batch (sample k maximizes unit k) in one compiled loop with Adam, traced
once per model, layer, units and settings.

The objective of unit `u` is the mean of channel `u` of the layer's output
over every position (a conv filter), or unit `u` itself (a dense unit, an
output class: use a linear output, the logits, when the model ends in a
softmax: maximizing a softmax probability mostly pushes the other classes
down).
"""

import dataclasses

import keras
import numpy as np

from tb_explain import backend
from tb_explain.compute.activations import all_layers
from tb_explain.compute.attribution import _cores
from tb_explain.compute.embeddings import _capturing

PARAMETERIZATIONS = ("pixels", "fourier")
#: Standard deviation of the initial parameters: a noisy start (pixels spread
#: over the range) gives units that a flat grey image leaves dead a gradient.
INIT_SD = {"pixels": 0.01, "fourier": 0.01}


@dataclasses.dataclass
class FeatureVisualization:
    """What `feature_visualization` found.

    Attributes:
        images: float32 `[k, *input_shape]`, the optimized inputs, in the
            model's input range (`value_range`, or within the `norm` ball).
        activations: float32 `[k]`, each unit's objective at its image
            (without jitter or scaling).
        units: The unit (channel) indices, in order.
        layer: The layer's path.
    """

    images: np.ndarray
    activations: np.ndarray
    units: list
    layer: str


def _fourier_scale(h, w, decay=1.0):
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freq = np.sqrt(fx ** 2 + fy ** 2)
    return (1.0 / np.maximum(freq, 1.0 / max(h, w)) ** decay).astype(np.float32)


def _ifft_last(real, imag):
    """Inverse complex FFT along the last axis, `(real, imag)` in and out
    (`keras.ops.fft` of the conjugate, conjugated and scaled)."""
    n = real.shape[-1]
    a, b = keras.ops.fft((real, -imag))
    return a / n, -b / n


def _irfft2d(real, imag, h, w):
    """`tf.signal.irfft2d` on `keras.ops`: an inverse FFT along the second
    last axis, then an inverse real FFT of length `w` along the last."""
    ops = keras.ops
    perm = list(range(len(real.shape) - 2)) + [len(real.shape) - 1, len(real.shape) - 2]
    a, b = _ifft_last(ops.transpose(real, perm), ops.transpose(imag, perm))
    return ops.irfft((ops.transpose(a, perm), ops.transpose(b, perm)), fft_length=w)


def _image_of(param, shape, parameterization, value_range, norm):
    """Input images from the free parameters."""
    ops = keras.ops
    k, h, w, c = shape
    if parameterization == "fourier":
        real, imag = param
        scale = ops.convert_to_tensor(_fourier_scale(h, w))
        raw = ops.transpose(_irfft2d(real * scale, imag * scale, h, w),  # [k, c, h, w]
                            (0, 2, 3, 1))
        raw = raw * (np.sqrt(h * w) / 4.0)  # as lucid: unit-scale pixels
    else:
        raw = param[0]
    if norm is not None:  # inside the L2 ball of radius `norm`
        length = ops.sqrt(ops.sum(ops.square(ops.reshape(raw, (k, -1))), axis=1))
        return raw * ops.reshape(norm / ops.maximum(length, norm), (k, 1, 1, 1))
    low, high = value_range
    return low + (high - low) * ops.sigmoid(raw)


def _total_variation(images):
    ops = keras.ops
    dy = images[:, 1:] - images[:, :-1]
    dx = images[:, :, 1:] - images[:, :, :-1]
    return ops.mean(ops.abs(dy), axis=(1, 2, 3)) + ops.mean(ops.abs(dx), axis=(1, 2, 3))


def _taps(size, shift, scale):
    """One axis of the random transform as a two-tap gather: `(low, high,
    low weight, high weight)`, each `[size]`.

    The image is rolled by `shift`, resized by `scale` (bilinear with
    half-pixel centres, as `tf.image.resize`), then cropped or zero-padded
    back to `size` around its centre (as `tf.image.resize_with_crop_or_pad`).
    Computed here, the transform has the same shapes whatever the draw, so
    one compiled step serves every step.
    """
    resized = int(round(scale * size))
    out = np.arange(size)
    index = out + (resized - size) // 2 if resized >= size else out - (size - resized) // 2
    inside = (index >= 0) & (index < resized)
    source = (index + 0.5) * (size / resized) - 0.5
    floor = np.floor(source)
    high_weight = (source - floor) * inside
    low_weight = (1.0 - (source - floor)) * inside
    low = np.clip(floor, 0, size - 1).astype(np.int64)
    high = np.clip(floor + 1, 0, size - 1).astype(np.int64)
    return ((low - shift) % size).astype(np.int32), ((high - shift) % size).astype(np.int32), \
        low_weight.astype(np.float32), high_weight.astype(np.float32)


def _transform(images, taps):
    """`images` through the transform of `taps` (`(rows, columns)`, see `_taps`)."""
    ops = keras.ops
    for axis, (low, high, low_weight, high_weight) in zip((1, 2), taps):
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        images = (ops.take(images, low, axis=axis) * ops.reshape(low_weight, shape)
                  + ops.take(images, high, axis=axis) * ops.reshape(high_weight, shape))
    return images


def _draws(seed, steps, jitter, scales, h, w):
    """Each step's random transform: a roll by up to `jitter` pixels and a
    rescale by one of `scales` (seeded), as `_taps`; None without either."""
    if not jitter and not scales:
        return [None] * steps
    rng = np.random.default_rng([seed, 1])
    shifts = rng.integers(-jitter, jitter + 1, size=(steps, 2)) if jitter else \
        np.zeros((steps, 2), np.int64)
    picks = rng.integers(0, len(scales), size=steps) if scales else None
    draws = []
    for i in range(steps):
        scale = 1.0 if picks is None else float(scales[picks[i]])
        draws.append((_taps(h, int(shifts[i, 0]), scale), _taps(w, int(shifts[i, 1]), scale)))
    return draws


def feature_visualization(model, layer, units=None, *, steps=256, size=None, seed=0,
                          learning_rate=0.05, jitter=2, scales=(1.0, 0.975, 1.025, 0.95, 1.05),
                          tv_weight=0.05, parameterization="fourier", value_range=(0.0, 1.0),
                          norm=None):
    """Optimizes one input per unit of `layer` to maximize that unit.

    Args:
        model: A Keras model with one image-like input `(h, w, c)` (or a
            vector input `(d,)`, with `jitter=0` and `scales=()`).
        layer: The layer, by `layer.path` or name.
        units: Unit (channel) indices (default: every unit, at most 64).
        steps: Optimization steps (int >= 1).
        size: `(h, w)` of the images for fully convolutional models (default:
            the model's input size).
        seed: Seed of the initial images and the random transforms.
        learning_rate: Adam's step size.
        jitter: Largest random roll, in pixels (int >= 0).
        scales: Random rescale factors (empty: none).
        tv_weight: Weight of the total-variation penalty (>= 0), relative to
            the objective's scale at the start.
        parameterization: `"fourier"` (decorrelated, 1/f scaled) or `"pixels"`.
        value_range: `(low, high)` of the model's inputs (images stay inside).
        norm: If given, images are instead free in the L2 ball of this radius
            (centred at 0): the setting of the classic closed form (a linear
            unit's optimum is `norm * w / |w|`).

    Returns:
        A `FeatureVisualization`.

    Example:

    ```python
    fv = tbx.feature_visualization(model, "conv2", units=range(8), steps=256)
    fv.images.shape   # (8, 28, 28, 1)
    ```
    """
    from tb_explain import _validate  # noqa: PLC0415

    steps = _validate.check_int("steps", steps, 1)
    jitter = _validate.check_int("jitter", jitter, 0)
    _validate.check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    _validate.check_float("tv_weight", tv_weight, minimum=0)
    _validate.check_float("learning_rate", learning_rate, minimum=0, inclusive=False)
    if len(model.inputs or []) != 1:
        raise ValueError(f"`model` must have one input to visualize features, got "
                         f"{len(model.inputs or [])}.")
    paths = dict(all_layers(model))
    names = {lay.name: p for p, lay in paths.items()}
    path = layer if layer in paths else names.get(layer)
    if path is None:
        raise ValueError(f"`layer` {layer!r} matches no layer of model {model.name!r}; layers: "
                         f"{list(paths)[:40]}")
    shape = list(model.inputs[0].shape[1:])
    if size is not None:
        shape[0], shape[1] = int(size[0]), int(size[1])
    if any(d is None for d in shape):
        raise ValueError(f"`size` is needed: the model's input shape {tuple(shape)} has free "
                         f"dimensions.")
    vector = len(shape) == 1
    if vector:
        if parameterization == "fourier":
            parameterization = "pixels"
        jitter, scales = 0, ()
        image_shape = (1, 1, shape[0])
    elif len(shape) == 3:
        image_shape = tuple(shape)
    else:
        raise ValueError(f"`model` input must be an image (h, w, c) or a vector (d,), got "
                         f"{tuple(shape)}.")
    captured = {}
    probe = keras.ops.zeros([1, *shape], model.inputs[0].dtype)
    with _capturing([(path, paths[path])], captured):
        model(probe, training=False)
    out = captured.get(path)
    if out is None or not keras.backend.is_float_dtype(out.dtype) \
            or len(out.shape) < 2:
        raise ValueError(f"`layer` {layer!r}: its output is not a float tensor with units.")
    available = int(out.shape[-1])
    units = list(range(min(available, 64))) if units is None else [int(u) for u in units]
    if not units:
        raise ValueError("`units` must name at least one unit, got none.")
    bad = [u for u in units if not 0 <= u < available]
    if bad:
        raise ValueError(f"`units` {bad} out of range: layer {path!r} has {available} units "
                         f"(0..{available - 1}).")
    k = len(units)
    h, w, c = image_shape
    rng = np.random.default_rng(seed)
    if parameterization == "fourier":
        init = [rng.normal(0, INIT_SD["fourier"], (k, c, h, w // 2 + 1)).astype(np.float32)
                for _ in range(2)]
    else:
        init = [rng.normal(0, INIT_SD["pixels"], (k, h, w, c)).astype(np.float32)]
    onehot = np.eye(available, dtype=np.float32)[units]  # [k, units]
    ops = keras.ops

    def objective(images):
        x = ops.reshape(images, (k, shape[0])) if vector else images
        captured.clear()
        model(ops.cast(x, model.inputs[0].dtype), training=False)
        act = ops.cast(captured[path], "float32")
        if len(act.shape) > 2:
            act = ops.mean(act, axis=tuple(range(1, len(act.shape) - 1)))
        return ops.sum(act * ops.convert_to_tensor(onehot), axis=1)  # [k]

    def images_of(params):
        return _image_of(params, (k, h, w, c), parameterization, value_range, norm)

    def final(params):
        images = images_of(params)
        return images, objective(images)

    beta1, beta2 = 0.9, 0.999

    def stepper():
        def step(params, moments, t, taps, start):
            def loss_of(ps):
                images = images_of(ps)
                gain = objective(images if taps is None else _transform(images, taps))
                loss = -ops.sum(gain) / start + tv_weight * ops.sum(
                    _total_variation(images)) * (0.0 if vector else 1.0)
                return loss, None

            grads, _ = backend.input_gradients(loss_of, params)
            new_params, new_moments = [], []
            for p, g, (m, v) in zip(params, grads, moments):  # Adam
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                update = learning_rate * (m / (1 - beta1 ** t)) / (
                    ops.sqrt(v / (1 - beta2 ** t)) + 1e-8)
                new_params.append(p - update)
                new_moments.append((m, v))
            return new_params, new_moments
        return step

    # Compiled once per model, layer, units and settings (the random
    # transform is an argument of the step; the weights are read at each
    # call, so a later epoch sees their current values).
    per_model = _cores.cache(model)
    key = ("feature_visualization", path, tuple(units), image_shape, parameterization,
           float(learning_rate), bool(jitter), tuple(scales), float(tv_weight),
           tuple(value_range), norm)
    compiled = per_model.get(key)
    if compiled is None:
        variables = model.variables
        compiled = per_model[key] = {
            "captured": captured,  # what the compiled functions read (eager on PyTorch)
            "final": backend.compile(final, variables),
            "step": backend.compile(stepper(), variables)}
    draws = _draws(seed, steps, jitter, scales, h, w)
    with _capturing([(path, paths[path])], compiled["captured"]):
        params = [backend.to_tensor(p) for p in init]
        _, gains = compiled["final"](params)
        start = np.float32(np.mean(np.abs(backend.to_numpy(gains))) + 1e-6)
        moments = [(ops.zeros_like(p), ops.zeros_like(p)) for p in params]
        for i in range(steps):
            params, moments = compiled["step"](params, moments, np.float32(i + 1), draws[i],
                                               start)
        images, gains = compiled["final"](params)
    images = backend.to_numpy(images)
    if vector:
        images = images.reshape(k, shape[0])
    return FeatureVisualization(images=images.astype(np.float32),
                                activations=backend.to_numpy(gains).astype(np.float32),
                                units=units, layer=path)
