"""Metadata of tb_explain's own tensors, in TensorBoard's plugin style.

TensorBoard's plugins each keep one `metadata.py` (`tensorboard/plugins/
pr_curve/metadata.py`): the plugin name, a content version, a function that
creates a tag's `SummaryMetadata` and one that parses its `plugin_data.content`.
This is tb_explain's. The content is a small JSON object: `kind` says what
the tensor holds (`"dynamics_records"`, `"gram"`...), `version` which
content version wrote it, and the rest is the kind's own fields. Runs
written before the content was versioned carry bare JSON (or nothing):
`parse` reads them as version 0, so readers take old and new runs alike.

Example:

```python
meta = metadata.create("gram", layers=["cnn/conv"], n=64)
info = metadata.parse(meta.plugin_data.content)   # {"kind": "gram", "version": 1, ...}
```
"""

import json

from tensorboard.compat.proto import summary_pb2

from tb_explain import tags

PLUGIN_NAME = tags.PLUGIN_NAME
#: The content version written now. 1: `kind` and `version` fields (0: the
#: bare JSON of tb_explain 0.4 and before).
CONTENT_VERSION = 1


def create(kind, description="", **info):
    """A `SummaryMetadata` of tb_explain's plugin for a tensor of `kind`.

    Args:
        kind: What the tensor holds (a short name, such as `"gram"`).
        description: The tag's description, shown by TensorBoard.
        **info: JSON-serializable fields of the kind.

    Returns:
        A `tensorboard.compat.proto.summary_pb2.SummaryMetadata`.
    """
    meta = summary_pb2.SummaryMetadata(summary_description=description,
                                       data_class=summary_pb2.DATA_CLASS_TENSOR)
    meta.plugin_data.plugin_name = PLUGIN_NAME
    meta.plugin_data.content = content(kind, **info)
    return meta


def content(kind, **info):
    """The `plugin_data.content` bytes of a tensor of `kind` (see `create`)."""
    return json.dumps({"kind": kind, "version": CONTENT_VERSION, **info},
                      separators=(",", ":")).encode()


def parse(data):
    """The fields of a tensor's `plugin_data.content`, as a dict.

    Args:
        data: The content bytes (empty for tensors written without any).

    Returns:
        A dict with at least `version` (0 for content written before it
        was versioned).

    Raises:
        ValueError: if the content is not JSON, or was written by a newer
            tb_explain than this one reads.
    """
    if not data:
        return {"version": 0}
    try:
        info = json.loads(data)
    except ValueError:
        raise ValueError(f"tb_explain plugin content is not JSON: {data[:80]!r}") from None
    if not isinstance(info, dict):
        raise ValueError(f"tb_explain plugin content is not a JSON object: {data[:80]!r}")
    info.setdefault("version", 0)
    if info["version"] > CONTENT_VERSION:
        raise ValueError(
            f"tb_explain plugin content of version {info['version']} was written by a newer "
            f"tb_explain (this one reads up to {CONTENT_VERSION}): upgrade tb_explain.")
    return info
