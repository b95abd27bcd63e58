"""Colormaps as 256-entry uint8 lookup tables.

`viridis` (perceptually uniform, for magnitudes) and `diverging` (blue, white,
red, for signed values centred on zero), interpolated from the published
anchor colours of matplotlib's viridis and ColorBrewer's RdBu.
"""

import numpy as np

_VIRIDIS = ["440154", "482475", "414487", "355f8d", "2a788e", "21918c",
            "22a884", "44bf70", "7ad151", "bddf26", "fde725"]
_DIVERGING = ["2166ac", "4393c3", "92c5de", "d1e5f0", "f7f7f7",
              "fddbc7", "f4a582", "d6604d", "b2182b"]

#: Colour of NaN / Inf cells: no colormap entry is close to it.
NONFINITE_RGB = np.array([255, 0, 255], np.uint8)


def _lut(anchors):
    rgb = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in anchors], float)
    pos = np.linspace(0.0, 1.0, len(anchors))
    grid = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(grid, pos, rgb[:, c]) for c in range(3)], 1).round().astype(np.uint8)


LUTS = {"viridis": _lut(_VIRIDIS), "diverging": _lut(_DIVERGING)}


def apply(unit, name="viridis"):
    """Maps values in [0, 1] to RGB.

    Args:
        unit: Float array with values in [0, 1]; NaN marks a non-finite cell.
        name: `"viridis"` or `"diverging"`.

    Returns:
        A uint8 array of shape `unit.shape + (3,)`.
    """
    unit = np.asarray(unit, np.float64)
    bad = ~np.isfinite(unit)
    index = np.clip(np.nan_to_num(unit, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.intp)
    rgb = LUTS[name][index]
    rgb[bad] = NONFINITE_RGB
    return rgb
