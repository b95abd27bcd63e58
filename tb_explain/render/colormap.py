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


# -- indexed images ------------------------------------------------------------------
# An image drawn in palette indices is a third of an RGB image's bytes to
# compress (PNG colour type 3): AttentionMaps draws its heads this way.

#: Viridis levels and greys (black to white) of `PALETTE`; its last entry is NaN's magenta.
VIRIDIS_LEVELS, GREYS = 240, 15

#: The fixed `(256, 3)` uint8 palette of indexed images: viridis at 240
#: levels (every entry one of the 256-entry table's), 15 greys, magenta.
PALETTE = np.concatenate([
    LUTS["viridis"][np.round(np.linspace(0, 255, VIRIDIS_LEVELS)).astype(np.intp)],
    np.repeat(np.round(np.linspace(0, 255, GREYS)).astype(np.uint8)[:, None], 3, axis=1),
    NONFINITE_RGB[None]])

#: Palette indices of white (the background) and of non-finite cells.
INDEX_WHITE, INDEX_NONFINITE = VIRIDIS_LEVELS + GREYS - 1, len(PALETTE) - 1

#: A uint8 level (a value in [0, 1] times 255, rounded) to its viridis index.
LEVEL_INDEX = np.round(np.arange(256) * (VIRIDIS_LEVELS - 1) / 255).astype(np.uint8)

#: A grey value (0 black, 255 white: text drawn in Pillow's "L" mode) to its index.
GREY_INDEX = (VIRIDIS_LEVELS + np.round(np.arange(256) * (GREYS - 1) / 255)).astype(np.uint8)


def levels(unit):
    """Values in [0, 1] as uint8 levels (times 255, rounded; NaN as 0), the
    index `apply` looks up."""
    unit = np.nan_to_num(np.asarray(unit, np.float64), nan=0.0)
    return np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)


def indexed(level, nonfinite=None):
    """uint8 levels (as `levels`) as viridis indices into `PALETTE`, cells
    where `nonfinite` is True as `INDEX_NONFINITE`."""
    index = LEVEL_INDEX[np.asarray(level, np.uint8)]
    if nonfinite is not None and np.any(nonfinite):
        index[nonfinite] = INDEX_NONFINITE
    return index
