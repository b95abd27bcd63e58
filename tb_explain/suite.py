"""explain(): the whole suite of callbacks in one call."""

import inspect

from tb_explain import _validate
from tb_explain.callbacks import (
    ActivationImages, GradientNorms, HParams, IntegratedGradients, ModelGraph, WeightHistograms,
)

#: Callbacks in the suite, in order: (class, needs probe data).
SUITE = [
    (ModelGraph, False), (HParams, False), (WeightHistograms, False), (ActivationImages, True), (GradientNorms, True),
    (IntegratedGradients, True),
]


def explain(log_dir, data=None, freq=1, **options):
    """Returns every tb_explain callback for `log_dir`, ready for `model.fit`.

    Always `ModelGraph`, `HParams` and `WeightHistograms`; with probe `data`,
    also `ActivationImages`, `GradientNorms` and `IntegratedGradients`.
    Options are passed to every callback that accepts them by name (for
    instance `max_samples` to all three probe callbacks); an option no
    callback accepts is a `TypeError`.

    Args:
        log_dir: Directory of the run (created if missing).
        data: Optional probe data for the callbacks that need it.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        **options: Keyword arguments of individual callbacks, such as
            `images=True` (WeightHistograms), `steps=64` (IntegratedGradients)
            or `hparams={"dropout": 0.2}` (HParams).

    Returns:
        A list of callbacks sharing one writer and one run directory.

    Example:

    ```python
    model.fit(x, y, epochs=30, callbacks=[
        keras.callbacks.TensorBoard("runs/exp1"),
        *tbx.explain("runs/exp1", data=(x_val[:8], y_val[:8]), freq=5)])
    ```
    """
    log_dir = _validate.check_log_dir(log_dir)
    freq = _validate.check_int("freq", freq, minimum=1)
    signatures = [(cls, needs, inspect.signature(cls.__init__).parameters)
                  for cls, needs in SUITE]
    accepted = set().union(*(params for _, _, params in signatures))
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"explain() got unknown option(s) {unknown}; options are "
            f"{sorted(accepted - {'self', 'log_dir', 'data', 'freq'})}."
        )
    callbacks = []
    for cls, needs_data, params in signatures:
        if needs_data and data is None:
            continue
        kwargs = {k: v for k, v in options.items() if k in params}
        if "freq" in params:
            kwargs["freq"] = freq
        if needs_data:
            kwargs["data"] = data
        callbacks.append(cls(log_dir, **kwargs))
    return callbacks
