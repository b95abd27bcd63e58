"""tb_explain: see inside a Keras model while it trains, in TensorBoard.

Callbacks for `model.fit` that log weight histograms, activation images,
gradient health and attributions, alongside the model graph.

Example:

```python
import tb_explain as tbx
model.fit(x, y, epochs=30, callbacks=[*tbx.explain("runs/exp1", freq=5)])
```
"""

import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "tb-explain":
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a quiet command line


def _loaded_as_tensorboard_plugin():
    """Whether TensorBoard's plugin loader (`tensorboard/default.py`, its
    `tensorboard_plugins` entry points) is importing the Explain tab: then the
    package stays light (no TensorFlow import, nothing that can raise, which
    would stop TensorBoard from starting)."""
    frame = _sys._getframe(1)
    target = _os.path.join("tensorboard", "default.py")
    while frame is not None:
        if frame.f_code.co_filename.endswith(target):
            return True
        frame = frame.f_back
    return False


if not _loaded_as_tensorboard_plugin():
    from tb_explain._compat import check_environment as _check_environment  # noqa: E402

    _check_environment()

    from tb_explain.callbacks import (  # noqa: E402
        ActivationImages, AttentionMaps, Attributions, DecisionRules, Embeddings, FeatureImportance,
        FeatureVisualization, GradientNorms, HParams, IntegratedGradients, ModelGraph, Predictions, TrainingCurves,
        TrainingDynamics, WeightHistograms,
    )
    from tb_explain.compute.importance import PermutationImportance, permutation_importance  # noqa: E402,E501
    from tb_explain.compute.features import feature_visualization  # noqa: E402
    from tb_explain.compute.rules import extract_rules  # noqa: E402
    from tb_explain.compute.attribution import (  # noqa: E402
        Attribution, RandomizationTest, attribute, integrated_gradients, randomization_test,
    )
    from tb_explain.compute.attention import Attention, attention  # noqa: E402
    from tb_explain.probe import Probe  # noqa: E402
    from tb_explain.runs import Run, load_run, load_runs  # noqa: E402
    from tb_explain.comparison import Comparison, compare  # noqa: E402
    from tb_explain.suite import explain  # noqa: E402

#: The release in development after 0.4 (PEP 440); setup reads it from here.
__version__ = "0.5.0.dev0"

__all__ = [
    "ActivationImages", "Attention", "Comparison", "compare", "AttentionMaps", "attention", "Attribution", "Attributions", "DecisionRules", "Embeddings",
    "FeatureImportance", "FeatureVisualization", "feature_visualization", "GradientNorms",
    "HParams", "IntegratedGradients", "ModelGraph", "PermutationImportance", "Predictions",
    "Probe", "RandomizationTest", "Run", "TrainingCurves", "TrainingDynamics", "WeightHistograms", "attribute", "explain",
    "extract_rules", "integrated_gradients", "randomization_test",
    "load_run", "load_runs", "permutation_importance", "__version__",
]
