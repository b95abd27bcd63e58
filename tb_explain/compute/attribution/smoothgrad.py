"""SmoothGrad (Smilkov et al., 2017): a base method averaged over noisy copies."""

import numpy as np

from tb_explain import _validate
from tb_explain.compute.attribution import _feeding, _inputs
from tb_explain.compute.attribution._gradient_rows import gradient_rows
from tb_explain.compute.attribution.result import Attribution

OPTIONS = ("base", "samples", "noise", "seed", "steps")
BASES = ("saliency", "gradient_x_input", "integrated_gradients")


def noise_for(done, samples, noise, seed):
    """Per attributed input, `[n * samples, ...]` Gaussian noise with
    sigma = `noise` x each sample's value range (max - min); row
    `s * samples + d` is draw `d` of sample `s`."""
    rng = np.random.default_rng(seed)
    out = []
    for x in done.xs:
        flat = x.reshape(len(x), -1).astype(np.float64)
        sigma = (noise * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)
        draws = rng.standard_normal((len(x), samples) + x.shape[1:], dtype=np.float32)
        draws *= sigma.reshape((-1, 1) + (1,) * (x.ndim - 1))
        out.append(draws.reshape((len(x) * samples,) + x.shape[1:]).astype(x.dtype))
    return out


def smoothgrad(model, inputs, *, target=None, output=None, position="last", batch_size=None, base="saliency",
               samples=50, noise=0.15, seed=0, steps=20):
    """Mean of `base` over `samples` copies x + N(0, sigma^2), sigma = `noise`
    times each sample's value range; the same `seed` gives the same result.

    Args:
        base: `"saliency"`, `"gradient_x_input"` or `"integrated_gradients"`.
        samples: Noisy copies per sample (int >= 1).
        noise: Noise level, a fraction of each sample's range (float >= 0;
            0 gives the base method itself).
        seed: Seed of the noise (int).
        steps: Integration steps, when `base="integrated_gradients"`.
    """
    _validate.check_choice("base", base, BASES)
    samples = _validate.check_int("samples", samples, minimum=1)
    noise = _validate.check_float("noise", noise, minimum=0.0)
    seed = _validate.check_int("seed", seed)
    done = _feeding.setup(model, inputs, target, output, position)
    draws = noise_for(done, samples, noise, seed)
    if base != "integrated_gradients":
        reduction = "abs" if base == "saliency" else "times_input"
        grads, f = gradient_rows(model, done, reduction, noise=draws, draws=samples,
                                 batch_size=batch_size)
        return Attribution(attributions=_feeding.leaves_like(done, grads), delta=None,
                           **done.explained, output=f.mean(axis=1), baseline_output=None,
                           skipped=dict(done.plan.skipped))
    from tb_explain.compute.attribution.integrated_gradients import (  # noqa: PLC0415
        integrated_gradients)

    if any(done.plan.kinds[i] == "token" for i in done.plan.attributed):
        raise ValueError("`base='integrated_gradients'` in SmoothGrad needs float inputs; token "
                         "inputs take base='saliency' or 'gradient_x_input'.")
    noisy = list(done.plan.leaves)
    for j, i in enumerate(done.plan.attributed):
        noisy[i] = np.repeat(done.plan.leaves[i], samples, axis=0) + draws[j]
    for i, kind in enumerate(done.plan.kinds):
        if kind == "skip":
            noisy[i] = np.repeat(done.plan.leaves[i], samples, axis=0)
    result = integrated_gradients(model, done.plan.rebuild(noisy),
                                  target=np.repeat(done.targets, samples), steps=steps,
                                  batch_size=_feeding.auto_batch_size(done.xs, batch_size),
                                  output=output)
    flat, _ = _inputs.flatten_inputs(result.attributions)
    mean = [flat[i].reshape((done.n, samples) + flat[i].shape[1:]).mean(axis=1)
            for i in done.plan.attributed]
    return Attribution(attributions=_feeding.leaves_like(done, mean, reduce_tokens=False),
                       delta=result.delta.reshape(done.n, samples).mean(axis=1),
                       **done.explained, output=result.output.reshape(done.n, samples).mean(1),
                       baseline_output=result.baseline_output.reshape(done.n, samples).mean(1),
                       skipped=dict(done.plan.skipped))
