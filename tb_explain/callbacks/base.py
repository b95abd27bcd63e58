"""Shared behaviour of every tb_explain callback: schedule, writer, timing."""

import contextlib
import logging
import re
import time
import traceback
import warnings

import keras

from tb_explain import _compat, _validate, backend, tags
from tb_explain._errors import NotApplicable
from tb_explain._keras import has_call, is_ready
from tb_explain.callbacks import _fit_iterators
from tb_explain.compute import tiering
from tb_explain.summary import ops
from tb_explain.summary.writer import RunWriter, is_chief


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class LoggingFailedWarning(RuntimeWarning):
    """A tb_explain logging event failed; training went on.

    The event's error is also written as Text under `<prefix>/alerts` of the
    callback (`weights/alerts`, `attributions/alerts`...). The test suite
    turns this warning into an error, so it never hides a bug.
    """


class Suite:
    """The callbacks one `tbx.explain()` call made: those that cannot run on
    the model leave the fit, and the first epoch end names them all once
    (a log line and the Text card `tb_explain/skipped`)."""

    tag = tags.SKIPPED

    def __init__(self):
        self.skipped = {}  # callback name -> why
        self._reported = set()

    def skip(self, name, why):
        """Records that `name` (a callback, or a part of one) is left out."""
        why = str(why).strip()
        if why.startswith((name + " ", name + ":")):
            why = why[len(name) + 1:].strip()
        self.skipped[name] = why

    def pending(self):
        """Whether some skipped callback is not reported yet."""
        return not self._reported.issuperset(self.skipped)

    def report(self, epoch):
        """Writes the skipped callbacks not reported yet (inside a writer's
        `record`)."""
        new = {n: why for n, why in self.skipped.items() if n not in self._reported}
        self._reported |= set(new)
        logging.getLogger("tb_explain").warning(
            "explain(): left out %s", "; ".join(f"{n} ({why})" for n, why in new.items()))
        ops.write_markdown(self.tag, "**Left out of this fit** (they cannot run on this "
                           "model; the rest of the suite logs as usual):\n\n" + "\n".join(
                               f"- **{n}**: {why}" for n, why in self.skipped.items()), epoch)


class ExplainCallback(keras.callbacks.Callback):
    """Base class of the tb_explain callbacks.

    Subclasses implement `log_event(epoch)` (called inside the run writer's
    context, so `summary.ops.write_*` calls land in the run) and may implement
    `validate_model()` (checks that need the model, run in `on_train_begin`)
    and `prepare()` (one-time setup that needs a built model).

    Faults: configuration errors raise before training (`validate_model`,
    `prepare`); anything that fails later, inside a logging event, becomes
    one `LoggingFailedWarning` and a Text card `<tag_prefix>/alerts`, and
    training goes on.

    Setup: `prepare()` validates (eagerly, without tracing, unless the
    callback compiles from the start); its duration is logged once as
    `timing/<callback>_setup_seconds`, so the per-event
    `timing/<callback>_seconds` shows the steady cost. The first
    `eager_events` events run eagerly (`compute.tiering`); the compiled
    functions trace at the next one.

    Schedule: an event is logged at the end of epoch `e` when `e % freq == 0`
    (absolute epoch, so `fit(initial_epoch=k)` continues the same axis) and
    always at the last epoch of a fit, including one cut short by
    `model.stop_training`. The step of everything logged is the epoch, the
    axis of keras's `epoch_*` scalars. Each event also logs the seconds it
    took as `timing/<callback>_seconds`.

    Args:
        log_dir: Directory of the run; created if missing. Every tb_explain
            callback with the same `log_dir` writes one event stream there.
        freq: Log every `freq` epochs (int >= 1).
    """

    #: First tag segment of what the callback writes (its `alerts` go there).
    tag_prefix = "tb_explain"

    #: Events run eagerly after each setup (`compute.tiering`): setup and
    #: these first events trace nothing; the compiled functions trace at the
    #: next event. None: automatic (`tiering.eager_events`: 20 on small
    #: models, 12 on others); 0 compiles from the start.
    eager_events = None

    #: Whether the callback runs the model forward (on the probe or a
    #: dataset): a model without `call()` cannot serve it (`NotApplicable`).
    needs_call = False

    def __init__(self, log_dir, freq=1):
        super().__init__()
        self.log_dir = _validate.check_log_dir(log_dir)
        self.freq = _validate.check_int("freq", freq, minimum=1)
        self._writer = None
        self._prepared = None  # (writer, model) the compiled functions were made for
        self._ready = False
        self._last_epoch = None
        self._last_logged = None
        self._epochs = None
        self._setup_seconds = None
        self._events = 0
        self._eager_limit = 0
        #: The `Suite` of the `tbx.explain()` call that made this callback
        #: (None when the user constructed it): `NotApplicable` then leaves
        #: the callback out of the fit instead of raising.
        self.suite = None
        self._skipped = False

    # -- hooks for subclasses -------------------------------------------------
    def validate_model(self):
        """Checks the configuration against `self.model` (raise on error)."""

    def prepare(self):
        """One-time setup that needs a built model (compiled functions...)."""

    def log_event(self, epoch):
        """Writes this callback's summaries for `epoch`."""
        raise NotImplementedError

    # -- keras callback protocol ----------------------------------------------
    @property
    def timing_tag(self):
        """Tag of the scalar holding each logging event's duration (seconds)."""
        return f"timing/{_snake(type(self).__name__)}_seconds"

    @property
    def setup_tag(self):
        """Tag of the scalar holding the one-time setup's duration (seconds)."""
        return f"timing/{_snake(type(self).__name__)}_setup_seconds"

    @contextlib.contextmanager
    def _applicable(self):
        """Context of the model checks: `NotApplicable` skips a suite member."""
        try:
            yield
        except NotApplicable as exc:
            if self.suite is None:
                raise
            self.suite.skip(type(self).__name__, exc)
            self._skipped = True

    def on_train_begin(self, logs=None):
        _compat.check_backend_unchanged()
        self._skipped = False
        self._epochs = (self.params or {}).get("epochs")
        self._last_epoch = None
        self._last_logged = None
        with self._applicable():
            if self.needs_call and not has_call(self.model):
                raise NotApplicable(
                    f"{type(self).__name__} runs the model forward, but model "
                    f"{self.model.name!r} ({type(self.model).__name__}) defines no `call()`")
            self.validate_model()
        if self._writer is None:
            self._writer = RunWriter.acquire(self.log_dir, chief=is_chief(self.model))
        self._ready = self._skipped or self._maybe_prepare()

    def on_train_batch_begin(self, batch, logs=None):
        # A model built by its first batch (no Input, subclassed) is checked
        # and prepared right after that batch, not after a whole epoch. A
        # batch-begin hook, not a batch-end one: Keras turns every batch's
        # logs into Python numbers (a device sync per batch) and gives up
        # its asynchronous dispatch for callbacks with a batch-end hook.
        if batch == 0:  # the epoch's input iterator: see `_fit_iterators`
            _fit_iterators.hold()
        if not self._ready and self._writer is not None:
            self._ready = self._skipped or self._maybe_prepare()

    def _maybe_prepare(self):
        # Compiled logging functions capture the writer they were traced
        # with: prepare again for a new writer (or a new model).
        key = (id(self._writer), id(self.model))
        if self._prepared != key and is_ready(self.model):
            start = time.perf_counter()
            probe = getattr(self, "probe", None)
            inputs = [] if probe is None else keras.tree.flatten(probe.x)
            self._eager_limit = (tiering.eager_events(self.model, inputs)
                                 if self.eager_events is None else self.eager_events)
            with tiering.eager(self._eager_limit > 0), self._applicable():
                self.prepare()
            if self._skipped:
                return True
            self._setup_seconds = time.perf_counter() - start
            self._prepared = key
            self._events = 0
        return self._prepared == key

    def should_log(self, epoch):
        """Returns True if `epoch` is on the schedule."""
        last = self._epochs is not None and epoch == self._epochs - 1
        return epoch % self.freq == 0 or last

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if self.suite is not None and self._writer is not None and self.suite.pending():
            with self._writer.record(epoch):
                self.suite.report(epoch)
        if self.should_log(epoch) and not self._skipped:
            self.log_now(epoch)

    def on_train_end(self, logs=None):
        _fit_iterators.release_all()
        try:
            if self._last_epoch is not None and self._last_logged != self._last_epoch \
                    and not self._skipped:
                self.log_now(self._last_epoch)
        finally:
            if self._writer is not None:
                self._writer.release()
                self._writer = None

    @contextlib.contextmanager
    def model_checks(self, passing=("`",)):
        """Context of checks against the model: errors whose message starts
        with one of `passing` (tb_explain's own argument errors start with
        the parameter's name in backquotes) go through as they are; any other
        `ValueError` or backend error the model raised (`backend.model_errors`:
        TensorFlow's `InvalidArgumentError`...) becomes `probe_failed`."""
        try:
            yield
        except backend.model_errors() as exc:
            raise self.probe_failed(exc) from exc
        except NotApplicable as exc:
            name = type(self).__name__
            if str(exc).startswith(name):
                raise
            raise NotApplicable(f"{name}: {exc}") from exc
        except ValueError as exc:
            if str(exc).startswith(passing):
                raise
            raise self.probe_failed(exc) from exc

    def probe_failed(self, exc):
        """A `ValueError` saying that the probe does not fit the model."""
        return ValueError(
            f"{type(self).__name__}: the model {self.model.name!r} cannot run on `data` (the "
            f"probe): {type(exc).__name__}: {str(exc).strip().splitlines()[0][:400]}")

    def log_now(self, epoch):
        """Logs one event at step `epoch`, timed, and flushes it to disk."""
        if self._writer is None:
            raise RuntimeError(
                f"{type(self).__name__} logs during model.fit only "
                "(on_train_begin was not called)."
            )
        if not self._maybe_prepare():
            return
        start = time.perf_counter()
        with self._writer.record(epoch), tiering.eager(self._events < self._eager_limit):
            self._events += 1
            try:
                self.log_event(epoch)
            except Exception as exc:  # a logging fault must never end a fit
                self.event_failed(epoch, exc)
            ops.write_scalar(
                self.timing_tag, time.perf_counter() - start, epoch,
                description="Seconds this callback's logging event took.",
            )
            if self._setup_seconds is not None:
                ops.write_scalar(
                    self.setup_tag, self._setup_seconds, epoch,
                    description="Seconds of this callback's one-time setup (validation, "
                                "tracing and warm-up of its compiled functions).")
                self._setup_seconds = None
        self._last_logged = epoch

    def event_failed(self, epoch, exc):
        """Reports a failed logging event: a warning and `<prefix>/alerts`."""
        name = type(self).__name__
        summary = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        trace = "".join(traceback.format_exception(exc)[-6:])
        try:
            ops.write_markdown(
                f"{self.tag_prefix}/alerts",
                f"**{name} failed to log epoch {epoch}**, training went on.\n\n"
                f"    {summary}\n\n```\n{trace}\n```", epoch)
        finally:
            warnings.warn(f"tb_explain: {name} failed to log epoch {epoch} and skipped it "
                          f"(training goes on): {summary}", LoggingFailedWarning, stacklevel=3)
