"""Probe: the small, fixed batch of user data that callbacks look at.

`data` is accepted in every form `model.fit` users have at hand: an array;
`(x,)`, `(x, y)` or `(x, y, sample_weight)`; a list or dict of arrays for
multi-input models (a dict `y` for multi-output models); or a stream of
batches `model.fit` takes (`tf.data.Dataset`, `keras.utils.PyDataset`, a
PyTorch `DataLoader`, a grain dataset: its first samples, see
`tb_explain.datasets`). Inputs may mix numbers and strings
(categorical features looked up inside the model). It is capped at `max_samples`,
materialized once as numpy arrays (so every logging event sees the same
samples and images compare across epochs), and checked against the model in
`on_train_begin`.
"""

import keras
import numpy as np

from tb_explain import _validate, backend, datasets


def strings_as_array(array):
    """An object array of `str` or `bytes` (tf.string read back) as a numpy
    string array; other arrays unchanged."""
    if array.dtype.kind != "O":
        return array
    flat = array.reshape(-1)
    if len(flat) and all(isinstance(v, bytes) for v in flat):
        return array.astype(bytes)
    return array.astype(str)


def _is_leaf(value):
    return isinstance(value, np.ndarray) or backend.is_tensor(value) or (
        hasattr(value, "__array__") and not isinstance(value, (list, tuple, dict))
    )


def _to_numpy(structure, what):
    """Converts a nest of arrays to numpy; lists of numbers become arrays."""
    if structure is None:
        return None
    if isinstance(structure, dict):
        return {k: _to_numpy(v, f"{what}[{k!r}]") for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        if structure and all(_is_leaf(v) for v in structure):
            return [_to_numpy(v, f"{what}[{i}]") for i, v in enumerate(structure)]
        try:
            return np.asarray(structure)
        except ValueError as exc:
            raise TypeError(f"`data` {what} is not an array: {exc}") from None
    if _is_leaf(structure):
        return np.asarray(structure)
    raise TypeError(
        f"`data` {what} must be one of: {datasets.accepted()}; got "
        f"{type(structure).__name__}."
    )


def _length(structure):
    return {len(leaf) if np.ndim(leaf) else 0 for leaf in keras.tree.flatten(structure)}


def named_leaves(x):
    """`[(name, array)]` of a probe's inputs: dict keys, list indices as
    strings, or `[(None, x)]` for a single array."""
    if isinstance(x, dict):
        return list(x.items())
    if isinstance(x, list):
        return [(str(i), v) for i, v in enumerate(x)]
    return [(None, x)]


def _take(structure, n):
    return keras.tree.map_structure(lambda a: a[:n], structure)


def _from_dataset(dataset, max_samples, batched=True):
    """The first `max_samples` samples of a stream of batches (or of single
    samples, `batched=False`), as one nest of numpy arrays."""
    parts = []
    count = 0
    for element in datasets.elements(dataset):
        element = tuple(p for p in datasets.split(element) if p is not None)
        element = keras.tree.map_structure(backend.to_numpy_any, element)
        first = keras.tree.flatten(element)[0]
        parts.append(element)
        count += len(first) if batched and np.ndim(first) else 1
        if count >= max_samples:
            break
    if not parts:
        raise ValueError(f"`data` is an empty {datasets.kind(dataset)}.")
    join = np.concatenate if batched else np.stack
    return keras.tree.map_structure(lambda *xs: join(xs, 0), *parts)


class Probe:
    """A fixed batch of probe data: `x`, optional `y` and `sample_weight`.

    Args:
        data: See the module docstring.
        max_samples: Keep at most this many samples (int >= 1).

    Example:

    ```python
    probe = Probe((x_val, y_val), max_samples=4)
    probe.validate(model)   # in on_train_begin
    ```
    """

    def __init__(self, data, max_samples=8):
        self.max_samples = _validate.check_int("max_samples", max_samples, minimum=1)
        if data is None:
            raise ValueError(f"`data` is required: one of {datasets.accepted()}.")
        self._dataset = None
        if datasets.is_stream(data):
            self._dataset = data  # batched, as fit takes it; re-read in validate if not
            batched = _from_dataset(data, self.max_samples)
            if len(_length(batched)) != 1:  # first dims disagree: single samples
                batched = _from_dataset(data, self.max_samples, batched=False)
                self._dataset = None
            data = batched
        self._load(data)

    def _load(self, data):
        """Splits `data` into x, y, sample_weight; converts, checks and caps them."""
        if isinstance(data, tuple):
            if not 1 <= len(data) <= 3:
                raise ValueError(
                    f"`data` as a tuple must be (x,), (x, y) or (x, y, sample_weight), "
                    f"got a tuple of {len(data)} elements."
                )
            x, y, sample_weight = (tuple(data) + (None, None))[:3]
        else:
            x, y, sample_weight = data, None, None
        self.x = _to_numpy(x, "x")
        self.y = _to_numpy(y, "y")
        self.sample_weight = _to_numpy(sample_weight, "sample_weight")
        lengths = _length(self.x)
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                f"`data` x arrays must share one non-zero first (sample) dimension, "
                f"got lengths {sorted(lengths)}."
            )
        n = lengths.pop()
        for name, part in (("y", self.y), ("sample_weight", self.sample_weight)):
            if part is not None and _length(part) != {n}:
                raise ValueError(
                    f"`data` {name} has {sorted(_length(part))} samples but x has {n}."
                )
        self.num_samples = min(n, self.max_samples)
        self.x, self.y, self.sample_weight = (
            _take(p, self.num_samples) if p is not None else None
            for p in (self.x, self.y, self.sample_weight)
        )
        if self.x is not None:  # strings (categorical features) are inputs too
            self.x = keras.tree.map_structure(strings_as_array, self.x)
        for name, part in (("x", self.x), ("y", self.y), ("sample_weight", self.sample_weight)):
            allowed = "fiubUS" if name == "x" else "fiub"
            for leaf in keras.tree.flatten(part) if part is not None else []:
                if leaf.dtype.kind == "f" and not np.isfinite(leaf).all():
                    bad = int((~np.isfinite(leaf)).sum())
                    raise ValueError(f"`data` {name} holds {bad} NaN/Inf values.")
                if leaf.dtype.kind not in allowed:
                    kinds = "numeric or strings" if name == "x" else "numeric"
                    raise TypeError(f"`data` {name} must be {kinds}, got dtype {leaf.dtype}.")

    def tensors(self):
        """`(x, y, sample_weight)` as nests of tensors (None where absent)."""
        return tuple(None if part is None else keras.tree.map_structure(backend.to_tensor, part)
                     for part in (self.x, self.y, self.sample_weight))

    def validate(self, model):
        """Checks the probe against `model`'s inputs (names, ranks, shapes).

        A `tf.data.Dataset` of single samples (not batched) is recognized
        here, where the model's input ranks are known, and re-read.

        Raises:
            ValueError: naming the input and the mismatch.
        """
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            return  # subclassed or unbuilt: checked by the first forward pass
        if not inputs:
            return
        if self._dataset is not None:
            leaves = keras.tree.flatten(self.x)
            if len(leaves) == len(inputs) and all(
                np.ndim(a) == len(t.shape) - 1 for a, t in zip(leaves, inputs)
            ):
                self._reread_unbatched()
        struct = getattr(model, "_inputs_struct", None)
        if isinstance(struct, dict):
            if not isinstance(self.x, dict):
                raise ValueError(
                    f"`data` x must be a dict with keys {sorted(struct)} for this model, "
                    f"got {type(self.x).__name__}."
                )
            missing = sorted(set(struct) - set(self.x))
            if missing:
                raise ValueError(f"`data` x lacks the model input(s) {missing}.")
            pairs = [(k, struct[k], self.x[k]) for k in struct]
        else:
            arrays = self.x if isinstance(self.x, (list, dict)) else [self.x]
            if isinstance(arrays, dict):
                arrays = list(arrays.values())
            if len(arrays) != len(inputs):
                raise ValueError(
                    f"`data` x has {len(arrays)} array(s) but the model has "
                    f"{len(inputs)} input(s)."
                )
            pairs = [(t.name, t, a) for t, a in zip(inputs, arrays)]
        for name, tensor, array in pairs:
            expected = tuple(tensor.shape)[1:]
            got = array.shape[1:]
            if len(expected) != len(got) or any(
                e is not None and e != g for e, g in zip(expected, got)
            ):
                raise ValueError(
                    f"`data` x for input {name!r} has sample shape {got}, but the model "
                    f"expects {expected}."
                )

    def _reread_unbatched(self):
        self._load(_from_dataset(self._dataset, self.max_samples, batched=False))
        self._dataset = None
