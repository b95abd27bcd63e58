"""Side-by-side timing and compute floors shared by the bench scripts."""

import contextlib
import shutil
import time


def _framework_compile(fn, model):
    """`fn` compiled the way a user of the active backend compiles it: a
    plain `tf.function` called as it is (TensorFlow matches the arguments to
    its trace at each call), `jax.jit` with the variables' values passed in
    (`tb_explain.backend.compile`), PyTorch eager."""
    from tb_explain import backend  # noqa: PLC0415

    if backend.name() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (bench scripts set TF's log level first)

        return tf.function(fn, autograph=False)
    return backend.compile(fn, model.variables)


def compiled_input_gradient(model):
    """The compute floor of the gradient methods on the active backend: one
    compiled gradient of the target outputs with respect to a batch of
    inputs (`tf.function` over a `GradientTape`, `jax.jit` over
    `jax.value_and_grad`, PyTorch autograd), `(batch, target) -> grads` as
    numpy; arrays or backend tensors in."""
    import keras  # noqa: PLC0415

    from tb_explain import backend  # noqa: PLC0415

    def gradient(batch, target):
        def total(xs):
            out = model(xs[0], training=False)
            index = keras.ops.expand_dims(keras.ops.cast(target, "int32"), 1)
            return keras.ops.sum(keras.ops.take_along_axis(out, index, axis=1)), None
        return backend.input_gradients(total, [batch])[0][0]

    compiled = _framework_compile(gradient, model)
    return lambda batch, target: backend.to_numpy(compiled(batch, target))


def compiled_forward(model):
    """The compute floor of the forward-only methods (occlusion, KernelSHAP):
    the target outputs of a batch, compiled as `compiled_input_gradient`
    is, `(batch, target) -> outputs` as numpy."""
    import keras  # noqa: PLC0415

    from tb_explain import backend  # noqa: PLC0415

    def forward(batch, target):
        out = model(batch, training=False)
        index = keras.ops.expand_dims(keras.ops.cast(target, "int32"), 1)
        return keras.ops.take_along_axis(out, index, axis=1)

    compiled = _framework_compile(forward, model)
    return lambda batch, target: backend.to_numpy(compiled(batch, target))


def calibrate_batch_norm(model, x):
    """Sets every BatchNormalization's moving statistics to those of `x`.

    A randomly initialized MobileNetV2's activations vanish through its
    untrained moving statistics (its outputs are all 0.1 to 1e-11), so every
    attribution would be zero: timings of a model no user has.
    """
    import keras  # noqa: PLC0415

    layers = [layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in layers:
        layer.momentum = 0.99


def floor_inputs(model, x, targets, samples=50):
    """The precomputed inputs of the SmoothGrad and occlusion floors (numpy):
    `(noisy, noisy_targets, occluded, occluded_targets)`: `samples` noisy
    copies of each image (SmoothGrad's own draws) and every occluded copy of
    occlusion's default windows."""
    import numpy as np  # noqa: PLC0415

    from tb_explain.compute.attribution import _feeding, occlusion, smoothgrad  # noqa: PLC0415

    done = _feeding.setup(model, x, targets)
    noise = smoothgrad.noise_for(done, samples, 0.15, 0)[0]
    noisy = np.repeat(x, samples, axis=0) + noise
    size, starts = occlusion.windows([x])[0]
    occluded = []
    for image in x:
        for top, left in starts:
            copy = image.copy()
            copy[top:top + size[0], left:left + size[1]] = 0.0
            occluded.append(copy)
    return (noisy, np.repeat(targets, samples), np.stack(occluded),
            np.repeat(targets, len(starts)))


def interleaved(runs, repeats):
    """Times every callable of `runs` once per repeat, taking turns.

    Interleaving spreads this noisy machine's slow spells over all of them,
    so their ratios stay meaningful.

    Args:
        runs: Dict from name to a callable taking no argument.
        repeats: Rounds.

    Returns:
        Dict from name to the list of its durations in seconds.
    """
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def chromium(*flags):
    """Debian's `chromium`, headless, driven by playwright: yields the
    browser (closed after), or None when chromium is not installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        yield None
        return
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path,
                                    args=["--no-sandbox", "--disable-gpu", *flags])
        try:
            yield browser
        finally:
            browser.close()
