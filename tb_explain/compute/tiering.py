"""Eager first, compiled later: when tb_explain's compiled functions trace.

Tracing a model's forward and backward pass into a graph costs several
eager calls of the same Python (ResNet50's gradient statistics: 2.1 s to
trace and 1.3 s more on the first call, against 0.8 s for one eager call;
the demo CNN's: 0.12 s against 0.02 s), and on big models an eager call is
about as fast as a compiled one (ResNet50's integrated gradients: 4.9 s
against 4.7 s), the work being in the kernels. Most fits log a handful of
events. So a callback runs its first events eagerly (`eager()`), which
costs no tracing before the first epoch, and its compiled functions trace
at the first event after those: a long fit pays for the trace once, a short
fit never does. The attribution callbacks, whose events send many rows
through the model (samples x steps), compile from the start
(`eager_events = 0`): on a big model eager kernels are several times slower
than the compiled graph's (ResNet50's integrated gradients: 10-36 s against
4.9 s), and on the demo CNN, with TensorFlow's compiled calls free of
Grappler's rewrites, tracing costs about two eager events and a compiled
event a third to half of an eager one. The public functions
(`tbx.integrated_gradients`...) run compiled as before; the choice applies
to the calls made inside `eager()` on the calling thread only.

On JAX, whose eager operations compile each primitive for each new shape
on first use, no callback runs eager events: their compiled functions
compile ahead from `on_train_begin` (`backend.Function.trace`: traced
there, XLA's compile on a background thread while the first epoch trains),
which costs less than a process's first eager events (ResNet50, extra over
one IG event's floor in the first epoch: 1.66 against 2.28 with eager
events; the demo CNN's suite at freq=5, a process's first 3-epoch fit: 0.5-
0.7 s in its hooks compiling in the background, 2.3 s compiling on the
training thread, 12 s eagerly). Only a later fit on the same shapes in the
same process, whose primitives were compiled by the first, would be cheaper
eagerly (0.45 s): scripts fit once.
"""

import numpy as np

from tb_explain import backend
from tb_explain._keras import count_params

#: Context in which `backend.Function`s (the attribution cores, the
#: statistics functions) run their Python eagerly (this thread only).
eager = backend.eager
is_eager = backend.is_eager


def function(python_function, trace_with=None):
    """A statistics function (`compute.stats` inside): compiled where the
    backend computes statistics inside compiled functions (TensorFlow), run
    eagerly elsewhere (numpy statistics; the gradient passes compile on their
    own, and `trace_with`, when given, traces them ahead); inside `eager()`
    its Python runs directly (`backend.Function`)."""
    return backend.Function(python_function, statistics=True, trace_with=trace_with)


#: Eager events of callbacks on small models (`small_model`) and on others.
#: A ski-rental rule: stay eager while the eager events' extra cost stays
#: below one trace. Measured: an eager event costs 0.02 s more than a
#: compiled one on the demo CNN and tracing its functions 0.4 s (about 20
#: events); on ResNet50 (2-sample probe, in a real fit) the gradient
#: statistics' eager event costs 0.9-1.2 s against 0.56 s compiled, and the
#: event that traces them 4.5 s more than a compiled one (about 12 events);
#: activation capture, riding on that eager pass (`SharedCapture`), 0.15-0.2 s
#: against 0.4 s compiled; the weight statistics, numpy block by block on a
#: thread pool, 0.12 s against 0.22 s.
SMALL_MODEL_EAGER_EVENTS = 20
EAGER_EVENTS = 12


def eager_events(model, inputs=()):
    """How many events a callback on `model` runs eagerly before it compiles
    (none where the backend's eager operations compile on first use: JAX,
    `backend.eager_first_events()`)."""
    if not backend.eager_first_events():
        return 0
    return SMALL_MODEL_EAGER_EVENTS if small_model(model, inputs) else EAGER_EVENTS


#: `small_model` bounds: parameters, and input values per sample.
SMALL_PARAMS = 1_000_000
SMALL_INPUT_VALUES = 1 << 16


def small_model(model, inputs):
    """True when per-op overhead, not kernel time, dominates `model` on
    `inputs` (a list of arrays): at most `SMALL_PARAMS` parameters and
    `SMALL_INPUT_VALUES` input values per sample. There an eager call costs
    about what a compiled one does, and skipping the trace saves most."""
    per_sample = sum(int(np.prod(np.shape(x)[1:])) for x in inputs)  # 0 without inputs
    return count_params(model) <= SMALL_PARAMS and per_sample <= SMALL_INPUT_VALUES
