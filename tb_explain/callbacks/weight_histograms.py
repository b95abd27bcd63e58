"""WeightHistograms callback."""

import warnings

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import stats, tiering
from tb_explain.render.images import weight_image
from tb_explain.summary import ops


class WeightHistograms(ExplainCallback):
    """Logs a histogram and the L2 norm of every weight of the model.

    Every weight is included, trainable and non-trainable (BatchNormalization
    moving statistics too), tagged by its unique Keras path:
    `weights/<variable.path>` (histogram) and `weights/<variable.path>/norm`
    (scalar). All of them are computed by one compiled function per event
    (fused segment reductions, O(n), a constant number of ops whatever the
    number of weights), so logging costs less than
    `keras.callbacks.TensorBoard(histogram_freq=1)` does for the same weights.

    NaN and Inf weights never crash logging: histograms hold the finite
    values, norms show the NaN/Inf, `weights/nonfinite_values` counts them
    across the model, and a Python warning plus a Text summary
    (`weights/alerts`) name the variables affected.

    With `images=True`, each weight is also drawn as an image
    (`weights/<variable.path>/image`) with a diverging colormap scaled per
    image (zero white, positive red, negative blue), so negative weights stay
    visible: conv kernels as a grid of filters (a row per input channel, a
    column per filter), dense kernels as inputs x units heatmaps.

    Args:
        log_dir: Directory of the run (created if missing).
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        images: Whether to also log weight images.
        bins: Number of histogram buckets (int >= 1).

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        tbx.WeightHistograms("runs/exp1", freq=2, images=True)])
    ```
    """

    tag_prefix = "weights"

    def __init__(self, log_dir, freq=1, images=False, bins=stats.DEFAULT_BINS):
        super().__init__(log_dir, freq)
        self.images = _validate.check_bool("images", images)
        self.bins = _validate.check_int("bins", bins, minimum=1)
        self._variables = []
        self._compute_fn = None

    def prepare(self):
        seen, variables = set(), []
        for variable in self.model.weights:
            if variable.path not in seen:
                seen.add(variable.path)
                variables.append(variable)
        self._variables = variables
        bins = self.bins

        def compute(zero):
            return stats.batched_statistics(
                [keras.ops.convert_to_tensor(v.value) for v in variables], bins, zero=zero
            )

        self._compute_fn = tiering.function(compute)

    def log_event(self, epoch):
        buckets, norms, counts = (backend.to_numpy(t) for t in self._compute_fn(stats.zero()))
        for i, variable in enumerate(self._variables):
            tag = f"weights/{variable.path}"
            ops.write_histogram(tag, buckets[i], epoch)
            ops.write_scalar(tag + "/norm", norms[i], epoch)
        ops.write_scalar("weights/nonfinite_values", counts.sum(), epoch)
        bad = [(v.path, int(n), int(np.prod(v.shape))) for v, n in zip(self._variables, counts) if n]
        if bad:
            rows = [(path, f"{n} of {size}") for path, n, size in bad]
            ops.write_markdown(
                "weights/alerts",
                f"**Non-finite weights at epoch {epoch}**\n\n"
                + ops.markdown_table(["variable", "NaN/Inf values"], rows),
                epoch,
            )
            warnings.warn(
                f"tb_explain: non-finite weights at epoch {epoch}: "
                + ", ".join(f"{p} ({n} of {s} values)" for p, n, s in bad),
                RuntimeWarning,
                stacklevel=2,
            )
        if self.images:
            for variable in self._variables:
                image = weight_image(backend.to_numpy(variable))
                if image is not None:
                    ops.write_images(f"weights/{variable.path}/image", image, epoch)
