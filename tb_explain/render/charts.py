"""Charts with text, drawn with Pillow (a TensorBoard dependency): confusion
matrices, reliability diagrams, density plots and captioned image grids.

Every function returns a uint8 `(h, w, 3)` array for `ops.write_images`,
but `attention_heads`: an indexed image (`colormap.PALETTE`).
"""

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tb_explain.render import colormap

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (20, 20, 20), (120, 120, 120), (225, 225, 225)
BLUE, RED = (33, 102, 172), (178, 24, 43)


@functools.lru_cache(maxsize=8)
def font(size=12):
    """Pillow's built-in scalable font (Aileron), or its bitmap font without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def text_size(text, size=12):
    left, top, right, bottom = font(size).getbbox(str(text))
    return right - left, bottom - top


def _shorten(text, width, size):
    text = str(text)
    while len(text) > 1 and text_size(text, size)[0] > width:
        text = text[:-2] + "…"
    return text


def _ink(rgb):
    """Black or white, whichever reads better on `rgb`."""
    r, g, b = (int(c) for c in rgb)
    return BLACK if 0.299 * r + 0.587 * g + 0.114 * b > 140 else WHITE


def confusion_matrix(counts, names, size=12):
    """A confusion matrix: a row per true class, a column per predicted class,
    each cell coloured by its row-normalized rate (viridis) and labelled with
    its count; class names on both axes (legible up to 40 classes).

    Args:
        counts: `[k, k]` int counts.
        names: `k` class names.
        size: Font size in pixels.
    """
    counts = np.asarray(counts)
    k = len(counts)
    rows = counts.sum(axis=1, keepdims=True)
    rate = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    label_w = min(160, max(text_size(n, size)[0] for n in names) + 8)
    cell = max(22, min(56, max(text_size(int(c), size)[0] for c in counts.ravel()) + 8))
    if k > 40:
        cell = 14
    top = label_w + size + 10  # rotated predicted-class names, then the axis title
    left = label_w + size + 10
    # room for both axis titles when there are few classes
    width = max(left + k * cell, left + text_size("predicted class", size)[0]) + 10
    height = max(top + k * cell, top + text_size("true class", size)[0] + 4) + 10
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    colours = colormap.apply(rate)
    for i in range(k):
        for j in range(k):
            x0, y0 = left + j * cell, top + i * cell
            rgb = tuple(int(c) for c in colours[i, j])
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=rgb)
            if k <= 40:
                text = str(int(counts[i, j]))
                tw, th = text_size(text, size)
                draw.text((x0 + (cell - tw) / 2, y0 + (cell - th) / 2 - 2), text,
                          fill=_ink(rgb), font=font(size))
    for i, name in enumerate(names):
        name = _shorten(name, label_w - 6, size)
        tw, th = text_size(name, size)
        draw.text((left - tw - 6, top + i * cell + (cell - th) / 2 - 2), name, fill=BLACK,
                  font=font(size))
        # column names, rotated: drawn on their own strip, then pasted
        strip = Image.new("RGB", (label_w, cell), WHITE)
        ImageDraw.Draw(strip).text((2, (cell - th) / 2 - 2), name, fill=BLACK, font=font(size))
        image.paste(strip.rotate(90, expand=True), (left + i * cell, top - label_w - 4))
    draw.text((left, 2), "predicted class", fill=GREY, font=font(size))
    title = Image.new("RGB", (max(k * cell, text_size("true class", size)[0] + 4), size + 6),
                      WHITE)
    ImageDraw.Draw(title).text((0, 0), "true class", fill=GREY, font=font(size))
    image.paste(title.rotate(90, expand=True), (2, top))
    return np.asarray(image)


def _axes(draw, box, xlabel, ylabel, size, ticks=(0.0, 0.5, 1.0), xlim=(0, 1), ylim=(0, 1)):
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=GREY)
    for t in ticks:
        tx = x0 + (t - xlim[0]) / (xlim[1] - xlim[0]) * (x1 - x0)
        ty = y1 - (t - ylim[0]) / (ylim[1] - ylim[0]) * (y1 - y0)
        label = f"{t:g}"
        tw, th = text_size(label, size)
        draw.text((tx - tw / 2, y1 + 4), label, fill=BLACK, font=font(size))
        draw.text((x0 - tw - 5, ty - th / 2 - 2), label, fill=BLACK, font=font(size))
    tw, _ = text_size(xlabel, size)
    draw.text(((x0 + x1 - tw) / 2, y1 + size + 8), xlabel, fill=GREY, font=font(size))
    draw.text((4, y0 - size - 6), ylabel, fill=GREY, font=font(size))


def reliability_diagram(counts, accuracy, confidence, ece, size=12):
    """A reliability diagram: per confidence bin, the accuracy (bar) against the
    diagonal of perfect calibration, the mean confidence (tick) and the bin's
    sample count above the bar; the ECE in the title.

    Args:
        counts, accuracy, confidence: Per bin (NaN for empty bins).
        ece: Expected calibration error, shown in the title.
    """
    bins = len(counts)
    plot = 300
    left, top = 50, 40
    image = Image.new("RGB", (left + plot + 20, top + plot + 45), WHITE)
    draw = ImageDraw.Draw(image)
    box = (left, top, left + plot, top + plot)
    width = plot / bins
    for b in range(bins):
        if counts[b] <= 0:
            continue
        x0 = left + b * width
        bar_top = top + plot * (1 - accuracy[b])
        draw.rectangle([x0 + 1, bar_top, x0 + width - 1, top + plot], fill=BLUE)
        mean_y = top + plot * (1 - confidence[b])
        draw.line([x0 + 1, mean_y, x0 + width - 1, mean_y], fill=RED, width=2)
        label = str(int(counts[b]))
        tw, th = text_size(label, size - 3)
        draw.text((x0 + (width - tw) / 2, max(top + 1, bar_top - th - 4)), label, fill=BLACK,
                  font=font(size - 3))
    draw.line([left, top + plot, left + plot, top], fill=GREY, width=1)
    _axes(draw, box, "confidence (top-class probability)", "accuracy", size)
    draw.text((left + 60, 4), f"ECE {ece:.4f}   bars: accuracy, red: mean confidence",
              fill=BLACK, font=font(size - 1))
    return np.asarray(image)


def density(y_true, y_pred, bins=60, size=12):
    """Predicted against true values: a 2-D histogram (log counts, viridis)
    with the diagonal y = x."""
    y_true = np.asarray(y_true, np.float64).ravel()
    y_pred = np.asarray(y_pred, np.float64).ravel()
    low = float(min(y_true.min(), y_pred.min()))
    high = float(max(y_true.max(), y_pred.max()))
    if high <= low:
        high = low + 1.0
    counts, _, _ = np.histogram2d(y_pred, y_true, bins=bins, range=[[low, high], [low, high]])
    shade = np.log1p(counts[::-1])  # rows: predicted, high values on top
    rgb = colormap.apply(shade / shade.max() if shade.max() > 0 else shade)
    rgb[counts[::-1] == 0] = WHITE
    plot = 300
    left, top = 60, 30
    image = Image.new("RGB", (left + plot + 20, top + plot + 45), WHITE)
    image.paste(Image.fromarray(rgb).resize((plot, plot), Image.NEAREST), (left, top))
    draw = ImageDraw.Draw(image)
    draw.line([left, top + plot, left + plot, top], fill=RED, width=1)
    ticks = tuple(float(f"{t:.3g}") for t in np.linspace(low, high, 3))
    _axes(draw, (left, top, left + plot, top + plot), "true value", "predicted", size,
          ticks=ticks, xlim=(low, high), ylim=(low, high))
    return np.asarray(image)


def captioned_grid(tiles, captions, cols=4, size=11):
    """RGB tiles `(n, h, w, 3)` in a grid, each with its caption lines below."""
    tiles = np.asarray(tiles, np.uint8)
    n, h, w, _ = tiles.shape
    lines = max(len(c) for c in captions)
    cap_h = lines * (size + 3) + 4
    cell_w = max(w, 120)
    cols = min(cols, n)
    rows = -(-n // cols)
    image = Image.new("RGB", (cols * (cell_w + 6) + 6, rows * (h + cap_h + 6) + 6), WHITE)
    draw = ImageDraw.Draw(image)
    for i in range(n):
        x0 = 6 + (i % cols) * (cell_w + 6)
        y0 = 6 + (i // cols) * (h + cap_h + 6)
        image.paste(Image.fromarray(tiles[i]), (x0 + (cell_w - w) // 2, y0))
        for j, line in enumerate(captions[i]):
            draw.text((x0, y0 + h + 2 + j * (size + 3)), _shorten(line, cell_w, size),
                      fill=BLACK, font=font(size))
    return np.asarray(image)


def labelled_heatmap(values, row_labels, col_labels, size=11, cell=(22, 40)):
    """Signed values `[rows, cols]` as a diverging heatmap (each row scaled by
    its own largest magnitude: blue negative, white zero, red positive), with
    row labels on the left and column labels above (rotated)."""
    values = np.asarray(values, np.float64)
    rows, cols = values.shape
    scale = np.max(np.abs(values), axis=1, keepdims=True)
    unit = np.where(scale > 0, 0.5 + 0.5 * values / np.where(scale > 0, scale, 1), 0.5)
    colours = colormap.apply(unit, "diverging")
    ch, cw = cell
    label_w = min(180, max(text_size(n, size)[0] for n in row_labels) + 8)
    top_h = min(140, max(text_size(n, size)[0] for n in col_labels) + 8)
    image = Image.new("RGB", (label_w + cols * cw + 6, top_h + rows * ch + 6), WHITE)
    draw = ImageDraw.Draw(image)
    for i in range(rows):
        name = _shorten(row_labels[i], label_w - 6, size)
        draw.text((label_w - text_size(name, size)[0] - 4, top_h + i * ch + 4), name,
                  fill=BLACK, font=font(size))
        for j in range(cols):
            x0, y0 = label_w + j * cw, top_h + i * ch
            draw.rectangle([x0, y0, x0 + cw - 2, y0 + ch - 2],
                           fill=tuple(int(c) for c in colours[i, j]))
    for j, name in enumerate(col_labels):
        name = _shorten(name, top_h - 6, size)
        strip = Image.new("RGB", (top_h, cw), WHITE)
        ImageDraw.Draw(strip).text((2, (cw - size) / 2 - 1), name, fill=BLACK, font=font(size))
        image.paste(strip.rotate(90, expand=True), (label_w + j * cw, 0))
    return np.asarray(image)


def data_map(confidence, variability, correctness, regions=(0.2, 0.5), size=12):
    """A data map (Swayamdipta et al. 2020): one point per example at
    (variability, confidence), coloured by correctness (viridis: dark 0,
    yellow 1), with the regions' borders (variability `regions[0]`,
    confidence `regions[1]`) and names."""
    confidence = np.clip(np.asarray(confidence, np.float64), 0.0, 1.0)
    variability = np.clip(np.asarray(variability, np.float64), 0.0, 0.5)
    correctness = np.clip(np.asarray(correctness, np.float64), 0.0, 1.0)
    plot_w, plot_h, left, top = 360, 300, 60, 34
    image = Image.new("RGB", (left + plot_w + 90, top + plot_h + 48), WHITE)
    draw = ImageDraw.Draw(image)
    x_of = lambda v: left + v / 0.5 * plot_w  # noqa: E731
    y_of = lambda c: top + (1.0 - c) * plot_h  # noqa: E731
    amb_x, easy_y = x_of(regions[0]), y_of(regions[1])
    draw.rectangle((amb_x, top, left + plot_w, top + plot_h), fill=(246, 246, 250))
    draw.line([amb_x, top, amb_x, top + plot_h], fill=GREY, width=1)
    draw.line([left, easy_y, amb_x, easy_y], fill=GREY, width=1)
    canvas = np.asarray(image).copy()
    xs = np.round(x_of(variability)).astype(int)
    ys = np.round(y_of(confidence)).astype(int)
    rgb = colormap.apply(correctness[np.newaxis])[0]
    order = np.argsort(-correctness, kind="stable")  # the wrong ones on top
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            canvas[np.clip(ys[order] + dy, top, top + plot_h - 1),
                   np.clip(xs[order] + dx, left, left + plot_w - 1)] = rgb[order]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=GREY)
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        label = f"{t:g}"
        tw, th = text_size(label, size)
        draw.text((left - tw - 5, y_of(t) - th / 2 - 2), label, fill=BLACK, font=font(size))
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        label = f"{t:g}"
        tw, _ = text_size(label, size)
        draw.text((x_of(t) - tw / 2, top + plot_h + 4), label, fill=BLACK, font=font(size))
    xlabel = "variability (std of the label's probability over epochs)"
    tw, _ = text_size(xlabel, size)
    draw.text((left + (plot_w - tw) / 2, top + plot_h + size + 10), xlabel, fill=GREY,
              font=font(size))
    draw.text((4, 6), "confidence (mean probability of the given label)", fill=GREY,
              font=font(size))
    draw.text((left + 6, top + 4), "easy to learn", fill=BLACK, font=font(size))
    draw.text((left + 6, top + plot_h - size - 6), "hard to learn", fill=BLACK, font=font(size))
    draw.text((amb_x + 6, top + 4), "ambiguous", fill=BLACK, font=font(size))
    bar_x = left + plot_w + 22
    bar = colormap.apply(np.linspace(1.0, 0.0, plot_h)[:, np.newaxis].repeat(14, axis=1))
    image.paste(Image.fromarray(bar), (bar_x, top))
    draw.text((bar_x - 4, top - size - 6), "correct", fill=GREY, font=font(size - 1))
    for t in (0.0, 0.5, 1.0):
        draw.text((bar_x + 18, y_of(t) - size / 2 - 2), f"{t:g}", fill=BLACK, font=font(size - 1))
    return np.asarray(image)


def block_average(maps, side):
    """`(maps, factor)`: `(k, T_query, T_key)` float32 maps averaged over
    `factor x factor` blocks so that neither side exceeds `side` (padding
    counts as 0); factor 1 leaves them as they are."""
    maps = np.asarray(maps, np.float32)
    k, tq, tk = maps.shape
    factor = -(-max(tq, tk) // side)
    if factor <= 1:
        return maps, 1
    padded = np.zeros((k, -(-tq // factor) * factor, -(-tk // factor) * factor), np.float32)
    padded[:, :tq, :tk] = maps
    blocks = padded.reshape(k, padded.shape[1] // factor, factor, padded.shape[2] // factor,
                            factor)
    return blocks.sum(axis=4).sum(axis=2) / (factor * factor), factor  # contiguous axis first


@functools.lru_cache(maxsize=512)
def _text_tile(text, width, size):
    """Black text on white, `size + 4` pixels high, at most `width` wide
    (uint8 palette indices of `colormap.PALETTE`'s greys)."""
    text = _shorten(text, width, size)
    tile = Image.new("L", (min(width, text_size(text, size)[0] + 2), size + 4), 255)
    ImageDraw.Draw(tile).text((0, 0), text, fill=BLACK[0], font=font(size))
    return colormap.GREY_INDEX[np.asarray(tile)]


#: Longest side of one head's map in `attention_heads`: longer sequences
#: are block-averaged down to it (a 128-token map shows 64 x 64 cells).
MAX_ATTENTION_SIDE = 64


def attention_heads(maps, row_labels=None, col_labels=None, titles=None, size=10, cols=6,
                    cell=None, levels=None):
    """Attention maps in a grid, as an indexed image: uint8 `(h, w)` indices
    into `colormap.PALETTE` (`ops.write_images(..., palette=...)`; a third of
    the bytes an RGB image has to compress).

    `maps` `(k, T_query, T_key)` in [0, 1] are drawn in viridis, each map
    scaled by its own maximum, `cols` panels per row, each with its title
    above. Short sequences (cells of at least `size` pixels) get the query
    labels left of each row of panels and the key labels under each panel
    (rotated); sequences longer than `MAX_ATTENTION_SIDE` are block-averaged
    to it (no labels). `cell`: pixels per cell (default: 2 for
    block-averaged maps, else up to 24). `levels`: the maps already scaled
    by their maxima as uint8 levels (`colormap.levels`; what
    `compute.attention.summarize_scores` makes in the compiled pass), then
    `maps` are only read for non-finite cells."""
    maps, factor = block_average(maps, MAX_ATTENTION_SIDE)
    k, tq, tk = maps.shape
    if factor > 1:
        row_labels = col_labels = None
        levels = None  # of the full maps: not these
    if cell is None:
        cell = 2 if factor > 1 else max(1, min(24, 320 // max(tq, tk)))
    labelled = cell >= size
    row_labels = row_labels if labelled else None
    col_labels = col_labels if labelled else None
    label_w = 0 if row_labels is None else min(90, 6 + max(text_size(t, size)[0]
                                                           for t in row_labels))
    label_h = 0 if col_labels is None else min(90, 6 + max(text_size(t, size)[0]
                                                           for t in col_labels))
    cols = max(1, min(cols, k))
    rows = -(-k // cols)
    panel_w, panel_h, gap, top = tk * cell, tq * cell, 8, size + 6
    cell_w, cell_h = label_w + panel_w + gap, top + panel_h + label_h + gap
    canvas = np.full((rows * cell_h + gap, cols * cell_w + gap), colormap.INDEX_WHITE, np.uint8)
    finite = np.isfinite(maps)
    if levels is None:
        peak = np.max(np.where(finite, maps, 0), axis=(1, 2), keepdims=True)
        levels = colormap.levels(np.divide(maps, peak, out=np.zeros_like(maps),
                                           where=(peak > 0) & finite))
    index = colormap.indexed(levels, ~finite)  # (k, tq, tk)
    if cell > 1:  # each cell a cell x cell square (np.repeat: 7x a 5-d broadcast's copy)
        index = np.repeat(np.repeat(index, cell, axis=2), cell, axis=1)
    for i in range(k):
        x0 = gap + (i % cols) * cell_w + label_w
        y0 = (i // cols) * cell_h + top
        canvas[y0:y0 + panel_h, x0:x0 + panel_w] = index[i]
    if titles is not None:  # cached text tiles: the same titles recur in every image
        for i in range(k):
            tile = _text_tile(titles[i], max(panel_w, 60), size)
            x0 = gap + (i % cols) * cell_w + label_w
            y0 = (i // cols) * cell_h + 2
            w = min(tile.shape[1], canvas.shape[1] - x0)
            canvas[y0:y0 + tile.shape[0], x0:x0 + w] = tile[:, :w]
    if row_labels is None and col_labels is None:
        return canvas
    # labels drawn in grey over white, outside the panels, then laid on the canvas
    text = Image.new("L", (canvas.shape[1], canvas.shape[0]), 255)
    draw = ImageDraw.Draw(text)
    for i in range(k):
        x0 = gap + (i % cols) * cell_w + label_w
        y0 = (i // cols) * cell_h + top
        if col_labels is not None:
            for j, label in enumerate(col_labels):
                shown = _shorten(label, label_h - 4, size)
                tw, th = text_size(shown, size)
                tile = Image.new("L", (tw + 2, th + 4), 255)
                ImageDraw.Draw(tile).text((1, 0), shown, fill=BLACK[0], font=font(size))
                tile = tile.rotate(90, expand=True)
                text.paste(tile, (x0 + j * cell + (cell - tile.width) // 2, y0 + panel_h + 3))
        if row_labels is not None and i % cols == 0:
            for j, label in enumerate(row_labels):
                shown = _shorten(label, label_w - 4, size)
                tw, th = text_size(shown, size)
                draw.text((x0 - tw - 2, y0 + j * cell + (cell - th) / 2 - 2), shown,
                          fill=BLACK[0], font=font(size))
    grey = np.asarray(text)
    inked = grey < 255
    canvas[inked] = colormap.GREY_INDEX[grey[inked]]
    return canvas


def beeswarm(attributions, values, names, title="attribution", max_features=20, size=11):
    """shap's summary plot: per feature (a row, ordered by mean |attribution|,
    the largest first, at most `max_features`), every sample's attribution
    as a point on a shared axis, spread vertically where points crowd, and
    coloured by the feature's value on that sample (viridis over the
    feature's 5th-95th percentile: dark low, yellow high; grey where the
    feature does not vary)."""
    attributions = np.asarray(attributions, np.float64)
    values = np.asarray(values, np.float64)
    order = np.argsort(-np.abs(attributions).mean(axis=0), kind="stable")[:max_features]
    row_h, plot_w, top = 22, 360, 30
    label_w = min(160, 8 + max(text_size(str(names[j]), size)[0] for j in order))
    left = label_w + 8
    height = top + row_h * len(order) + 44
    image = Image.new("RGB", (left + plot_w + 104, height), WHITE)
    draw = ImageDraw.Draw(image)
    span = float(np.abs(attributions[:, order]).max()) or 1.0
    x_of = lambda v: left + (v / span + 1.0) / 2.0 * plot_w  # noqa: E731
    draw.line([x_of(0.0), top - 4, x_of(0.0), top + row_h * len(order)], fill=GREY, width=1)
    for r, j in enumerate(order):
        y = top + r * row_h + row_h // 2
        draw.line([left, y, left + plot_w, y], fill=(236, 236, 236), width=1)
        label = _shorten(str(names[j]), label_w - 8, size)
        tw, th = text_size(label, size)
        draw.text((left - tw - 8, y - th / 2 - 2), label, fill=BLACK, font=font(size))
        low, high = np.percentile(values[:, j], [5, 95])
        unit = (np.clip((values[:, j] - low) / (high - low), 0, 1) if high > low
                else np.full(len(values), np.nan))
        rgb = colormap.apply(unit[np.newaxis])[0]
        rgb[~np.isfinite(unit)] = GREY
        xs = np.round(x_of(attributions[:, j])).astype(int)
        taken = {}
        for i in np.argsort(xs, kind="stable"):  # crowded points alternate up and down
            k = taken.get(xs[i] // 4, 0)
            taken[xs[i] // 4] = k + 1
            dy = ((k + 1) // 2) * 3 * (1 if k % 2 else -1)
            dy = int(np.clip(dy, -row_h // 2 + 3, row_h // 2 - 3))
            draw.ellipse([xs[i] - 2, y + dy - 2, xs[i] + 2, y + dy + 2],
                         fill=tuple(int(c) for c in rgb[i]))
    base = top + row_h * len(order)
    draw.line([left, base, left + plot_w, base], fill=GREY, width=1)
    for v in (-span, 0.0, span):
        label = f"{v:.3g}"
        tw, _ = text_size(label, size)
        draw.text((x_of(v) - tw / 2, base + 4), label, fill=BLACK, font=font(size))
    tw, _ = text_size(title, size)
    draw.text((left + (plot_w - tw) / 2, base + size + 10), title, fill=GREY, font=font(size))
    bar_x = left + plot_w + 24
    bar_h = max(40, row_h * len(order) - 20)
    bar = colormap.apply(np.linspace(1.0, 0.0, bar_h)[:, np.newaxis].repeat(12, axis=1))
    image.paste(Image.fromarray(bar), (bar_x, top + 10))
    draw.text((bar_x - 10, top - size - 4), "feature value", fill=GREY, font=font(size - 1))
    draw.text((bar_x + 16, top + 6), "high", fill=BLACK, font=font(size - 1))
    draw.text((bar_x + 16, top + bar_h - 2), "low", fill=BLACK, font=font(size - 1))
    return np.asarray(image)
