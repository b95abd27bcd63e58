"""Errors and warnings shared by the compute functions and the callbacks."""


class SkippedWorkWarning(RuntimeWarning):
    """tb_explain left out part of its work and said so (an op graph that
    could not be traced, a conceptual graph the model cannot serialize).

    The test suite turns it into an error (`setup.cfg`), as it does
    `LoggingFailedWarning`: a test meets it only where it provokes it on
    purpose and asserts it.
    """


class NotApplicable(ValueError):
    """A callback cannot run on this model at all: no loss, no labels, no
    `call()`, no input it can attribute.

    A callback the user constructs raises it (a `ValueError`) before
    training; one that `tbx.explain()` made is left out of the fit instead,
    and named once under `tb_explain/skipped` (see `tb_explain.callbacks.base.Suite`).
    """
