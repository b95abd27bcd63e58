"""Summaries in TensorBoard's plugin formats, written in batches.

Every `write_*` builds its `Summary.Value` protocol buffer in Python. Inside
`batched()` (each logging event of a run writer is one) the values are kept
and written as one event at the end, to that run's writer, at the given step;
outside it, `write_*` raise (there is no run to write to). Inside `batched()` the PNGs of
`write_images` are encoded on `tb_explain._threads`' pool meanwhile (Pillow
releases the GIL), in the order written.
"""

import contextlib
import io
import threading

import numpy as np
from PIL import Image
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.pr_curve import metadata as pr_curve_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util

from tb_explain import _threads

_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name=None,
                                                                 description="")
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description="")
_IMAGE_METADATA = image_metadata.create_summary_metadata(display_name=None, description="")
_TEXT_METADATA = text_metadata.create_summary_metadata(display_name=None, description="")

_state = threading.local()


@contextlib.contextmanager
def batched(step, writer):
    """Context whose `write_*` calls are written together at `step` on exit
    to `writer` (a `RunWriter`), also when an exception leaves it: what was
    logged is kept."""
    outer = getattr(_state, "batch", None)
    _state.batch = batch = (int(step), summary_pb2.Summary(), [], writer)
    try:
        yield
    finally:
        _state.batch = outer
        _write(batch)


def _write(batch):
    step, summary, pending, writer = batch
    failed = None
    for value, header, futures in pending:  # images encoded on the pool
        try:
            parts = header + [future.result() for future in futures]
        except Exception as exc:  # noqa: BLE001 (the other values are still written)
            failed = failed or exc
            summary.value.remove(value)
            continue
        value.tensor.CopyFrom(tensor_util.make_tensor_proto(np.array(parts, dtype=object)))
    if summary.value:
        writer.write_summary(summary, step)
    if failed is not None:
        raise failed


def _add(tag, metadata, array, step):
    # Tags are written exactly as given (Keras paths such as `dense/kernel`),
    # never rewritten by name scopes, as `tf.summary.scalar` would inside
    # compiled functions.
    batch = _pending_batch(step)
    if batch is None:
        raise RuntimeError(f"tb_explain: {tag!r} written outside a run writer's record({step}).")
    batch[1].value.add(tag=tag, metadata=metadata, tensor=tensor_util.make_tensor_proto(array))


def _pending_batch(step):
    """The open `batched()` batch of `step`, or None."""
    batch = getattr(_state, "batch", None)
    return batch if batch is not None and batch[0] == int(step) else None


def write_scalar(tag, value, step, description=""):
    """Writes a scalar to TensorBoard's Scalars dashboard (exact tag)."""
    metadata = _SCALAR_METADATA
    if description:
        metadata = scalar_metadata.create_summary_metadata(display_name=None,
                                                           description=description)
    _add(tag, metadata, np.asarray(value, np.float32), step)


def encode_png(image, palette=None):
    """PNG bytes of a uint8 `(h, w, 3)` image, or of an indexed `(h, w)` one
    with its `(<= 256, 3)` uint8 `palette` (PNG colour type 3)."""
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(image, np.uint8))
    if palette is not None:
        picture.putpalette(np.asarray(palette, np.uint8).tobytes())
    # zlib level 1: a quarter of the default level's time for ~10% more bytes
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_images(tag, images, step, palette=None):
    """Writes uint8 RGB images `(n, h, w, 3)` (or one `(h, w, 3)`) as PNGs.

    Args:
        tag: Summary tag.
        images: numpy uint8 array: RGB, or with `palette` indexed images
            `(n, h, w)` (or one `(h, w)`).
        step: Int step.
        palette: `(<= 256, 3)` uint8 colours of indexed `images`
            (`render.colormap.PALETTE`), or None for RGB. Indexed PNGs are a
            third of the bytes to compress; TensorBoard shows them alike.
    """
    images = np.asarray(images, np.uint8)
    if images.ndim == (2 if palette is not None else 3):
        images = images[np.newaxis]
    header = [str(images.shape[2]).encode(), str(images.shape[1]).encode()]
    batch, executor = _pending_batch(step), _threads.pool()
    if executor is None:
        parts = header + [encode_png(image, palette) for image in images]
        _add(tag, _IMAGE_METADATA, np.array(parts, dtype=object), step)
        return
    images = images.copy()  # the caller may reuse its array before the batch ends
    value = batch[1].value.add(tag=tag, metadata=_IMAGE_METADATA)
    batch[2].append((value, header, [executor.submit(encode_png, image, palette)
                                     for image in images]))


def write_histogram(tag, buckets, step):
    """Writes precomputed `[k, 3]` buckets as a TensorBoard histogram.

    Args:
        tag: Summary tag.
        buckets: Float64 `[k, 3]` buckets, as from `compute.stats.batched_statistics`.
        step: Int step.
    """
    _add(tag, _HISTOGRAM_METADATA, np.asarray(buckets), step)


def write_tensor(tag, array, step, plugin_name, content=b"", description=""):
    """Writes `array` as a tensor summary of the plugin `plugin_name`."""
    metadata = summary_pb2.SummaryMetadata(summary_description=description,
                                           data_class=summary_pb2.DATA_CLASS_TENSOR)
    metadata.plugin_data.plugin_name = plugin_name
    metadata.plugin_data.content = content
    _add(tag, metadata, np.asarray(array), step)


def pr_curve_data(labels, predictions, num_thresholds):
    """The pr_curve plugin's `[6, num_thresholds]` float32 tensor (true and
    false positive, true and false negative counts, precision, recall per
    threshold), computed as TensorBoard's `pr_curve.summary.pb` computes it,
    in numpy (that function imports TensorFlow to build its proto).

    Args:
        labels: Bool array, the ground truth.
        predictions: Float array of scores in `[0, 1]`, shaped like `labels`.
        num_thresholds: Thresholds evenly spread over `[0, 1]` (int >= 2).
    """
    labels = np.asarray(labels, bool).ravel()
    predictions = np.clip(np.asarray(predictions, np.float32).ravel(), 0.0, 1.0)
    with np.errstate(invalid="ignore"):  # NaN scores fall in no bucket, as in `pb`
        buckets = np.floor(predictions * (num_thresholds - 1))
    kept = np.isfinite(buckets)
    buckets, labels = buckets[kept].astype(np.int64), labels[kept]
    positive = np.bincount(buckets, weights=labels.astype(float), minlength=num_thresholds)
    negative = np.bincount(buckets, weights=(~labels).astype(float), minlength=num_thresholds)
    tp = np.cumsum(positive[::-1])[::-1]
    fp = np.cumsum(negative[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    minimum = 1e-7  # the plugin's _MINIMUM_COUNT
    precision = tp / np.maximum(minimum, tp + fp)
    recall = tp / np.maximum(minimum, tp + fn)
    return np.float32(np.stack((tp, fp, tn, fn, precision, recall)))


def write_pr_curve(tag, labels, predictions, step, num_thresholds=201):
    """Writes a PR curve for TensorBoard's PR Curves dashboard (exact tag),
    with the pr_curve plugin's metadata, without TensorFlow.

    Args:
        tag: Summary tag.
        labels: Bool array, the ground truth.
        predictions: Scores in `[0, 1]` (clipped), shaped like `labels`.
        step: Int step.
        num_thresholds: Thresholds evenly spread over `[0, 1]`.
    """
    metadata = pr_curve_metadata.create_summary_metadata(
        display_name=tag, description="", num_thresholds=num_thresholds)
    _add(tag, metadata, pr_curve_data(labels, predictions, num_thresholds), step)


def write_proto(summary, step):
    """Writes every value of a ready `Summary` proto (TensorBoard's `*_pb`
    summary functions make them) at `step`."""
    batch = _pending_batch(step)
    if batch is None:
        raise RuntimeError(f"tb_explain: a summary written outside a run writer's record({step}).")
    batch[1].value.extend(summary.value)


def current_writer():
    """The `RunWriter` of the open `batched()` context (None outside one)."""
    batch = getattr(_state, "batch", None)
    return None if batch is None else batch[3]


def write_markdown(tag, markdown, step):
    """Writes a Markdown string to TensorBoard's Text dashboard."""
    _add(tag, _TEXT_METADATA, np.array(markdown.encode(), dtype=object), step)


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
