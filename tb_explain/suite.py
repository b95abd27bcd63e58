"""explain(): the whole suite of callbacks in one call."""

import inspect
import logging

from tb_explain import _validate
from tb_explain import datasets as streams
from tb_explain.callbacks import (
    ActivationImages, AttentionMaps, Attributions, DecisionRules, Embeddings, FeatureImportance, GradientNorms,
    HParams, IntegratedGradients, ModelGraph, Predictions, TrainingCurves, TrainingDynamics,
    WeightHistograms,
)
from tb_explain.callbacks.base import Suite
from tb_explain.compute import importance
from tb_explain.compute.attribution import METHODS

#: Callbacks in the suite, in order: (class, the data it needs: None, the
#: probe `data`, `data` as a table (with labels), the named `datasets`, or
#: their `"train"` entry as arrays). TrainingDynamics comes after Predictions,
#: whose pass over `"train"` feeds it (one forward pass per epoch for both).
#: GradientNorms comes before ActivationImages: its eager forward pass of the
#: probe also captures the activations (`compute.activations.SharedCapture`).
SUITE = [
    (TrainingCurves, None), (ModelGraph, None), (HParams, None), (WeightHistograms, None),
    (GradientNorms, "data"),
    (ActivationImages, "data"), (AttentionMaps, "data"), (IntegratedGradients, "data"), (Attributions, "methods"),
    (FeatureImportance, "labelled table"), (DecisionRules, "table"), (Predictions, "datasets"),
    (TrainingDynamics, "train"), (Embeddings, "datasets"),
]


#: Rows a table needs for the tabular callbacks to join the suite.
MIN_TABLE_ROWS = 32


def _tables(data):
    """What `data` offers the tabular callbacks: `{"table", "labelled table"}` or less."""
    if data is None or streams.is_stream(data):
        return set()
    x = data[0] if isinstance(data, tuple) else data
    try:
        leaves, _, _ = importance.tables(x)
    except (ValueError, TypeError):
        return set()
    if len(leaves[0]) < MIN_TABLE_ROWS:
        logging.getLogger("tb_explain").info(
            "explain(): FeatureImportance and DecisionRules need a table of at least %d rows "
            "as `data`; it has %d.", MIN_TABLE_ROWS, len(leaves[0]))
        return set()
    labelled = isinstance(data, tuple) and len(data) > 1 and data[1] is not None
    return {"table", "labelled table"} if labelled else {"table"}


def _has_sklearn():
    try:
        import sklearn  # noqa: F401, PLC0415
    except ImportError:
        logging.getLogger("tb_explain").warning(
            "explain(): DecisionRules left out: it needs scikit-learn "
            "(pip install 'tb_explain[rules]').")
        return False
    return True


def explain(log_dir, data=None, freq=1, datasets=None, methods=None, privacy="off",
            **options):
    """Returns every tb_explain callback for `log_dir`, ready for `model.fit`.

    Always `TrainingCurves` (the loss and metric curves Keras's TensorBoard
    callback writes, on every backend; nothing when that callback is in the
    same fit on the same `log_dir`), `ModelGraph`, `HParams` and
    `WeightHistograms`; with probe `data`,
    also `ActivationImages`, `GradientNorms` and `IntegratedGradients`, and
    `AttentionMaps` when the model has attention layers (it leaves quietly
    otherwise); when
    `data` is a table (2-D float arrays) of at least 32 rows, also
    `FeatureImportance` (with
    labels) and `DecisionRules` (with scikit-learn installed), which read all
    of `data` (the probe callbacks keep its first `max_samples` rows); with
    `datasets`, also `Predictions` and `Embeddings` (the Projector), and
    `TrainingDynamics` when `datasets` has a `"train"` entry with class
    labels, arrays or a stream of batches in a fixed order (fed by
    Predictions' pass over it: one forward pass per logged epoch serves
    both; a regression model leaves it out, said under
    `tb_explain/skipped`).
    Options are passed to every callback that accepts them by name (for
    instance `max_samples` to all three probe callbacks); an option no
    callback accepts is a `TypeError`.

    Args:
        log_dir: Directory of the run (created if missing).
        data: Optional probe data for the callbacks that need it.
        datasets: Optional labelled datasets for `Predictions` and
            `Embeddings`: one, or a dict
            `{name: dataset}` (`{"train": (x, y), "val": (x_val, y_val)}`).
        privacy: `"off"`, `"inputs"` or `"strict"`, for every callback that
            renders data (see the README's "Privacy"), and recorded in the
            run's HParams.
        methods: Optional attribution methods for `Attributions`
            (`["saliency", "smoothgrad", "gradcam", "occlusion"]`, the SHAP
            family `"shapley"`, `"kernel_shap"`, `"gradient_shap"`, `"deeplift"`,
            `"deeplift_shap"`); their
            options (`samples=`, `window=`...) are accepted too.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        **options: Keyword arguments of individual callbacks, such as
            `images=True` (WeightHistograms), `steps=64` (IntegratedGradients)
            or `hparams={"dropout": 0.2}` (HParams).

    Returns:
        A list of callbacks sharing one writer and one run directory.

    Example:

    ```python
    model.fit(x, y, epochs=30, validation_data=(x_val, y_val),
              callbacks=tbx.explain("runs/exp1", data=(x_val[:8], y_val[:8]), freq=5,
                                    datasets={"train": (x, y), "val": (x_val, y_val)}))
    ```
    """
    log_dir = _validate.check_log_dir(log_dir)
    _validate.check_privacy(privacy)
    options["privacy"] = privacy
    freq = _validate.check_int("freq", freq, minimum=1)
    signatures = [(cls, needs, {name for name, p in inspect.signature(cls.__init__).parameters.items()
                                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)})
                  for cls, needs in SUITE]
    accepted = set().union(*(params for _, _, params in signatures))
    method_options = set().union(*(METHODS[m][1] for m in methods or () if m in METHODS))
    accepted |= method_options
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"explain() got unknown option(s) {unknown}; options are "
            f"{sorted(accepted - {'self', 'log_dir', 'data', 'freq'})} (and `datasets`)."
        )
    callbacks = []
    suite = Suite()
    given = {"data": data, "datasets": datasets,
             "methods": data if methods is not None else None,
             "train": _train_arrays(datasets)}
    tables = _tables(data)
    for cls, needs, params in signatures:
        if needs in ("table", "labelled table"):
            if needs not in tables or (cls is DecisionRules and not _has_sklearn()):
                continue
            given[needs] = data
        elif needs is not None and given[needs] is None:
            continue
        kwargs = {k: v for k, v in options.items() if (k in params
                  or (cls is Attributions and k in method_options))
                  and not (cls is AttentionMaps and k == "layers")}  # ActivationImages' layers
        if cls is Attributions:
            kwargs["methods"] = methods
        if "freq" in params:
            kwargs["freq"] = freq
        if needs is not None:
            kwargs["data"] = given[needs]
        if cls is TrainingDynamics:
            kwargs["data"] = {"train": given["train"]}
            try:
                callback = cls(log_dir, **kwargs)
            except ValueError as exc:  # regression targets: nothing to track
                suite.skip(cls.__name__, str(exc).replace("`data` dataset 'train': ", ""))
                continue
        else:
            callback = cls(log_dir, **kwargs)
        callback.suite = suite
        callbacks.append(callback)
    predictions = [c for c in callbacks if isinstance(c, Predictions)]
    for dynamics in (c for c in callbacks if isinstance(c, TrainingDynamics)):
        if predictions:  # one pass over "train" feeds both
            predictions[0].feeds["train"] = dynamics
    return callbacks


def _train_arrays(datasets):
    """`datasets["train"]` when TrainingDynamics may track it (arrays with
    labels, or a stream of labelled batches), else None."""
    if not isinstance(datasets, dict):
        return None
    train = datasets.get("train")
    if streams.is_stream(train):
        return train
    if not isinstance(train, tuple) or len(train) not in (2, 3) or train[1] is None:
        if train is not None:
            logging.getLogger("tb_explain").info(
                "explain(): TrainingDynamics tracks datasets['train'] given with labels, as "
                "(x, y) or a stream of (x, y) batches.")
        return None
    return train
