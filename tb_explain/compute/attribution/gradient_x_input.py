"""Gradient x input (Shrikumar et al., 2016): x * dF/dx per input element."""

from tb_explain.compute.attribution import _feeding
from tb_explain.compute.attribution._gradient_rows import gradient_rows
from tb_explain.compute.attribution.result import Attribution

OPTIONS = ()


def gradient_x_input(model, inputs, *, target=None, output=None, position="last", batch_size=None):
    """x * dF/dx: the first-order contribution of each element against a zero input.

    Exact for linear models (F(x) - F(0) summed over elements, like
    integrated gradients with a zero baseline).
    """
    done = _feeding.setup(model, inputs, target, output, position)
    grads, f = gradient_rows(model, done, "times_input", batch_size=batch_size)
    return Attribution(attributions=_feeding.leaves_like(done, grads), delta=None,
                       **done.explained, output=f[:, 0], baseline_output=None,
                       skipped=dict(done.plan.skipped))
