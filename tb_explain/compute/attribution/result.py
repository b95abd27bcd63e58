"""The result every attribution method returns."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Attribution:
    """Result of `tbx.integrated_gradients` (and the other attribution methods).

    Attributes:
        attributions: numpy array(s) shaped like the inputs (a list or dict
            for multi-input models); for integer token inputs, one value per
            token (summed over the embedding axis); zeros for inputs that
            are not attributed (see `skipped`).
        delta: `[n]` completeness gap per sample: sum of attributions minus
            `F(x) - F(baseline)`. Near zero when the integral is accurate.
        target: `[n]` int class index explained per sample (for a sequence
            output `(n, T, V)`: the token explained, at `position`).
        position: `[n]` the position explained per sample, for a sequence
            output (by default the last unmasked one: the next token of a
            causal LM); None for other outputs.
        output: `[n]` `F(x)`, the explained model output.
        baseline_output: `[n]` `F(baseline)` (averaged over baselines).
        skipped: `{input name: reason}` of inputs held at their values
            (strings, categorical ids): they have no gradient.
    """

    attributions: object
    delta: np.ndarray
    target: np.ndarray
    output: np.ndarray
    baseline_output: np.ndarray
    skipped: dict = dataclasses.field(default_factory=dict)
    position: np.ndarray = None

    @property
    def relative_delta(self):
        """`|delta| / |F(x) - F(baseline)|` per sample (the IG paper's check)."""
        gap = np.abs(self.output - self.baseline_output)
        return np.abs(self.delta) / np.maximum(gap, 1e-12)
