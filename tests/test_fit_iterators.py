"""Each epoch's input iterator dies off the training thread (`_fit_iterators`)."""

import sys
import threading
import weakref

import keras
import numpy as np
import pytest

import tb_explain as tbx
from tb_explain.callbacks import _fit_iterators


pytestmark = pytest.mark.tensorflow_only


class _Deaths(keras.callbacks.Callback):
    """Records, for the iterator of each epoch, the thread it was deleted on
    (weakref finalizers run where the last reference goes)."""

    def __init__(self):
        super().__init__()
        self.threads = {}
        self._finalizers = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch:
            return
        frame = sys._getframe()
        while frame is not None and frame.f_code.co_name != "fit":
            frame = frame.f_back
        iterator = frame.f_locals["iterator"]
        epoch = len(self._finalizers)
        self._finalizers.append(weakref.finalize(
            iterator, lambda: self.threads.setdefault(epoch, threading.current_thread().name)))


def _fit(callbacks, epochs=4):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    y = np.arange(32) % 3
    deaths = _Deaths()
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=[*callbacks, deaths])
    return deaths


def _wait_for(deaths, count):
    for _ in range(200):
        if len(deaths.threads) >= count:
            return
        threading.Event().wait(0.01)


def test_keras_alone_deletes_each_iterator_on_the_training_thread():
    # The behaviour the module works around: without it, Keras drops the
    # previous epoch's iterator on the training thread at the next epoch.
    deaths = _fit([])
    assert [deaths.threads.get(e) for e in range(3)] == ["MainThread"] * 3


def test_iterators_die_on_the_background_thread(tmp_path):
    deaths = _fit([tbx.WeightHistograms(str(tmp_path))])
    _wait_for(deaths, 4)
    # Every epoch's iterator, the last one included (released at the fit's
    # end), went on tb_explain's thread, none on the training thread.
    assert [deaths.threads.get(e) for e in range(4)] == ["tb_explain-iterators"] * 4
    assert not _fit_iterators._HELD


def test_hold_outside_a_fit_does_nothing():
    assert _fit_iterators.hold() is False
    assert not _fit_iterators._HELD


def test_an_iterator_kept_across_epochs_is_held_once(tmp_path):
    # With steps_per_epoch Keras keeps one iterator for the whole fit.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((64, 6), dtype=np.float32)
    history = model.fit(x, np.arange(64) % 3, epochs=3, batch_size=8,
                        steps_per_epoch=2, verbose=0,
                        callbacks=[tbx.WeightHistograms(str(tmp_path))])
    assert len(history.history["loss"]) == 3
    assert not _fit_iterators._HELD
