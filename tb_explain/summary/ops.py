"""Summary ops in TensorBoard's plugin formats, usable eagerly or compiled."""

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(
    display_name=None, description=""
).SerializeToString()
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(
    display_name=None, description=""
).SerializeToString()


# Tags are written exactly as given (Keras paths such as `dense/kernel`),
# never rewritten by name scopes, as `tf.summary.scalar` would inside
# compiled functions.


def write_scalar(tag, value, step):
    """Writes a scalar to TensorBoard's Scalars dashboard (exact tag)."""
    return tf.summary.write(
        tag=tag, tensor=tf.cast(value, tf.float32), step=step,
        metadata=_SCALAR_METADATA,
    )


def write_images(tag, images, step):
    """Writes uint8 RGB images `(n, h, w, 3)` (or one `(h, w, 3)`) as PNGs.

    Args:
        tag: Summary tag.
        images: numpy uint8 array.
        step: Int step.
    """
    images = np.asarray(images, np.uint8)
    if images.ndim == 3:
        images = images[np.newaxis]
    pngs = [tf.image.encode_png(image) for image in images]
    dims = [tf.constant(str(images.shape[2])), tf.constant(str(images.shape[1]))]
    meta = image_metadata.create_summary_metadata(
        display_name=None, description=""
    ).SerializeToString()
    return tf.summary.write(
        tag=tag, tensor=tf.stack(dims + pngs), step=step, metadata=meta
    )


def write_histogram(tag, buckets, step):
    """Writes precomputed `[k, 3]` buckets as a TensorBoard histogram.

    Args:
        tag: Summary tag.
        buckets: Float64 `[k, 3]` buckets, as from `compute.stats.batched_statistics`.
        step: Int step.
    """
    return tf.summary.write(
        tag=tag, tensor=buckets, step=step, metadata=_HISTOGRAM_METADATA
    )


def write_markdown(tag, markdown, step):
    """Writes a Markdown string to TensorBoard's Text dashboard."""
    return tf.summary.text(tag, tf.constant(markdown), step=step)


def markdown_table(header, rows):
    """Returns a Markdown table (TensorBoard's Text dashboard renders these).

    Args:
        header: Column names.
        rows: Iterable of row sequences; cells are converted with `str` and
            pipes are escaped.
    """
    def cell(value):
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
