"""The PyTorch backend: `torch.autograd.grad`; functions run eagerly.

Keras's `predict` runs under `torch.no_grad()` and its trainer reads and
zeroes `.grad`: gradients here are taken with `torch.autograd.grad` under
`torch.enable_grad()`, which touches no `.grad` attribute.
"""

import numpy as np
import torch


#: What a model raises on inputs it cannot take, besides ValueError/TypeError.
MODEL_ERRORS = (RuntimeError,)

#: `compile` runs functions eagerly (see `backend.runs_eagerly`).
EAGER = True

#: Forward-only chunks of at most 4M values (16 MB) in the widest layer
#: output: glibc's malloc maps blocks above 32 MB afresh at every allocation
#: (page faults at every layer), so one large chunk of the demo CNN's 16,384
#: coalitions ran 2x slower than 8 chunks; an eager call costs little.
FORWARD_VALUES = 1 << 22


def to_numpy(x):
    if hasattr(x, "value") and not isinstance(x, (np.ndarray, torch.Tensor)):
        x = x.value  # a Keras variable
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def _leaf(x):
    from keras.src.backend.torch.core import convert_to_tensor  # noqa: PLC0415

    return convert_to_tensor(x).detach().requires_grad_(True)


class _WithGradient(torch.autograd.Function):
    """`y`'s value, gradient `m` with respect to `z`: no forward pass over
    the tensors (three elementwise passes in eager PyTorch otherwise)."""

    @staticmethod
    def forward(ctx, z, y, m):
        ctx.save_for_backward(m)
        return y.detach().view_as(y)

    @staticmethod
    def backward(ctx, upstream):
        (m,) = ctx.saved_tensors
        return upstream * m, None, None


def with_gradient(y, z, m):
    return _WithGradient.apply(z, y, m.detach())


def gather(x, indices):
    return x.index_select(0, indices)


def input_gradients(fn, xs):
    with torch.enable_grad():
        xs = [_leaf(x) for x in xs]
        total, aux = fn(xs)
        grads = torch.autograd.grad(total, xs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)], aux


def variable_gradients(fn, variables):
    values = [v.value for v in variables]
    with torch.enable_grad():
        loss, aux = fn()
        grads = torch.autograd.grad(loss, values, allow_unused=True)
    return [torch.zeros_like(v) if g is None else g.detach() for v, g in zip(values, grads)], aux


def compile(fn, variables):  # noqa: A001
    def call(*args):
        with torch.no_grad():
            return fn(*args)
    call.compiled = fn
    return call
