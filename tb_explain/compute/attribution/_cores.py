"""Compiled cores: one cache of compiled functions per model (weakly keyed),
so each is traced once per model and input shape; the forward pass shared
with the op graph `ModelGraph` writes; dispatch by argument shapes; token
inputs' `Embedding` layers swapped for the values a core feeds them.
"""

import contextlib
import weakref

import keras
import numpy as np
import tensorflow as tf

from tb_explain._keras import swapped_call
from tb_explain.compute import tiering


_CACHE = weakref.WeakKeyDictionary()


def cache(model):
    """The dict of compiled functions kept for `model` (dies with the model)."""
    return _CACHE.setdefault(model, {})


def forward(model):
    """`model(x, training=False)`, compiled once per model and input signature.

    The same function traces the op graph `ModelGraph` writes (with a
    batch-agnostic signature), so the probe passes of the attribution
    methods reuse that trace.
    """
    per_model = cache(model)
    fn = per_model.get("forward")
    if fn is None:
        fn = per_model["forward"] = tf.function(
            lambda x: model(x, training=False), autograph=False, reduce_retracing=True)
    return fn


@contextlib.contextmanager
def embeddings_swapped(plan, holder):
    """Context in which each token input's Embedding returns `holder[i]`."""
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(plan.embeddings):
            if layer is not None:
                stack.enter_context(swapped_call(layer, lambda *a, i=i, **k: holder[i]))
        yield


def by_shapes(fn):
    """Calls `fn`'s concrete function for the arguments' shapes (traced once
    per shape; cheaper than tf.function's own dispatch on nested arguments)."""
    concrete = {}

    def call(*args):
        key = tuple((tuple(t.shape), t.dtype) for t in keras.tree.flatten(args)
                    if isinstance(t, (tf.Tensor, np.ndarray)))
        found = concrete.get(key)
        if found is None:
            found = concrete[key] = fn.get_concrete_function(*args)
        return found(*args)
    return call


def register_core(model, key, plan, holder, core):
    """Caches the compiled `core` for `model` under `key`, dispatched by
    argument shapes (`by_shapes`; its Python runs eagerly inside
    `tiering.eager()`), with the token inputs' Embeddings swapped for
    `holder`'s values (see `feed`) while it runs."""
    run = by_shapes(core)

    def call(*args):
        with embeddings_swapped(plan, holder):
            if tiering.is_eager():
                return core.python_function(*args)
            return run(*args)

    call.core = core
    cache(model)[key] = call
    return call
