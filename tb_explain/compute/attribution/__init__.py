"""Attribution methods: shared parts in `_common`, one module per method."""

from tb_explain.compute.attribution._common import (  # noqa: F401
    _CACHE, explained_outputs, explained_targets, output_units, plan_inputs,
)
from tb_explain.compute.attribution.integrated_gradients import (  # noqa: F401
    _blur, integrated_gradients, warm_up,
)
from tb_explain.compute.attribution.result import Attribution  # noqa: F401
from tb_explain.compute.attribution.methods import METHODS, attribute  # noqa: F401,E402
from tb_explain.compute.attribution.sanity import (  # noqa: F401,E402
    RandomizationTest, randomization_test,
)
