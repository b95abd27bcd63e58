"""Attribution methods, one module per method; the shared parts by concern:
`_inputs` (input plans), `_outputs` (outputs and targets), `_cores`
(compiled functions and their cache), `_feeding` (feeding and chunking)."""

from tb_explain.compute.attribution._cores import _CACHE  # noqa: F401
from tb_explain.compute.attribution._inputs import plan_inputs  # noqa: F401
from tb_explain.compute.attribution._outputs import (  # noqa: F401
    explained_outputs, explained_targets, output_units,
)
from tb_explain.compute.attribution.integrated_gradients import (  # noqa: F401
    _blur, integrated_gradients, warm_up,
)
from tb_explain.compute.attribution.result import Attribution  # noqa: F401
from tb_explain.compute.attribution.methods import METHODS, attribute  # noqa: F401,E402
from tb_explain.compute.attribution.sanity import (  # noqa: F401,E402
    RandomizationTest, randomization_test,
)
