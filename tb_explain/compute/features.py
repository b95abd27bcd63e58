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

import numpy as np

from tb_explain import backend
from tb_explain._errors import NotApplicable
from tb_explain.compute.activations import all_layers
from tb_explain.compute.attribution import _cores
from tb_explain.compute.embeddings import _capturing

#: TensorFlow, set by `require_tensorflow`: the optimization loop
#: (`tf.while_loop`, `tf.signal.irfft2d`) runs on the TensorFlow backend only.
tf = None


def require_tensorflow(what="feature_visualization"):
    """Imports TensorFlow for this module, or raises `NotApplicable` (a
    `ValueError`) naming the backend to use."""
    global tf
    if backend.name() != "tensorflow":
        raise NotApplicable(
            f"{what} runs on the TensorFlow backend only (its optimization loop is a "
            f"tf.while_loop); the active Keras backend is {backend.name()!r}: set "
            f"KERAS_BACKEND=tensorflow for feature visualization")
    tf = backend.tensorflow_module()
    return tf


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


def _image_of(param, shape, parameterization, value_range, norm):
    """Input images from the free parameters."""
    k, h, w, c = shape
    if parameterization == "fourier":
        real, imag = param
        scale = _fourier_scale(h, w)
        spectrum = tf.complex(real * scale, imag * scale)  # [k, c, h, w//2+1]
        raw = tf.transpose(tf.signal.irfft2d(spectrum, fft_length=[h, w]), [0, 2, 3, 1])
        raw = raw * (np.sqrt(h * w) / 4.0)  # as lucid: unit-scale pixels
    else:
        raw = param[0]
    if norm is not None:  # inside the L2 ball of radius `norm`
        length = tf.norm(tf.reshape(raw, [k, -1]), axis=1)
        return raw * tf.reshape(norm / tf.maximum(length, norm), [k, 1, 1, 1])
    low, high = value_range
    return low + (high - low) * tf.sigmoid(raw)


def _total_variation(images):
    dy = images[:, 1:] - images[:, :-1]
    dx = images[:, :, 1:] - images[:, :, :-1]
    return tf.reduce_mean(tf.abs(dy), axis=[1, 2, 3]) + tf.reduce_mean(tf.abs(dx), axis=[1, 2, 3])


def _transform(images, jitter, scales, seed):
    """Random roll by up to `jitter` pixels and a random rescale from `scales`."""
    h, w = images.shape[1], images.shape[2]
    if jitter:
        shift = tf.random.stateless_uniform([2], seed, -jitter, jitter + 1, dtype=tf.int32)
        images = tf.roll(images, shift, axis=[1, 2])
    if scales:
        pick = tf.random.stateless_uniform([], seed + 1, 0, len(scales), dtype=tf.int32)
        factor = tf.gather(tf.constant(scales, tf.float32), pick)
        size = tf.cast(tf.round(factor * [h, w]), tf.int32)
        images = tf.image.resize(images, size, method="bilinear")
        images = tf.image.resize_with_crop_or_pad(images, h, w)
    return images


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
    require_tensorflow()
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
    probe = tf.zeros([1, *shape], model.inputs[0].dtype)
    with _capturing([(path, paths[path])], captured):
        model(probe, training=False)
    out = captured.get(path)
    if out is None or not out.dtype.is_floating or out.shape.rank < 2:
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
    onehot = tf.one_hot(units, available)  # [k, units]

    def objective(images, transform_seed):
        x = _transform(images, jitter, scales, transform_seed) if transform_seed is not None \
            else images
        if vector:
            x = tf.reshape(x, [k, shape[0]])
        captured.clear()
        model(tf.cast(x, model.inputs[0].dtype), training=False)
        act = tf.cast(captured[path], tf.float32)
        if act.shape.rank > 2:
            act = tf.reduce_mean(act, axis=list(range(1, act.shape.rank - 1)))
        return tf.reduce_sum(act * onehot, axis=1)  # [k]

    def run(params):
        images = _image_of(params, (k, h, w, c), parameterization, value_range, norm)
        start = tf.stop_gradient(tf.reduce_mean(tf.abs(objective(images, None)))) + 1e-6
        moments = [(tf.zeros_like(p), tf.zeros_like(p)) for p in params]
        beta1, beta2 = 0.9, 0.999

        def body(i, params, moments):
            with tf.GradientTape() as tape:
                tape.watch(params)
                images = _image_of(params, (k, h, w, c), parameterization, value_range, norm)
                gain = objective(images, tf.stack([seed, i]))
                loss = -tf.reduce_sum(gain) / start + tv_weight * tf.reduce_sum(
                    _total_variation(images)) * (0.0 if vector else 1.0)
            grads = tape.gradient(loss, params)
            t = tf.cast(i + 1, tf.float32)
            new_params, new_moments = [], []
            for p, g, (m, v) in zip(params, grads, moments):
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                step = learning_rate * (m / (1 - beta1 ** t)) / (tf.sqrt(v / (1 - beta2 ** t)) + 1e-8)
                new_params.append(p - step)
                new_moments.append((m, v))
            return i + 1, new_params, new_moments

        _, params, _ = tf.while_loop(lambda i, *_: i < steps, body,
                                     (tf.constant(0), list(params), moments))
        images = _image_of(params, (k, h, w, c), parameterization, value_range, norm)
        return images, objective(images, None)

    # Traced once per model, layer, units and settings (the weights are
    # variables: a later call, a later epoch, sees their current values).
    per_model = _cores.cache(model)
    key = ("feature_visualization", path, tuple(units), steps, image_shape, parameterization,
           float(learning_rate), jitter, tuple(scales), float(tv_weight), tuple(value_range),
           norm, int(seed))
    compiled = per_model.get(key)
    if compiled is None:
        with _capturing([(path, paths[path])], captured):
            compiled = per_model[key] = tf.function(run, autograph=False).get_concrete_function(
                [tf.TensorSpec(p.shape, tf.float32) for p in init])
    images, gains = compiled([tf.constant(p) for p in init])
    images = images.numpy()
    if vector:
        images = images.reshape(k, shape[0])
    return FeatureVisualization(images=images.astype(np.float32),
                                activations=gains.numpy().astype(np.float32),
                                units=units, layer=path)
