"""Saliency (Simonyan et al., 2013): |dF/dx| per input element."""

from tb_explain.compute.attribution import _feeding
from tb_explain.compute.attribution._gradient_rows import gradient_rows
from tb_explain.compute.attribution.result import Attribution

#: Options `attribute(..., method="saliency")` takes.
OPTIONS = ()


def saliency(model, inputs, *, target=None, output=None, position="last", batch_size=None):
    """|dF/dx|: how much a small change of each input element moves the output.

    Token inputs: |dF/de| at their embedding, summed over the embedding axis.
    """
    done = _feeding.setup(model, inputs, target, output, position)
    grads, f = gradient_rows(model, done, "abs", batch_size=batch_size)
    return Attribution(attributions=_feeding.leaves_like(done, grads), delta=None,
                       **done.explained, output=f[:, 0], baseline_output=None,
                       skipped=dict(done.plan.skipped))
