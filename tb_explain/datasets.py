"""Datasets given as streams of batches: what `model.fit` takes besides arrays.

Keras 3 fits on arrays and on four kinds of batch streams: `tf.data.Dataset`
(TensorFlow installed), `keras.utils.PyDataset` (every backend), a PyTorch
`torch.utils.data.DataLoader` (PyTorch installed, any backend) and grain's
`MapDataset`, `IterDataset` and `DataLoader`. tb_explain reads them in their
own batches, one batch at a time (nothing copied whole), with the element
conventions of `keras.utils.unpack_x_y_sample_weight`: `x`, `(x,)`, `(x, y)`
or `(x, y, sample_weight)`, a list counting as a tuple.

Example:

```python
from tb_explain import datasets

if datasets.is_stream(data):
    for x, y, sample_weight in datasets.batches(data):
        ...
```
"""

import importlib.util

import keras
import numpy as np

from tb_explain import backend


def _has_parent(obj, names, module):
    return any(parent.__name__ in names and module in str(parent.__module__)
               for parent in type(obj).__mro__)


def kind(obj):
    """The name of `obj`'s stream kind (`"tf.data.Dataset"`,
    `"keras.utils.PyDataset"`, `"torch DataLoader"`, `"grain dataset"`), or
    None for anything else (arrays, tuples, dicts)."""
    if backend.is_dataset(obj):
        return "tf.data.Dataset"
    if isinstance(obj, keras.utils.PyDataset):
        return "keras.utils.PyDataset"
    if _has_parent(obj, ("DataLoader",), "torch.utils.data"):
        return "torch DataLoader"
    if _has_parent(obj, ("MapDataset", "IterDataset", "DataLoader"), "grain"):
        return "grain dataset"
    return None


def is_stream(obj):
    """Whether `obj` is a stream of batches `model.fit` accepts (see `kind`)."""
    return kind(obj) is not None


def accepted():
    """What `data` may be on the active backend, for error messages."""
    kinds = ["arrays", "(x, y) or (x, y, sample_weight) tuples", "dicts or lists of arrays",
             "keras.utils.PyDataset"]
    if importlib.util.find_spec("tensorflow") is not None:
        kinds.append("tf.data.Dataset")
    if importlib.util.find_spec("torch") is not None:
        kinds.append("torch.utils.data.DataLoader")
    if importlib.util.find_spec("grain") is not None:
        kinds.append("grain MapDataset/IterDataset/DataLoader")
    return ", ".join(kinds)


def check_stream(obj, what="`data`"):
    """Raises a `ValueError` for a stream that has no end (an infinite
    `PyDataset`): tb_explain reads datasets whole."""
    if isinstance(obj, keras.utils.PyDataset):
        try:
            batches = obj.num_batches
        except NotImplementedError:
            batches = None
        if batches is None:
            raise ValueError(f"{what} is an infinite keras.utils.PyDataset (`num_batches` is "
                             f"None): tb_explain reads datasets whole; give it a length.")
    return obj


def _leaf(value):
    """A stream's leaf as the active backend takes it: the backend's own
    tensors stay (TensorFlow tensors on TensorFlow, PyTorch tensors on
    PyTorch), other frameworks' tensors become numpy (bfloat16 as float32,
    which numpy lacks), and everything else stays as it is."""
    if backend.is_tensor(value):
        return value
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return backend.to_numpy_any(value)
    return value


def split(element):
    """`(x, y, sample_weight)` of one element, as `keras.utils.unpack_x_y_sample_weight`."""
    if isinstance(element, list):
        element = tuple(element)
    if not isinstance(element, tuple):
        return element, None, None
    if not 1 <= len(element) <= 3:
        raise ValueError(f"a dataset element must be x, (x,), (x, y) or (x, y, sample_weight), "
                         f"got a tuple of {len(element)} elements")
    return (tuple(element) + (None, None))[:3]


def elements(obj):
    """Iterates the raw elements of stream `obj` in its order."""
    if backend.is_dataset(obj):
        yield from backend.dataset_elements(obj)
        return
    if isinstance(obj, keras.utils.PyDataset):
        for i in range(check_stream(obj).num_batches):
            yield obj[i]
        return
    yield from obj


def batches(obj):
    """Yields `(x, y, sample_weight)` of each batch of stream `obj`, leaves
    as the active backend takes them (see `_leaf`)."""
    for element in elements(obj):
        x, y, weights = split(element)
        yield tuple(None if part is None else keras.tree.map_structure(_leaf, part)
                    for part in (x, y, weights))
