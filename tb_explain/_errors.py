"""Errors shared by the compute functions and the callbacks."""


class NotApplicable(ValueError):
    """A callback cannot run on this model at all: no loss, no labels, no
    `call()`, no input it can attribute.

    A callback the user constructs raises it (a `ValueError`) before
    training; one that `tbx.explain()` made is left out of the fit instead,
    and named once under `tb_explain/skipped` (see `tb_explain.callbacks.base.Suite`).
    """
