"""`attribute`: every attribution method behind one call, and the method registry.

A method is one module exposing a function
`fn(model, inputs, *, target, output, batch_size, **options)` and its
`OPTIONS`; adding one is adding its module and a line here.
"""

from tb_explain import tags
from tb_explain.compute.attribution import (
    coalitions, deeplift, gradcam, gradient_shap, gradient_x_input, occlusion, saliency,
    smoothgrad)
from tb_explain.compute.attribution.integrated_gradients import integrated_gradients

#: name -> (function, options it takes besides target, output and batch_size)
METHODS = {
    "saliency": (saliency.saliency, saliency.OPTIONS),
    "gradient_x_input": (gradient_x_input.gradient_x_input, gradient_x_input.OPTIONS),
    "integrated_gradients": (integrated_gradients, ("baseline", "steps", "method")),
    "smoothgrad": (smoothgrad.smoothgrad, smoothgrad.OPTIONS),
    "gradcam": (gradcam.gradcam, gradcam.OPTIONS),
    "occlusion": (occlusion.occlusion, occlusion.OPTIONS),
    "kernel_shap": (coalitions.kernel_shap, coalitions.OPTIONS_KERNEL),
    "shapley": (coalitions.shapley, coalitions.OPTIONS_SHAPLEY),
    "gradient_shap": (gradient_shap.gradient_shap, gradient_shap.OPTIONS),
    "deeplift": (deeplift.deeplift, deeplift.OPTIONS),
    "deeplift_shap": (deeplift.deeplift_shap, deeplift.SHAP_OPTIONS),
}


if tuple(METHODS) != tags.ATTRIBUTION_METHODS:  # the tab lists the methods from tags
    raise ImportError(f"tags.ATTRIBUTION_METHODS {tags.ATTRIBUTION_METHODS} must name "
                      f"METHODS {tuple(METHODS)}, in order.")


def check_method(method, options=()):
    """Validates a method name and its option names (ValueError / TypeError)."""
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {sorted(METHODS)}, got {method!r}.")
    unknown = sorted(set(options) - set(METHODS[method][1]))
    if unknown:
        raise TypeError(f"method {method!r} takes no option(s) {unknown}; its options are "
                        f"{list(METHODS[method][1])}.")


def attribute(model, inputs, method, *, target=None, output=None, batch_size=None,
              position="last", **options):
    """Attributions of a Keras model's output to its inputs, by `method`.

    Methods (papers in the README):

    - `"saliency"`: |dF/dx| per input element;
    - `"gradient_x_input"`: x * dF/dx;
    - `"integrated_gradients"`: see `tbx.integrated_gradients` (options
      `baseline`, `steps`, `method`);
    - `"smoothgrad"`: a `base` method (`"saliency"`, `"gradient_x_input"`,
      `"integrated_gradients"`) averaged over `samples` (50) copies
      x + N(0, sigma^2), sigma = `noise` (0.15) x each sample's value range,
      reproducible with `seed`;
    - `"gradcam"`: ReLU(sum_k mean_ij(dF/dA_k) A_k) at `layer` (default: the
      last layer with a 4-D output, nested models included), upsampled
      bilinearly to the image: `.attributions` is `(n, height, width)`;
    - `"occlusion"`: a `window` slid with `stride` and replaced by
      `baseline` (0); each element gets the mean of F(x) - F(occluded x) over
      the windows covering it (tables: one feature at a time);
    - `"shapley"`: exact Shapley values of feature groups (`feature_mask`,
      M <= 16 groups; default one per feature of a table, per position of
      a sequence, a 4 x 4 patch grid of an image) against `baseline`, from
      all 2^M coalitions, evaluated in batched compiled passes;
    - `"kernel_shap"`: KernelSHAP over the same groups (default image grid
      8 x 8) from `samples` coalitions drawn from the Shapley kernel
      (`seed`); `samples >= 2^M - 2` enumerates them all: the exact values.
      For both, every element of a group carries the group's value;
    - `"deeplift"`: DeepLIFT with the rescale rule against `baseline`
      (zeros), as Captum's `DeepLift`: sums to F(x) - F(baseline) per
      sample (ReLU, ELU, LeakyReLU, sigmoid, tanh, softplus and softmax
      rescaled; other nonlinearities, max pooling included, keep their
      gradient and are named in `.skipped`);
    - `"deeplift_shap"`: DeepLIFT averaged over `baselines` (m >= 2), as
      Captum's `DeepLiftShap`;
    - `"gradient_shap"`: expected gradients, as Captum's `GradientShap`: per
      draw (`samples`, 50) a baseline from `baselines` (`(m, ...)`; default
      zeros), noise of std `stdevs` (0) on the input, a point at a uniform
      position between them; the mean of dF/dpoint * (x + noise - baseline).

    Args:
        model: A Keras model (any kind).
        inputs: An array, or a list / dict of arrays (token ids and
            non-differentiable inputs as in `tbx.integrated_gradients`).
        method: One of the names above.
        target: None (the predicted class), an int, or one int per sample.
        output: The output explained, for multi-output models.
        position: For a sequence output `(n, T, V)` (a language model's
            logits): the position explained, an int or `"last"` (default:
            each sample's last unmasked position, from a `padding_mask`
            input or the Keras mask, else T - 1: the next token); `target`
            then picks the token (default: the predicted one).
        batch_size: Rows per compiled call (bounds memory; same result).
            None: all at once for integrated gradients, else as many rows
            as hold 4M input values (at least 32).
        **options: The method's own options, above.

    Returns:
        An `Attribution`: `.attributions` shaped like `inputs` (Grad-CAM:
        `(n, height, width)`), `.target`, `.output`, and `.delta` where the
        method has one (integrated gradients).

    Example:

    ```python
    for method in ("saliency", "smoothgrad", "gradcam", "occlusion"):
        maps = tbx.attribute(model, x_val[:4], method).attributions
    ```
    """
    check_method(method, options)
    fn, _ = METHODS[method]
    return fn(model, inputs, target=target, output=output, batch_size=batch_size,
              position=position, **options)
