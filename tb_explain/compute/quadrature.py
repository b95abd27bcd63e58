"""Quadrature rules on [0, 1] for integrated gradients.

Every rule returns `(alphas, weights)` with weights that sum to 1, so the path
integral is `sum(weights * grad(baseline + alphas * (x - baseline)))`.
(Captum's `riemann_trapezoid` weights sum to (n - 1) / n; ours sum to 1.)
"""

import numpy as np

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
           "riemann_trapezoid")


def quadrature(method, steps):
    """Returns float64 `(alphas, weights)` of `steps` points for `method`.

    Args:
        method: One of `METHODS`.
        steps: Number of points (>= 1; >= 2 for `riemann_trapezoid`).
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if method == "riemann_left":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if method == "riemann_right":
        return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    if method == "riemann_middle":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError(f"`steps` must be >= 2 for riemann_trapezoid, got {steps}.")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, steps), weights
    raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
