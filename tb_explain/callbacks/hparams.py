"""HParams callback."""

import inspect
import numbers
import os

import keras
import numpy as np
from tensorboard.plugins.hparams import summary_v2 as hp

from tb_explain import _validate
from tb_explain._keras import count_params
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.summary import ops


def _fit_batch_size():
    """Best effort: the `batch_size` passed to the running `model.fit`.

    Keras 3 does not hand it to callbacks; it is read from the `fit` frame.
    Returns None when unknown (a dataset input, another trainer).
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            code = frame.f_code
            if code.co_name == "fit" and "keras" in code.co_filename:
                value = frame.f_locals.get("batch_size")
                return int(value) if isinstance(value, numbers.Integral) else None
            frame = frame.f_back
    finally:
        del frame
    return None


class HParams(ExplainCallback):
    """Logs the run's configuration and final metrics to the HParams dashboard.

    At train begin: optimizer class and learning rate, batch size (when
    `fit` was given one), epochs, parameter count, model name, and your own
    `hparams`, through TensorBoard's `hparams` API, so runs sort and filter
    side by side. At each epoch end: every metric keras reports (`loss`,
    `val_loss`, `accuracy`...) as `hparams/<metric>` scalars, which the
    dashboard shows as the metrics of the run (their last values: the final
    metrics).

    Args:
        log_dir: Directory of the run (created if missing).
        hparams: Optional dict of your own hyperparameters (str keys; bool,
            int, float or str values); they override the detected ones.
        trial_id: Name of the run in the dashboard (default: `log_dir`'s
            last component).
        privacy: The privacy level the run's logs were written at (`"off"`,
            `"inputs"`, `"strict"`), recorded as the `privacy` hyperparameter
            so a shared log says how it was made (`tbx.explain` passes its
            own); absent means "off", so runs logged before levels existed
            compare as they were.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        tbx.HParams("runs/lr1e-3", hparams={"dropout": 0.2, "augment": True})])
    ```
    """

    tag_prefix = "hparams"

    def __init__(self, log_dir, hparams=None, trial_id=None, privacy="off"):
        super().__init__(log_dir, freq=1)
        hparams = dict(hparams or {})
        for key, value in hparams.items():
            if not isinstance(key, str):
                raise TypeError(f"`hparams` keys must be str, got {key!r}.")
            if not isinstance(value, (bool, numbers.Real, str)):
                raise TypeError(
                    f"`hparams[{key!r}]` must be a bool, int, float or str, got {value!r} of "
                    f"type {type(value).__name__}.")
        self.hparams = hparams
        self.privacy, _ = _validate.check_privacy(privacy)
        if trial_id is not None and not isinstance(trial_id, str):
            raise TypeError(f"`trial_id` must be a str, got {trial_id!r}.")
        self.trial_id = trial_id or os.path.basename(os.path.normpath(self.log_dir))
        self._config_written = False
        self.values = {}

    def detected(self):
        """Returns the hyperparameters read off the model and `fit`."""
        model = self.model
        values = {"model": model.name, "parameters": count_params(model),
                  "epochs": int((self.params or {}).get("epochs") or 0),
                  "backend": keras.backend.backend()}
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            values["optimizer"] = type(optimizer).__name__
            rate = getattr(optimizer, "_learning_rate", None)
            if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
                values["learning_rate"] = type(rate).__name__  # a schedule: its name
            else:
                # float32 storage: keep the digits the user typed (1e-3, not 0.0010000000475)
                rate = float(np.asarray(optimizer.learning_rate))
                values["learning_rate"] = float(f"{rate:.7g}")
        if self.privacy != "off":  # absent: written with privacy="off"
            values["privacy"] = self.privacy
        batch_size = _fit_batch_size()
        if batch_size is not None:
            values["batch_size"] = batch_size
        return values

    def on_train_begin(self, logs=None):
        self._config_written = False
        self._prepared = None  # every fit writes its configuration
        super().on_train_begin(logs)

    def prepare(self):
        # Needs a built model (parameter count): a subclassed model is
        # prepared right after its first batch.
        self.values = {**self.detected(), **self.hparams}
        with self._writer.record(0):
            ops.write_proto(hp.hparams_pb(self.values, trial_id=self.trial_id), 0)

    def log_event(self, epoch):
        pass  # metrics are written in on_epoch_end, where keras's logs are

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()
                if isinstance(v, numbers.Real) or hasattr(v, "__float__")}
        with self._writer.record(epoch):
            if not self._config_written and logs and self.values:
                ops.write_proto(hp.hparams_config_pb(
                    hparams=[hp.HParam(name) for name in self.values],
                    metrics=[hp.Metric(f"hparams/{name}", display_name=name) for name in logs]),
                    epoch)
                self._config_written = True
            for name, value in logs.items():
                ops.write_scalar(f"hparams/{name}", value, epoch)
        self._last_epoch = epoch
        self._last_logged = epoch
