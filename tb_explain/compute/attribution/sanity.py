"""Model-parameter randomization test (Adebayo et al., 2018, "Sanity Checks for
Saliency Maps"): does an attribution method depend on the model at all?

On a copy of the model (the user's model and weights are never touched), the
layers with weights are re-initialized one more at a time from the output
down (cascading randomization), and after each step the attributions of the
same inputs and targets are compared with the trained model's by the mean
Spearman rank correlation of their absolute values. A method that explains
the model gives maps that decorrelate as its layers are randomized;
correlations that stay high mean the method shows the input (edges), not
what the model learned.
"""

import dataclasses
import weakref

import keras
import numpy as np

from tb_explain import _validate, tags
from tb_explain._keras import walk_layers
from tb_explain.compute import metrics
from tb_explain.compute.attribution import _inputs
from tb_explain.compute.attribution.methods import attribute, check_method

#: Below this final correlation a method passes the sanity check.
PASS_BELOW = tags.SANITY_PASS_BELOW


@dataclasses.dataclass
class RandomizationTest:
    """Result of `tbx.randomization_test`.

    Attributes:
        method: The attribution method tested.
        layers: Paths of the layers randomized, in order (output first).
        correlations: Mean Spearman correlation of |attributions| with the
            trained model's, after each step of `layers`.
    """

    method: str
    layers: list
    correlations: np.ndarray

    @property
    def passed(self):
        """Whether the maps decorrelate once every layer is randomized."""
        return bool(len(self.correlations) and self.correlations[-1] < PASS_BELOW)

    def verdict(self):
        """One Markdown paragraph: the cascade and what it means."""
        if not len(self.correlations):
            return f"{self.method}: the model has no layer with weights to randomize."
        final = self.correlations[-1]
        if self.passed:
            head = (f"**{self.method} passes**: with every layer randomized, its maps keep a "
                    f"rank correlation of {final:.2f} with the trained model's (< {PASS_BELOW}): "
                    f"they depend on what the model learned.")
        else:
            head = (f"**{self.method} fails**: with every layer randomized, its maps keep a rank "
                    f"correlation of {final:.2f} with the trained model's (>= {PASS_BELOW}): "
                    f"they show the input more than the model; do not read them as what the "
                    f"model learned.")
        return head


#: One copy per model, reused by every test on it (weights set anew each
#: time): its compiled functions trace once, not once per test and method.
_COPIES = weakref.WeakKeyDictionary()


def _copy(model):
    """A copy of `model` with the same weights (new variables, the same copy
    for every call on `model`: its weights are reset to the model's)."""
    copy = _COPIES.get(model)
    if copy is not None:
        copy.set_weights(model.get_weights())
        return copy
    copy = _COPIES[model] = _new_copy(model)
    return copy


def _new_copy(model):
    try:
        copy = keras.models.clone_model(model)
    except (ValueError, TypeError, NotImplementedError):
        try:
            copy = type(model).from_config(model.get_config())
        except Exception as exc:  # a subclassed model without get_config
            raise ValueError(
                f"randomization_test works on a copy of the model, and model {model.name!r} "
                f"cannot be copied (keras.models.clone_model and from_config failed: {exc}). "
                f"Give the model a get_config().") from exc
    if not copy.built:
        build = model.get_build_config() if hasattr(model, "get_build_config") else None
        if build is not None:
            copy.build_from_config(build)
    copy.set_weights(model.get_weights())
    return copy


def weighted_layers(model):
    """`[(path, layer)]` of the layers holding trainable weights, output first."""
    found, seen = [], set()
    for _, path, layer in walk_layers(model):
        if hasattr(layer, "layers"):
            continue
        parts = [(path, layer)] + [(f"{path}/{sub.name}", sub)
                                   for sub in layer._flatten_layers(include_self=False)]
        for sub_path, sub in parts:
            if sub._layers and sub is not layer:
                continue
            own = [w for w in sub.trainable_weights
                   if not any(w is v for s in sub._layers for v in s.weights)]
            if own and id(sub) not in seen:
                seen.add(id(sub))
                found.append((sub_path, sub))
    return found[::-1]


def _randomize(layer, rng, seed):
    own = [w for w in layer.trainable_weights
           if not any(w is v for s in layer._layers for v in s.weights)]
    for k, variable in enumerate(own):
        shape = tuple(variable.shape)
        if len(shape) >= 2:  # Glorot uniform, drawn by numpy: the same on every backend
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            value = np.random.default_rng(seed + k).uniform(-limit, limit, shape)
        else:
            value = rng.permutation(np.asarray(variable.numpy()).ravel()).reshape(shape)
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _magnitudes(result):
    flat, _ = _inputs.flatten_inputs(result.attributions)
    return np.concatenate([np.abs(f).reshape(len(f), -1) for f in flat], axis=1)


def randomization_test(model, inputs, method="saliency", *, target=None, output=None,
                       batch_size=None, seed=0, **options):
    """Cascading model-parameter randomization test of an attribution method.

    Args:
        model: A Keras model (Functional and Sequential models are copied with
            `keras.models.clone_model`, subclassed ones through `get_config`).
        inputs: The inputs explained.
        method: An attribution method of `tbx.attribute`.
        target: None (the trained model's predicted class, kept for every
            step), an int, or one int per sample.
        output: The output explained, for multi-output models.
        batch_size: As for `tbx.attribute`.
        seed: Seed of the re-initializations (int).
        **options: The method's options (`samples`, `window`, `layer`...).

    Returns:
        A `RandomizationTest` with `.layers`, `.correlations`, `.passed` and
        `.verdict()`.

    Example:

    ```python
    test = tbx.randomization_test(model, x_val[:4], "saliency")
    print(test.layers, test.correlations, test.verdict())
    ```
    """
    check_method(method, options)
    seed = _validate.check_int("seed", seed)
    copy = _copy(model)
    trained = attribute(copy, inputs, method, target=target, output=output,
                        batch_size=batch_size, **options)
    reference = _magnitudes(trained)
    rng = np.random.default_rng(seed)
    layers, correlations = [], []
    for step, (path, layer) in enumerate(weighted_layers(copy)):
        _randomize(layer, rng, seed + 1000 * step)
        result = attribute(copy, inputs, method, target=trained.target, output=output,
                           batch_size=batch_size, **options)
        current = _magnitudes(result)
        correlations.append(np.mean([metrics.spearman(a, b)
                                     for a, b in zip(reference, current)]))
        layers.append(path)
    return RandomizationTest(method=method, layers=layers, correlations=np.asarray(correlations))
