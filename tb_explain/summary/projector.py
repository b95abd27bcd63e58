"""Files for TensorBoard's Projector: vectors, metadata, sprite and config.

The Projector reads `projector_config.pbtxt` in a run's directory (a run:
a directory with an event file) and, for each embedding of it, a TSV of
vectors (`tensor_path`), a TSV of metadata (a header row, then one row per
point) and an optional sprite (one thumbnail per point, row-major, in a
square grid). Paths are relative to the run directory. Each epoch's files go
to their own directory and are never rewritten by a later epoch; the config
is replaced atomically, so a TensorBoard reading it never sees half a file.
"""

import math
import os

import numpy as np

CONFIG = "projector_config.pbtxt"
#: The Projector's largest sprite side (WebGL texture limit it assumes).
MAX_SPRITE_SIDE = 8192


def _atomic_write(path, data, mode="w"):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
        f.write(data)
    os.replace(tmp, path)


def _cell(value):
    """A metadata cell: text without tabs or line breaks, never empty."""
    text = str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")
    return text if text.strip() else '""'


def write_vectors(path, vectors):
    """Writes `[n, d]` float vectors as TSV, `%.9g` (float32 round-trips exactly)."""
    vectors = np.asarray(vectors, np.float32)
    _atomic_write(path, "".join("\t".join(f"{v:.9g}" for v in row) + "\n" for row in vectors))


def write_metadata(path, columns):
    """Writes `{column: values}` (equal lengths) as a TSV with a header row."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names))
    _atomic_write(path, "\t".join(_cell(n) for n in names) + "\n"
                  + "".join("\t".join(_cell(v) for v in row) + "\n" for row in rows))


def sprite(images, max_side=MAX_SPRITE_SIDE, min_side=32):
    """`(sprite uint8 [S, S, 3], tile side)`: `images` (uint8 `[n, h, w, 3]`)
    resized (nearest) to square tiles of at least `min_side` pixels (where
    the sprite allows) in a grid of `ceil(sqrt(n))` columns,
    row-major, the sprite no larger than `max_side`."""
    images = np.asarray(images, np.uint8)
    n, h, w = images.shape[:3]
    cols = max(1, math.ceil(math.sqrt(n)))
    side = max(1, min(max(h, w, min_side), max_side // cols))
    rows = np.minimum((np.arange(side) * h) // side, h - 1)
    cols_idx = np.minimum((np.arange(side) * w) // side, w - 1)
    tiles = images[:, rows][:, :, cols_idx]
    out = np.zeros((cols * side, cols * side, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile
    return out, side


def write_png(path, image):
    from tb_explain.summary.ops import encode_png  # noqa: PLC0415

    _atomic_write(path, encode_png(image), mode="wb")


def read_config(run_dir):
    """The run's `ProjectorConfig` (empty when there is none)."""
    from google.protobuf import text_format  # noqa: PLC0415
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig  # noqa: PLC0415

    config = ProjectorConfig()
    path = os.path.join(run_dir, CONFIG)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text_format.Parse(f.read(), config)
    return config


def add_embeddings(run_dir, entries):
    """Adds embeddings to the run's config (an entry with the same
    `tensor_name` is replaced: a resumed fit re-logging an epoch), keeping
    every other, and replaces the file atomically.

    Args:
        run_dir: The run directory.
        entries: dicts with `tensor_name`, `tensor_path`, `metadata_path`,
            `shape` (`[n, d]`) and optionally `sprite` (`(path, side)`).
    """
    from google.protobuf import text_format  # noqa: PLC0415

    config = read_config(run_dir)
    names = {e["tensor_name"] for e in entries}
    kept = [e for e in config.embeddings if e.tensor_name not in names]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    for entry in entries:
        embedding = config.embeddings.add()
        embedding.tensor_name = entry["tensor_name"]
        embedding.tensor_path = entry["tensor_path"]
        embedding.metadata_path = entry["metadata_path"]
        embedding.tensor_shape.extend(int(s) for s in entry["shape"])
        if entry.get("sprite"):
            path, side = entry["sprite"]
            embedding.sprite.image_path = path
            embedding.sprite.single_image_dim.extend([side, side])
    _atomic_write(os.path.join(run_dir, CONFIG), text_format.MessageToString(config))
