"""Run writers: one event-file writer per run directory, shared and chief-only.

Every tb_explain callback that logs to the same `log_dir` writes through the
same `RunWriter`, so a run is one event stream in one directory, whatever the
number of callbacks. The events go through TensorBoard's own
`EventFileWriter` (the files TensorBoard reads, on every Keras backend, with
or without TensorFlow), never through `tf.summary`: a global recording
condition left active by another callback (`keras.callbacks.TensorBoard` with
an integer `update_freq` does that) can neither drop nor re-step them. Each
logging event is flushed at once, so an interrupted fit keeps everything
already logged.
"""

import contextlib
import os
import threading
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_explain import backend
from tb_explain.summary import ops

_LOCK = threading.Lock()
_REGISTRY = {}


def masked_crc32c(data):
    """TFRecord's masked CRC32C of `data`, from `google-crc32c`'s C code:
    TensorBoard's own writer computes it in pure Python (about 4 MB/s here),
    so an event of a few MB of images spent seconds on checksums alone."""
    import google_crc32c  # noqa: PLC0415

    x = google_crc32c.value(bytes(data))
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _use_fast_crc():
    """Gives TensorBoard's record writer `masked_crc32c` where `google-crc32c`
    has its C implementation (same values; the pure-Python one otherwise)."""
    try:
        import google_crc32c  # noqa: PLC0415
    except ImportError:
        return False
    if google_crc32c.implementation != "c":
        return False
    from tensorboard.summary.writer import record_writer  # noqa: PLC0415

    record_writer.masked_crc32c = masked_crc32c
    return True


FAST_CRC = _use_fast_crc()


def is_chief(model=None):
    """Returns True unless this process is not the one that writes: under
    `keras.distribution`, process 0 writes; under `tf.distribute`, the chief
    (or worker 0 of a cluster without one).

    Args:
        model: Optional Keras model whose distribution strategy is consulted
            when no strategy is active in the current scope.
    """
    from tb_explain.backend import distribution  # noqa: PLC0415

    if distribution.process_index() != 0:
        return False
    return getattr(backend.get(), "is_chief", lambda model: True)(model)


def _key(log_dir):
    if "://" in log_dir:
        return log_dir.rstrip("/")
    return os.path.realpath(log_dir)


class _NoopWriter:
    """The writer of a process that does not write (not the chief)."""

    def add_event(self, event):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class RunWriter:
    """A reference-counted event writer for one run directory.

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
        self._writer = EventFileWriter(log_dir) if chief else _NoopWriter()
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
            with ops.batched(step, self):
                yield self
        finally:
            self._writer.flush()

    def flush(self):
        """Flushes pending events to disk."""
        self._writer.flush()

    def write_summary(self, summary, step):
        """Appends a `Summary` proto to the run at `step`."""
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary))

    def write_graph(self, graph_def_bytes):
        """Appends a serialized `GraphDef` (the op graph) to the run."""
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), graph_def=graph_def_bytes))
