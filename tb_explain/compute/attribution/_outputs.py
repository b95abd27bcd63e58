"""Outputs and targets: which output is explained (validated against the
model's output structure) and which unit of it per sample.
"""

import dataclasses

import keras
import numpy as np

from tb_explain import backend
from tb_explain.compute.attribution._cores import cache
from tb_explain.compute.attribution._cores import explained_forward as forward
from tb_explain.compute.attribution._cores import forward_and_masks
from tb_explain.compute.attribution._inputs import model_inputs


def static_outputs(model):
    """The symbolic output structure of Functional/Sequential models, or None."""
    struct = getattr(model, "_outputs_struct", None)
    if struct is not None:
        return struct
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return outputs[0] if outputs and len(outputs) == 1 else None


def output_names(outputs):
    """Keys of a multi-output structure (dict keys or indices), or `[None]`."""
    if isinstance(outputs, dict):
        return list(outputs)
    if isinstance(outputs, (list, tuple)):
        return list(range(len(outputs))) if len(outputs) > 1 else [0]
    return [None]


def output_key(model, outputs, output):
    """Validates `output` for the model's output structure; returns the key."""
    if isinstance(outputs, (dict, list, tuple)):
        names = list(outputs) if isinstance(outputs, dict) else list(range(len(outputs)))
        if len(names) == 1 and output is None:
            return names[0]
        if output is None:
            raise ValueError(
                f"Model {model.name!r} has {len(names)} outputs: pass `output=` naming the "
                f"one to explain, one of {names}."
            )
        if output not in names:
            raise ValueError(f"`output` must be one of {names}, got {output!r}.")
        return output
    if output is not None:
        raise ValueError(f"`output` names one of several outputs, but model {model.name!r} "
                         f"has a single output; got output={output!r}.")
    return None


def raw(outputs, output):
    """The selected output as the model returns it (no reshape, no cast)."""
    if isinstance(outputs, (dict, list, tuple)):
        return outputs[output]
    return outputs


def select(outputs, output):
    """The selected output as float32 `[n, units]`."""
    outputs = keras.ops.cast(raw(outputs, output), "float32")
    if len(outputs.shape) == 2:  # (a reshape costs 15 us on PyTorch, in every eager core call)
        return outputs
    return keras.ops.reshape(outputs, (-1, int(np.prod(outputs.shape[1:]))))


def targets(target, scores):
    """Per-sample target units: validated `target`, or the argmax of `scores`."""
    n, units = scores.shape
    if units == 1:
        if target not in (None, 0) and not (
            isinstance(target, (list, np.ndarray)) and np.all(np.asarray(target) == 0)
        ):
            raise ValueError(f"`target` must be None for a single-unit output, got {target!r}.")
        return np.zeros(n, np.int32)
    if target is None:
        return np.argmax(scores, axis=1).astype(np.int32)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        chosen = np.full(n, int(target))
    else:
        chosen = np.asarray(target)
        if chosen.shape != (n,) or chosen.dtype.kind not in "iu":
            raise ValueError(
                f"`target` must be None, an int, or {n} ints (one per sample), got {target!r}."
            )
    if chosen.min() < 0 or chosen.max() >= units:
        raise ValueError(f"`target` must be in [0, {units}), got {target!r}.")
    return chosen.astype(np.int32)


def output_units(model, key, plan=None):
    """Units of the selected output, read off the symbolic outputs, or from one
    forward pass on the first sample when the model has none (subclassed)."""
    known = cache(model)
    if ("units", key) in known:  # read off the symbolic outputs once
        return known["units", key]
    static = static_outputs(model)
    if static is not None:
        selected = static[key] if key is not None else static
        selected = keras.tree.flatten(selected)[0]
        dims = selected.shape[1:]
        if all(d is not None for d in dims):
            known["units", key] = int(np.prod(dims))
            return known["units", key]
    if plan is None:
        return None
    first = dataclasses.replace(plan, leaves=[x[:1] for x in plan.leaves])
    return int(select(forward(model)(model_inputs(model, first)), key).shape[1])


def explained_outputs(model, plan, output=None):
    """The outputs to explain: `[output]` when given, else every output of
    the model (`[None]` for a single output), read off the symbolic outputs
    or one forward pass on the first sample."""
    if output is not None:
        return [output]
    static = static_outputs(model)
    if static is None:
        first = dataclasses.replace(plan, leaves=[x[:1] for x in plan.leaves])
        static = forward(model)(model_inputs(model, first))
    return output_names(static)


def check_position(position):
    """`position` checked: `"last"` or an int."""
    if position == "last" or (isinstance(position, (int, np.integer))
                              and not isinstance(position, bool)):
        return position
    raise ValueError(f"`position` must be \"last\" or an int (a position of a sequence output), "
                     f"got {position!r}.")


def last_positions(inputs, scores, length, carried=None, plan=None):
    """Per sample, the last unmasked position of a sequence output: from a
    `padding_mask` input of the output's length, else the Keras mask the
    output carried (`carried`, from `_cores.forward_and_masks`), else the
    mask an `Embedding(mask_zero=True)` computes for a token input of the
    output's length (the mask is lost on the way when a layer does not
    propagate it: `x + attention(x)` on Keras tensors), else `length - 1`."""
    n = len(backend.to_numpy(scores))
    mask = inputs.get("padding_mask") if isinstance(inputs, dict) else None
    if mask is None and carried is not None:
        carried = np.asarray(backend.to_numpy(carried)).astype(bool)
        mask = None if carried.all() else carried  # all True: none carried
    if mask is None and plan is not None:
        mask = _embedding_mask(plan, n, length)
    if mask is not None:
        mask = np.asarray(backend.to_numpy(mask)).astype(bool)
        if mask.shape == (n, length):
            last = length - 1 - np.argmax(mask[:, ::-1], axis=1)
            return np.where(mask.any(axis=1), last, length - 1).astype(np.int64)
    return np.full(n, length - 1, np.int64)


def _embedding_mask(plan, n, length):
    """The mask of the first `Embedding(mask_zero=True)` reading `(n,
    length)` token ids of a model input (`compute_mask`), or None."""
    for layer, ids in zip(plan.embeddings, plan.ids or [None] * len(plan.embeddings)):
        if layer is None or ids is None or not getattr(layer, "mask_zero", False):
            continue
        ids = np.asarray(ids)
        if ids.shape == (n, length):
            return np.asarray(backend.to_numpy(layer.compute_mask(backend.to_tensor(ids))))
    return None


def outputs_and_targets(model, plan, target, output, position="last", predict=True):
    """`(output key, targets, classes per position)`: one compiled forward
    pass when the targets depend on the predictions or the model has no
    symbolic outputs. A sequence output `(n, T, V)` is explained at one
    position per sample (`position`: an int, or `"last"`: the last unmasked
    one, see `last_positions`), its targets index the flattened `T * V`
    scores, and the third value is `V` (None for other outputs).

    Without `predict` (a warm-up that only compiles), predicted targets of a
    model with symbolic outputs are zeros of their shape, and the forward
    pass compiles ahead (`backend.Function.trace`) instead of running."""
    position = check_position(position)
    n = len(plan.leaves[0])
    static = static_outputs(model)
    sequence = static is not None and len(keras.tree.flatten(
        static[output] if isinstance(static, dict) and output in static else static)[0].shape) == 3
    if static is not None and not sequence and (target is not None or not predict):
        key = output_key(model, static, output)
        if target is None:  # a warm-up: the forward pass compiles ahead, where it can
            forward(model).trace(model_inputs(model, plan))
            return key, np.zeros(n, np.int32), None  # the shape of `targets`' argmax
        units = output_units(model, key, plan)
        return key, targets(target, np.zeros((n, units))), None
    inputs = model_inputs(model, plan)
    outs = forward(model)(inputs)
    key = output_key(model, outs, output)
    scores = raw(outs, key)
    if len(scores.shape) != 3:
        return key, targets(target, backend.to_numpy(select(outs, key))), None
    length, classes = int(scores.shape[1]), int(scores.shape[2])
    if position == "last":
        padded = isinstance(inputs, dict) and "padding_mask" in inputs
        carried = None if padded else raw(forward_and_masks(model)(inputs)[1], key)
        where = last_positions(inputs, scores, length, carried, plan)
    else:
        if not -length <= position < length:
            raise ValueError(f"`position` must be in [{-length}, {length}) for a sequence "
                             f"output of length {length}, got {position}.")
        where = np.full(n, position % length, np.int64)
    at = np.asarray(backend.to_numpy(scores), np.float64)[np.arange(n), where]
    return key, (where * classes + targets(target, at)).astype(np.int32), classes


def explained_targets(model, plan, output=None, target=None):
    """`{output: target}` for every explained output (see `explained_outputs`):
    `target` applies to the outputs with several units; single-unit outputs
    of a multi-output model need none."""
    outputs = explained_outputs(model, plan, output)
    return {key: None if len(outputs) > 1 and output_units(model, key, plan) == 1 else target
            for key in outputs}
