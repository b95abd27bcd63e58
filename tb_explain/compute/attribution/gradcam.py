"""Grad-CAM (Selvaraju et al., 2017): class activation maps from a conv layer.

ReLU(sum_k mean_ij(dF/dA_k) * A_k) at a layer with a 4-D output A (default:
the last one the forward pass calls, nested models included), upsampled
bilinearly (half-pixel centres, `keras.ops.image.resize`) to the image input's
height x width.
"""

import contextlib
import functools

import keras
import numpy as np

from tb_explain import backend
from tb_explain._keras import swapped_call, walk_layers
from tb_explain.compute.attribution import _cores, _feeding, _outputs
from tb_explain.compute.attribution.result import Attribution

OPTIONS = ("layer",)


def image_input(plan):
    """Index of the first image input (4-D float), or a ValueError."""
    for i, (x, kind) in enumerate(zip(plan.leaves, plan.kinds)):
        if kind == "float" and x.ndim == 4:
            return i
    raise ValueError(
        f"Grad-CAM needs an image input (samples, height, width, channels); this model's "
        f"inputs have shapes {[x.shape for x in plan.leaves]}. Use 'saliency', "
        f"'gradient_x_input', 'smoothgrad', 'integrated_gradients' or 'occlusion'.")


def _conv_layers(model, plan):
    """`[(path, layer)]` of the layers with a 4-D output, in call order (one eager
    forward pass on the first sample, which reaches nested models' layers)."""
    layers = [(path, layer) for _, path, layer in walk_layers(model)
              if not hasattr(layer, "layers")]
    calls = []

    def recorder(path, layer, original):
        @functools.wraps(original)
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            first = keras.tree.flatten(out)[0] if keras.tree.flatten(out) else None
            if first is not None and len(first.shape) == 4:
                calls.append((path, layer))
            return out
        return call

    with contextlib.ExitStack() as stack:
        for path, layer in layers:
            stack.enter_context(swapped_call(layer, recorder(path, layer, layer.call)))
        first = [backend.to_tensor(x[:1]) for x in plan.leaves]
        model(plan.rebuild(first), training=False)
    return calls


def find_layer(model, plan, layer=None):
    """`(path, layer)` Grad-CAM reads: `layer` (a name or path) or the last 4-D one."""
    if layer is not None:
        from tb_explain.compute import activations  # noqa: PLC0415

        hits = activations.select_layers(model, [layer])
        if len(hits) != 1:
            raise ValueError(f"`layer` {layer!r} matches {len(hits)} layers: "
                             f"{[p for p, _ in hits]}; name one.")
        return hits[0]
    image_input(plan)
    per_model = _cores.cache(model)
    key = ("gradcam layers", plan.structure, tuple(x.shape[1:] for x in plan.leaves))
    if key not in per_model:  # one eager pass per model and input shapes
        per_model[key] = _conv_layers(model, plan)
    calls = per_model[key]
    if not calls:
        raise ValueError(f"Grad-CAM needs a layer with a 4-D output (a convolution); model "
                         f"{model.name!r} has none.")
    return calls[-1]


def _core(model, key, plan, layer, size):
    """`core(model_xs, target, delta) -> (cam, F)`, compiled per model and layer.

    The layer's output A is read as `A + delta` (`delta` zeros), so dF/dA is
    the gradient with respect to the input `delta` on every backend (JAX has
    no gradient with respect to an intermediate value)."""
    cache_key = ("gradcam", key, id(layer), size, tuple(plan.kinds), plan.structure)
    per_model = _cores.cache(model)
    if cache_key in per_model:
        return per_model[cache_key]
    holder = {}
    original = layer.call
    ops = keras.ops

    def record(*args, **kwargs):
        out = original(*args, **kwargs)
        flat = keras.tree.flatten(out)
        holder["A"] = flat[0] + ops.cast(holder["delta"], flat[0].dtype)
        return keras.tree.pack_sequence_as(out, [holder["A"], *flat[1:]])

    def core(model_xs, target, delta):
        def total(deltas):
            holder["delta"] = deltas[0]
            f = _feeding.take_targets(model(plan.rebuild(list(model_xs)), training=False),
                                      key, target)
            return ops.sum(f), (f, holder["A"])

        (grads,), (f, activation) = backend.input_gradients(total, [delta])
        weights = ops.mean(ops.cast(grads, "float32"), axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(weights * ops.cast(activation, "float32"), axis=-1))
        return ops.image.resize(cam[..., None], size, interpolation="bilinear")[..., 0], f

    compiled = backend.compile(core, model.variables)

    def call(*args):
        with swapped_call(layer, record):
            return compiled(*args)

    per_model[cache_key] = call
    return call


def _activation_shape(model, plan, layer):
    """The sample shape of `layer`'s (first) output, from one eager pass on
    the first sample, once per model, layer and input shapes (an eager pass
    of a big model costs several compiled Grad-CAM calls)."""
    key = ("gradcam shape", id(layer), plan.structure, tuple(x.shape[1:] for x in plan.leaves))
    per_model = _cores.cache(model)
    if key not in per_model:
        per_model[key] = _eager_activation_shape(model, plan, layer)
    return per_model[key]


def _eager_activation_shape(model, plan, layer):
    seen = {}
    original = layer.call

    def record(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.setdefault("shape", tuple(keras.tree.flatten(out)[0].shape[1:]))
        return out

    with swapped_call(layer, record):
        model(plan.rebuild([backend.to_tensor(x[:1]) for x in plan.leaves]), training=False)
    return seen["shape"]


def gradcam(model, inputs, *, target=None, output=None, position="last", batch_size=None, layer=None):
    """Grad-CAM maps `(n, height, width)` of the image input.

    Args:
        layer: The layer read (a name, a path or a regular expression that
            matches one layer); default the last layer with a 4-D output.
    """
    done = _feeding.setup(model, inputs, target, output, position)
    image = image_input(done.plan)
    _, found = find_layer(model, done.plan, layer)
    size = tuple(done.plan.leaves[image].shape[1:3])
    core = _core(model, done.key, done.plan, found, size)
    shape = _activation_shape(model, done.plan, found)
    n = done.n
    chunk = _feeding.chunk_rows(n, batch_size or n)
    maps, outputs = [], []
    for start in range(0, n, chunk):
        rows = np.minimum(np.arange(start, start + chunk), n - 1)  # pad the last chunk
        feed = [leaf[rows] for leaf in done.feed]
        cam, f = core(feed, done.targets[rows], np.zeros((chunk,) + shape, np.float32))
        maps.append(backend.to_numpy(cam))
        outputs.append(backend.to_numpy(f))
    return Attribution(attributions=np.concatenate(maps)[:n], delta=None, **done.explained,
                       output=np.concatenate(outputs)[:n], baseline_output=None,
                       skipped=dict(done.plan.skipped))
