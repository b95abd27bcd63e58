"""Compiled cores: one cache of compiled functions per model (weakly keyed),
so each is compiled once per model and input shape; the forward pass shared
with the op graph `ModelGraph` writes; token inputs' `Embedding` layers
swapped for the values a core feeds them.

A core is written once on `keras.ops` and `tb_explain.backend` and compiled
by `backend.compile` (`tf.function`, `jax.jit` over the variables' values,
eager PyTorch); inside `tiering.eager()` its Python runs directly.
"""

import contextlib
import weakref

import keras
import numpy as np

from tb_explain import backend
from tb_explain._keras import float32_compute, is_mixed, keras_mask, swapped_call, walk_layers


_CACHE = weakref.WeakKeyDictionary()


def cache(model):
    """The dict of compiled functions kept for `model` (dies with the model)."""
    return _CACHE.setdefault(model, {})


def widest_output(model):
    """The most values one sample puts in a layer's output, from the model's
    symbolic graph (nested models' layers included); None for a model
    without one (subclassed) or of unknown sizes. Cached per model."""
    per_model = cache(model)
    if "widest_output" not in per_model:
        widest = None
        for _, _, layer in walk_layers(model):
            try:
                outputs = keras.tree.flatten(layer.output)
            except (AttributeError, ValueError):  # not in a graph, or shared
                continue
            for t in outputs:
                dims = tuple(getattr(t, "shape", ())[1:])
                if dims and all(isinstance(d, int) for d in dims):
                    widest = max(widest or 0, int(np.prod(dims)))
        per_model["widest_output"] = widest
    return per_model["widest_output"]


def forward(model):
    """`model(x, training=False)`, compiled once per model (`backend.compile`).

    On TensorFlow the same function (`.concrete`) traces the op graph
    `ModelGraph` writes (with a batch-agnostic signature), so the probe
    passes of the attribution methods reuse that trace.
    """
    per_model = cache(model)
    fn = per_model.get("forward")
    if fn is None:
        fn = per_model["forward"] = backend.compile(lambda x: model(x, training=False),
                                                    model.variables)
    return fn


_MIXED = weakref.WeakKeyDictionary()


def mixed(model):
    """`is_mixed(model)`, found once per model (its policies are set when it is built)."""
    if model not in _MIXED:
        _MIXED[model] = is_mixed(model)
    return _MIXED[model]


def explained_forward(model):
    """`forward(model)` as the explanations see it: for a mixed-precision
    model, a second compiled pass whose layers compute in float32
    (`float32_compute`), so targets and the scores the attributions are
    checked against come from the same precision as the attributions."""
    if not mixed(model):
        return forward(model)
    return _float32_pass(model, "forward32", lambda x: model(x, training=False))


def forward_and_masks(model):
    """Compiled `x -> (outputs, masks)`: the outputs as `explained_forward`
    gives them and, per output, the Keras mask it carries (an
    `Embedding(mask_zero=True)` upstream), all True where it carries none.
    A compiled function's outputs lose their `_keras_mask`: this carries it
    out, on every backend."""
    def run(x):
        outputs = model(x, training=False)

        def mask(output):
            carried = keras_mask(output)
            if carried is None or len(output.shape) < 2:
                first = output[..., 0] if len(output.shape) >= 2 else output
                return keras.ops.ones_like(first, dtype="bool")
            return keras.ops.cast(carried, "bool")
        return outputs, keras.tree.map_structure(mask, outputs)

    return _float32_pass(model, "forward_masks", run)


def _float32_pass(model, key, run):
    """`run` compiled once per model under `key`, its layers computing in
    float32 for a mixed-precision model (`.trace(x)`: `Function.trace`)."""
    per_model = cache(model)
    fn = per_model.get(key)
    if fn is None:
        compiled = backend.compile(run, model.variables)
        if not mixed(model):
            fn = compiled
        else:
            def fn(x):
                with float32_compute(model):
                    return compiled(x)

            def trace(x):
                with float32_compute(model):
                    return compiled.trace(x)
            fn.trace = trace
        per_model[key] = fn
    return fn


def _is_reverse(args, kwargs):
    """Whether an embedding call is a tied output projection: keras_hub's
    `ReversibleEmbedding(x, reverse=True)` (a causal LM's logits reuse the
    token embedding), which must run as it is."""
    return bool(kwargs.get("reverse")) or (len(args) > 1 and args[1] is True)


def held_embedding(layer, value):
    """A call for `layer` that returns `value()` for its token lookups and
    runs the layer as it is for a tied output projection (`reverse=True`)."""
    original = layer.call

    def call(*args, **kwargs):
        if _is_reverse(args, kwargs):
            return original(*args, **kwargs)
        return value()
    return call


@contextlib.contextmanager
def embeddings_swapped(plan, holder):
    """Context in which each token input's Embedding returns `holder[i]` for
    its lookups (a tied output projection still runs: `held_embedding`)."""
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(plan.embeddings):
            if layer is not None:
                stack.enter_context(swapped_call(
                    layer, held_embedding(layer, lambda i=i: holder[i])))
        yield


def cached_core(model, key, plan, build):
    """The core of `model` cached under `key` (a tuple; the inputs' plan's
    kinds, embeddings and structure are added to it), else `build(holder)`
    registered (`register_core`) with a new `holder` for the token inputs'
    embeddings."""
    cache_key = tuple(key) + (tuple(plan.kinds), tuple(id(l) for l in plan.embeddings),
                              plan.structure)
    per_model = cache(model)
    if cache_key in per_model:
        return per_model[cache_key]
    holder = {}
    return register_core(model, cache_key, plan, holder, build(holder))


def as_tensors(args):
    """`args` (the cores' arguments: arrays, tensors and None, in lists,
    tuples and dicts) with every numpy array a backend tensor, or left numpy
    where the backend's compiled calls take numpy (`backend.to_argument`)."""
    if isinstance(args, np.ndarray):
        return backend.to_argument(args)
    if isinstance(args, (list, tuple)):
        return type(args)([as_tensors(a) for a in args])
    if isinstance(args, dict):
        return {k: as_tensors(a) for k, a in args.items()}
    return args


def register_core(model, key, plan, holder, core):
    """Caches `core` compiled for `model` under `key` (its Python runs
    eagerly inside `tiering.eager()`), with the token inputs' Embeddings
    swapped for `holder`'s values (see `_feeding.feed`) while it runs, and
    every layer computing in float32 (`float32_compute`: explanations of a
    mixed-precision model are as precise as its float32 weights give)."""
    function = backend.Function(core, model.variables)  # eager inside `tiering.eager()`
    low_precision = mixed(model)
    swaps = any(layer is not None for layer in plan.embeddings)

    def running(method, args):
        # tensors of the backend (string inputs too, on TensorFlow): Keras
        # refuses inputs that mix tensors and numpy arrays
        args = as_tensors(args)
        if not (swaps or low_precision):  # float inputs, one precision: as it is
            return method(*args)
        with embeddings_swapped(plan, holder), (
                float32_compute(model) if low_precision else contextlib.nullcontext()):
            return method(*args)

    def call(*args):
        return running(function, args)

    def trace(*args):
        """Compiles for `args` without running, where the backend can
        (`backend.Function.trace`); returns whether it did."""
        return running(function.trace, args)

    call.core = core
    call.trace = trace
    call.function = function
    cache(model)[key] = call
    return call
