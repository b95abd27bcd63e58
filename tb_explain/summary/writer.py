"""Run writers: one summary writer per run directory, shared and chief-only.

Every tb_explain callback that logs to the same `log_dir` writes through the
same `RunWriter`, so a run is one event stream in one directory, whatever the
number of callbacks. Each logging event is written under
`tf.summary.record_if(True)` with an explicit step, so a global recording
condition left active by another callback (`keras.callbacks.TensorBoard` with
an integer `update_freq` does that) can neither drop nor re-step our
summaries, and it is flushed at once, so an interrupted fit keeps everything
already logged.
"""

import contextlib
import os
import threading

import tensorflow as tf

from tb_explain.summary import ops

_LOCK = threading.Lock()
_REGISTRY = {}


def is_chief(model=None):
    """Returns True unless this process is a non-chief worker of a cluster.

    Args:
        model: Optional Keras model whose distribution strategy is consulted
            when no strategy is active in the current scope.
    """
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    else:
        strategy = getattr(model, "distribute_strategy", None)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    if task_type == "worker":
        return "chief" not in cluster and (task_id or 0) == 0
    return False


def _key(log_dir):
    if "://" in log_dir:
        return log_dir.rstrip("/")
    return os.path.realpath(log_dir)


class RunWriter:
    """A reference-counted summary writer for one run directory.

    Obtain it with `acquire(log_dir)` and give it back with `release()`.
    The file writer stays open for the life of the process (compiled logging
    functions capture it, and a second `fit` on the same `log_dir` continues
    the same event file); `release()` flushes, `close()` closes.

    Args:
        log_dir: The run directory.
        chief: Whether this process writes. Non-chief processes get a writer
            that accepts and discards every summary.
    """

    def __init__(self, log_dir, chief=True):
        self.log_dir = log_dir
        self.chief = chief
        if chief:
            self._writer = tf.summary.create_file_writer(log_dir)
        else:
            self._writer = tf.summary.create_noop_writer()
        self._users = 0
        #: What callbacks on this run share between them (e.g. the latest
        #: mean |attribution| per feature, for the importance ranking).
        self.shared = {}

    @classmethod
    def acquire(cls, log_dir, chief=True):
        """Returns the shared writer of `log_dir`, creating it if needed."""
        key = _key(log_dir)
        with _LOCK:
            writer = _REGISTRY.get(key)
            if writer is None or writer.chief != chief:
                writer = cls(log_dir, chief=chief)
                _REGISTRY[key] = writer
            writer._users += 1
            return writer

    def release(self):
        """Gives the writer back, flushing it."""
        with _LOCK:
            self._users = max(0, self._users - 1)
            self._writer.flush()

    def close(self):
        """Closes the file writer; the next `acquire` opens a new event file."""
        with _LOCK:
            self._writer.close()
            key = _key(self.log_dir)
            if _REGISTRY.get(key) is self:
                del _REGISTRY[key]

    @contextlib.contextmanager
    def record(self, step):
        """Context in which summaries go to this run at `step`, then flush.

        Args:
            step: The int step (tb_explain uses the absolute epoch).
        """
        try:
            with self._writer.as_default(step=int(step)), tf.summary.record_if(True), \
                    ops.batched(step):
                yield self
        finally:
            self._writer.flush()

    def flush(self):
        """Flushes pending events to disk."""
        self._writer.flush()
