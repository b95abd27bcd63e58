"""What two models learned alike: layer Gram matrices and linear CKA.

Linear CKA (Kornblith et al. 2019) compares layer i of one model with layer
j of another on the same n examples. With `Xc` the n x d outputs of a layer
(flattened per example, centred over the examples) and `K = Xc Xc^T` its
centred Gram matrix,

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
              = <K, L>_F / (||K||_F ||L||_F),

so each layer's n x n Gram matrix is all a comparison needs, whatever the
layer's width, and two runs compare from their logs alone.

A Gram matrix is packed (`pack`): its diagonal, then its upper triangle
times sqrt(2), scaled to unit length: n (n + 1) / 2 values whose dot
products are the Frobenius products of the matrices. A layer constant over
the examples has no direction: its row is zeros and its CKA is NaN.

What is logged per layer (`encode`) is the smaller of two exact records: a
narrow layer's centred outputs themselves (float32, n x d: 4 n d bytes,
when d < (n + 1) / 4), else its packed Gram matrix in float16 (n (n + 1)
bytes). So a layer never costs more than its Gram matrix, whatever its
width, and a 32-unit layer on 512 rows costs 66 kB instead of 263 kB.
`decode` turns either back into the packed Gram matrix.
"""

import hashlib

import keras
import numpy as np

from tb_explain import backend

#: Rows of the probe a Gram matrix covers at most (`ActivationImages`'
#: `similarity_samples` default).
MAX_SAMPLES = 512
#: Storage dtype of the packed, unit-length Gram matrices.
DTYPE = np.float16


def make_layer_features(model, paths_layers):
    """A forward pass returning the flattened outputs of `paths_layers`.

    Args:
        model: A Keras model of any kind.
        paths_layers: `[(path, layer)]`, the layers to read (as
            `compute.activations` selects them).

    Returns:
        `fn(x) -> {path: float32 (n, d)}`, a `backend.Function` (compiled;
        eager inside `tiering.eager()`): each layer's first output tensor,
        flattened per example, for the layers the forward pass reaches.
        `fn.trace(x)` compiles it for `x`'s shapes ahead, where the backend
        can.
    """
    from tb_explain.compute.activations import (  # noqa: PLC0415
        _first_tensor, _is_number, recording)

    captured = {}

    def features(inputs):
        captured.clear()
        model(inputs, training=False)
        out = {}
        for path, _ in paths_layers:
            tensor = _first_tensor(captured.get(path))
            if tensor is not None and _is_number(tensor) and len(tensor.shape) >= 1:
                tensor = keras.ops.cast(tensor, "float32")
                out[path] = keras.ops.reshape(tensor, (keras.ops.shape(tensor)[0], -1))
        captured.clear()
        return out

    compiled = backend.Function(features, model.variables)

    def call(x):
        with recording(paths_layers, captured):
            return compiled(x)

    def trace(x):
        """Compiles for `x`'s shapes without running, where the backend can
        (`backend.Function.trace`); returns whether it did."""
        with recording(paths_layers, captured):
            return compiled.trace(x)

    call.trace = trace
    return call


def pack(features, dtype=DTYPE):
    """The packed, unit-length centred Gram matrix of `features` (n, d).

    Returns:
        `(packed, constant)`: `dtype` `(n (n + 1) / 2,)` (diagonal, then the
        upper triangle times sqrt(2), row by row, divided by the Frobenius
        norm), and whether the layer is constant over the n examples (then
        `packed` is zeros).
    """
    x = np.asarray(features, np.float32)
    x = x.reshape(len(x), -1)
    centred = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    gram = (centred @ centred.T).astype(np.float64)
    n = len(gram)
    upper = np.triu_indices(n, 1)
    flat = np.concatenate([np.diag(gram), np.sqrt(2.0) * gram[upper]])
    norm = np.linalg.norm(flat)
    spread = float(np.abs(centred).max()) if centred.size else 0.0
    # constant: nothing left after centring (up to float32 rounding of the mean)
    if not np.isfinite(norm) or norm == 0.0 or spread <= 1e-6 * float(np.abs(x).max()):
        return np.zeros(len(flat), dtype), True
    return (flat / norm).astype(dtype), False


def encode(features):
    """The record of one layer's outputs `features` (n, d) (see the module
    docstring).

    Returns:
        `(payload, entry)`: uint8 bytes, and a JSON-able dict with `kind`
        (`"features"` or `"gram"`), `dtype`, `shape` and `constant`.
    """
    x = np.asarray(features, np.float32)
    x = x.reshape(len(x), -1)
    n, d = x.shape
    if 4 * d < n + 1:
        centred = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
        constant = not np.any(centred) or float(np.abs(centred).max()) <= 1e-6 * float(
            np.abs(x).max())
        array = np.zeros_like(centred) if constant else centred
        kind = "features"
    else:
        array, constant = pack(x)
        kind = "gram"
    array = np.ascontiguousarray(array)
    return (np.frombuffer(array.tobytes(), np.uint8),
            {"kind": kind, "dtype": array.dtype.name, "shape": list(array.shape),
             "constant": bool(constant)})


def decode(payload, entry):
    """The packed Gram matrix (float64, unit length; zeros for a constant
    layer) of one `encode` record."""
    array = np.frombuffer(np.asarray(payload, np.uint8).tobytes(), entry["dtype"]).reshape(
        entry["shape"])
    if entry["kind"] == "gram":
        return array.astype(np.float64)
    if entry["constant"]:
        n = array.shape[0]
        return np.zeros(n * (n + 1) // 2)
    return pack(array, dtype=np.float64)[0]


def unpack(packed, n):
    """The Gram matrix (unit Frobenius norm) of a packed row; for tests and
    for readers that want the matrix."""
    packed = np.asarray(packed, np.float64)
    gram = np.zeros((n, n))
    gram[np.diag_indices(n)] = packed[:n]
    upper = np.triu_indices(n, 1)
    gram[upper] = packed[n:] / np.sqrt(2.0)
    gram.T[upper] = gram[upper]
    return gram


def cka(packed_a, packed_b):
    """Linear CKA between every row of `packed_a` and every row of `packed_b`.

    Args:
        packed_a: `(La, N)` packed Gram matrices (`pack`), one per layer.
        packed_b: `(Lb, N)` on the same examples.

    Returns:
        float64 `(La, Lb)`; NaN where either layer is constant.
    """
    a = np.asarray(packed_a, np.float64)
    b = np.asarray(packed_b, np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Gram matrices of different probes: {a.shape[1]} and {b.shape[1]} "
                         f"packed values.")
    with np.errstate(invalid="ignore", divide="ignore"):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)  # float16 rounding: back to unit
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return np.clip(a @ b.T, -1.0, 1.0)


def linear_cka(x, y):
    """Linear CKA of two layers' outputs on the same examples, from the
    features (`x` (n, d1), `y` (n, d2)); the closed form the packed Gram
    matrices stand for. NaN when either is constant."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denominator == 0.0:
        return float("nan")
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator)


class Fingerprint:
    """A short hex digest of a nest of arrays (inputs, labels), added whole
    or a batch at a time: equal for the same examples in the same order,
    whatever the batching and the float or int width that holds them.

    Example:

    ```python
    f = Fingerprint()
    for x, y in batches:
        f.add((x, y))
    f.hexdigest()
    ```
    """

    def __init__(self):
        self._leaves = []  # one running digest and trailing shape per leaf

    def add(self, structure):
        """Adds the next rows of every leaf of `structure`."""
        leaves = keras.tree.flatten(structure)
        if not self._leaves:
            self._leaves = [[hashlib.blake2b(digest_size=12), None] for _ in leaves]
        if len(leaves) != len(self._leaves):
            raise ValueError(f"Fingerprint: {len(leaves)} arrays after {len(self._leaves)}.")
        for slot, leaf in zip(self._leaves, leaves):
            array = _canonical(leaf)
            slot[1] = array.shape[1:]
            slot[0].update(np.ascontiguousarray(array).tobytes())
        return self

    def hexdigest(self):
        """The digest of everything added."""
        digest = hashlib.blake2b(digest_size=12)
        for running, shape in self._leaves:
            digest.update(f"{shape}".encode())
            digest.update(running.digest())
        return digest.hexdigest()


def fingerprint(structure):
    """`Fingerprint().add(structure).hexdigest()`."""
    return Fingerprint().add(structure).hexdigest()


def _canonical(leaf):
    array = np.asarray(leaf)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind in "OU":
        return np.char.encode(array.astype(str), "utf-8")
    return array
