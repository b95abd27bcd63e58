"""ModelGraph callback."""

import warnings

from tb_explain import backend
from tb_explain._errors import SkippedWorkWarning
from tb_explain._keras import has_call, is_ready
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.summary import graph, ops


class ModelGraph(ExplainCallback):
    """Logs the model's graphs and summary once, when training starts.

    - The conceptual graph (tag `keras`), which TensorBoard's Graphs dashboard
      renders for Keras, for Sequential and Functional models.
    - An op graph traced from the forward pass `model(x, training=False)`,
      for every model kind, subclassed models included (Keras 3's own
      `TensorBoard(write_graph=True)` writes no op graph).
    - The model summary (layers by path, classes, output shapes, parameter
      counts) as a Markdown table in the Text dashboard (tag `model/summary`).

    A model that is not built when training starts (a Sequential without an
    `Input`, a subclassed model) is logged as soon as its first batch has
    built it. Graph problems produce a warning, never a failed fit. A model
    without `call()` (a GAN trained by its own `train_step`) gets its
    summary and no op graph.

    Args:
        log_dir: Directory of the run (created if missing).

    Example:

    ```python
    model.fit(x, y, callbacks=[tbx.ModelGraph("runs/exp1")])
    # tensorboard --logdir runs  ->  Graphs tab, tag "keras"; Text tab
    ```
    """

    tag_prefix = "model"

    def __init__(self, log_dir):
        super().__init__(log_dir, freq=1)
        self._done = False

    def on_train_begin(self, logs=None):
        self._done = False
        super().on_train_begin(logs)
        self._write_once()

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        if not self._done:
            self._write_once()

    def on_epoch_end(self, epoch, logs=None):
        self._write_once()  # a model built by a fit of a single batch


    def on_train_end(self, logs=None):
        self._last_epoch = None  # nothing per epoch to catch up on
        super().on_train_end(logs)

    def _write_once(self):
        if self._done or not is_ready(self.model):
            return
        self._done = True
        self.log_now(0)

    def log_event(self, epoch):
        graph.write_conceptual_graph(self.model, step=epoch)
        summary = graph.summary_markdown(self.model)
        if backend.name() != "tensorflow":  # a backend's property, not the model's: no alert
            summary += (f"\n\nNo op graph: op graphs are TensorFlow graphs, and this fit ran on "
                        f"Keras's {backend.name()!r} backend (the conceptual graph is written).")
        elif has_call(self.model):
            graph.write_op_graph(self.model)
        else:  # a model trained by its own train_step only: nothing to trace
            why = (f"model {self.model.name!r} ({type(self.model).__name__}) defines no "
                   "`call()` to trace")
            if self.suite is not None:
                self.suite.skip("ModelGraph (op graph)", why)
            else:
                warnings.warn(f"tb_explain: op graph skipped: {why}.", SkippedWorkWarning)
        ops.write_markdown("model/summary", summary, epoch)
