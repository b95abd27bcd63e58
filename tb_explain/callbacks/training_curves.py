"""TrainingCurves: the epoch scalars `keras.callbacks.TensorBoard` writes, on
every backend, without TensorFlow."""

import os
import sys

import keras
import numpy as np

from tb_explain import _compat, _validate, backend, tags
from tb_explain.summary import ops
from tb_explain.summary.writer import RunWriter, is_chief

#: Subdirectories (TensorBoard runs) of `log_dir`, as Keras's callback names them.
TRAIN, VALIDATION = tags.CURVE_RUNS


def _learning_rates(model):
    """`{name: value}` of the learning rate(s), as Keras's TensorBoard
    callback collects them (a `LossScaleOptimizer`'s inner optimizer; one
    entry per optimizer of a multi-optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if hasattr(optimizer, "optimizers"):
        return {f"learning_rate_{o.name}": float(backend.to_numpy(o.learning_rate))
                for o in optimizer.optimizers}
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return {"learning_rate": float(backend.to_numpy(optimizer.learning_rate))}
    return {}


def _fit_callbacks():
    """The callbacks of the `CallbackList` whose hook is running now (found
    on the call stack: Keras gives a callback no handle on its siblings), or
    an empty list."""
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            return list(owner.callbacks)
        frame = frame.f_back
    return []


def _same_dir(a, b):
    return os.path.realpath(str(a)) == os.path.realpath(str(b))


class TrainingCurves(keras.callbacks.Callback):
    """Writes the loss and metric curves of every epoch, as Keras's own
    TensorBoard callback does, on TensorFlow, JAX and PyTorch alike.

    The scalars and runs are those of `keras.callbacks.TensorBoard`, so the
    Scalars dashboard and existing habits read them unchanged: at the end of
    every epoch `epoch_loss`, `epoch_<metric>` and `epoch_learning_rate` in
    the run `<log_dir>/train`, the validation values (`val_` stripped) as
    `epoch_<name>` in `<log_dir>/validation`, and after each validation pass
    `evaluation_<name>_vs_iterations` there at the optimizer's step. They go
    through TensorBoard's own event writer (Keras's callback imports
    TensorFlow on every backend). When a `keras.callbacks.TensorBoard` on the
    same `log_dir` is in the same fit, this callback writes nothing (no
    duplicate curves). Only the writing process writes (`keras.distribution`'s
    process 0, `tf.distribute`'s chief).

    Args:
        log_dir: The run directory (the one given to the other tb_explain
            callbacks); the curves go to its `train` and `validation`
            subdirectories.

    Example:

    ```python
    model.fit(x, y, epochs=10, validation_data=(x_val, y_val),
              callbacks=[tbx.TrainingCurves("runs/exp1")])
    ```
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = _validate.check_log_dir(log_dir)
        self._writers = {}
        #: Whether a `keras.callbacks.TensorBoard` on this `log_dir` writes
        #: the curves in the running fit (then this callback does not).
        self.deferred = False

    def on_train_begin(self, logs=None):
        _compat.check_backend_unchanged()
        self.deferred = any(isinstance(c, keras.callbacks.TensorBoard)
                            and _same_dir(c.log_dir, self.log_dir) for c in _fit_callbacks())
        if not self.deferred and not self._writers:
            chief = is_chief(self.model)
            self._writers = {name: RunWriter.acquire(os.path.join(self.log_dir, name), chief=chief)
                             for name in (TRAIN, VALIDATION)}

    def _write(self, run, values, step):
        if not values or self.deferred or run not in self._writers:
            return
        with self._writers[run].record(step):
            for name, value in values.items():
                value = np.asarray(backend.to_numpy(value), np.float64)
                if value.size == 1:
                    ops.write_scalar(name, float(value.reshape(())), step)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        if getattr(self.model, "optimizer", None) is not None:
            train.update(_learning_rates(self.model))
        self._write(TRAIN, {f"epoch_{k}": v for k, v in train.items()}, epoch)
        self._write(VALIDATION, {f"epoch_{k[4:]}": v for k, v in logs.items()
                                 if k.startswith("val_")}, epoch)

    def on_test_end(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "iterations") or not logs:
            return
        step = int(backend.to_numpy(optimizer.iterations))
        self._write(VALIDATION, {f"evaluation_{k}_vs_iterations": v for k, v in logs.items()},
                    step)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.release()
        self._writers = {}
