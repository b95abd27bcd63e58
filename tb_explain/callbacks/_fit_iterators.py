"""Keeps each epoch's input iterator of `model.fit` off the training thread's
critical path when it dies.

Deleting a `tf.data` iterator that autotunes (Keras's own pipelines over
arrays do: `prefetch(AUTOTUNE)`) waits until the iterator's autotuning
thread next wakes up; that thread sleeps for periods that double from 10 ms
to 60 s while the CPU is busy, and deleting the iterator does not wake it
(TensorFlow 2.21; a plain `tf.data` pipeline shows it: after 15 s of busy
CPU, `del iterator` takes 5.5 s, after 30 s 10.9 s, and 0.01 s with
autotuning off). Keras's TF trainer drops each epoch's iterator on the
training thread when the next epoch's first batch comes, so a long epoch
end (tb_explain's events, validation, a checkpoint) is followed by an idle
stall of up to a third of the iterator's lifetime: 1 to 40 s per epoch on
ResNet50 here, outside every callback.

`hold(...)`, called from a callback's first batch of each epoch, keeps a
reference to the epoch's iterator, read from the fit loop's frame; when
the next epoch's iterator replaces it, the previous one is released on a
background thread (once that thread holds its last reference: the last
epoch's goes when `fit` returns), whose wait harms nobody. Nothing about
the training changes (same iterator, same batches); where the fit loop is
not Keras's TF trainer, nothing happens.
"""

import queue
import sys
import threading
import time

_QUEUE = queue.SimpleQueue()
_LOCK = threading.Lock()
_THREAD = None  # the background thread, started with the first release
#: id(fit loop frame) -> the iterator held for it.
_HELD = {}

#: How far up the stack the fit loop is looked for (the callback's hook,
#: Keras's CallbackList, then the trainer's `fit`).
MAX_DEPTH = 8


#: How long the background thread waits to hold an iterator's last
#: reference (the fit loop's own goes when `fit` returns) before it drops
#: its own anyway, and how often it looks.
LAST_REFERENCE_WAIT = 120.0
POLL = 0.05


def _release_forever():
    while True:
        item = _QUEUE.get()
        deadline = time.monotonic() + LAST_REFERENCE_WAIT
        # 2: `item` and getrefcount's argument.
        while sys.getrefcount(item) > 2 and time.monotonic() < deadline:
            time.sleep(POLL)
        del item  # the iterator's deletion waits here, on this thread


def _release(iterator):
    global _THREAD
    with _LOCK:
        if _THREAD is None:
            _THREAD = threading.Thread(target=_release_forever, name="tb_explain-iterators",
                                       daemon=True)
            _THREAD.start()
    _QUEUE.put(iterator)


def _fit_frame(frame):
    for _ in range(MAX_DEPTH):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name == "fit" and "iterator" in code.co_varnames and \
                code.co_filename.replace("\\", "/").endswith("backend/tensorflow/trainer.py"):
            return frame
        frame = frame.f_back
    return None


def hold():
    """Holds the iterator of the running Keras fit (call from a callback's
    `on_train_batch_begin`); the one it replaces is released in the
    background. Returns whether a fit loop was found."""
    frame = _fit_frame(sys._getframe(1))
    if frame is None:
        return False
    key = id(frame)
    iterator = frame.f_locals.get("iterator")
    del frame
    if iterator is None:
        return True
    with _LOCK:
        previous = _HELD.get(key)
        if previous is iterator:
            return True
        _HELD[key] = iterator
    if previous is not None:
        _release(previous)
    return True


def release_all():
    """Releases every held iterator in the background (at the fit's end)."""
    with _LOCK:
        held = list(_HELD.values())
        _HELD.clear()
    for iterator in held:
        _release(iterator)
