"""Shapley values over feature groups: exact (`shapley`) and KernelSHAP
(`kernel_shap`, Lundberg & Lee 2017).

The features of one sample fall in M groups (`feature_mask`: integers
0..M-1 broadcastable to one sample's shape). A coalition z in {0, 1}^M keeps
the groups it holds at the sample's values and sets the others to the
`baseline`'s; v(z) = F(baseline + z[group] * (x - baseline)) at the
explained target. Every coalition of every sample is built, run and scored
inside one compiled function, in chunks of rows (`_core`): only F leaves it.

- `shapley`: every one of the 2^M coalitions (M <= `MAX_GROUPS`), then
  phi_i = sum over S not holding i of |S|! (M - |S| - 1)! / M! (v(S + i) - v(S)),
  in float64 (Captum's `ShapleyValues` sums M! permutations instead).
- `kernel_shap`: v on `samples` coalitions drawn from the Shapley kernel
  (their size s with probability proportional to (M - 1) / (s (M - s)), the
  groups uniform among those of that size, each with its complement), then
  the least-squares fit of v(z) - v(0) by z . phi under sum(phi) = v(1) - v(0);
  with `samples >= 2^M - 2` every coalition enters with its kernel weight
  and the fit is the exact Shapley values.

Every element of a group carries the group's value, so the sum over groups
(not over elements) is F(x) - F(baseline). Token inputs are grouped per
token (the mask over token positions) and masked at their embedding (the
baseline's embedding: zeros by default).
"""

import math

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain.compute.attribution import _cores, _feeding
from tb_explain.compute.attribution.integrated_gradients import _baseline_sets
from tb_explain.compute.attribution.result import Attribution

OPTIONS_SHAPLEY = ("feature_mask", "baseline")
OPTIONS_KERNEL = ("feature_mask", "baseline", "samples", "seed")

#: Most groups `shapley` enumerates (2^16 coalitions per sample).
MAX_GROUPS = 16
#: Default side of the square patches an image is grouped in: `kernel_shap`
#: takes an 8 x 8 grid of patches (64 groups), `shapley` a 4 x 4 grid (16).
IMAGE_GRID = {"kernel_shap": 8, "shapley": 4}


def _default_groups(x, token, grid):
    """Group ids `[sample shape]` of one attributed input: images (rank 4) a
    `grid x grid` of patches over every channel; tables one group per
    feature; sequences and token embeddings one per position."""
    shape = x.shape[1:]
    if x.ndim == 4 and not token:
        h, w = shape[:2]
        rows = np.minimum(np.arange(h) * grid // h, grid - 1)
        cols = np.minimum(np.arange(w) * grid // w, grid - 1)
        ids = rows[:, None] * grid + cols[None, :]
        return np.broadcast_to(ids[..., None], shape)
    first = np.arange(shape[0]).reshape((shape[0],) + (1,) * (len(shape) - 1))
    return np.broadcast_to(first, shape)


def feature_groups(done, feature_mask, grid, limit=None):
    """Per attributed input, int32 group ids of one sample's shape, numbered
    0..M-1 across the inputs; and M.

    Args:
        done: The `_feeding.Setup`.
        feature_mask: None (defaults, see `_default_groups`; numbered input
            after input), an integer array (one attributed input), or a list
            with one per attributed input, each broadcastable to one
            sample's shape (a token input's: to its `(length,)` ids); ids
            0..M-1 used at least once each, shared across inputs if given.
        grid: The images' default patch grid.
        limit: Most groups wanted: a default image grid is made coarser
            (down to 1 x 1) while the defaults exceed it.
    """
    plan = done.plan
    token = [plan.kinds[i] == "token" for i in plan.attributed]
    if feature_mask is None:
        while True:  # a coarser image grid while the groups exceed `limit`
            groups, offset = [], 0
            for x, is_token in zip(done.xs, token):
                ids = _default_groups(x, is_token, grid)
                ids = np.unique(ids, return_inverse=True)[1].reshape(ids.shape) + offset
                offset = int(ids.max()) + 1
                groups.append(ids.astype(np.int32))
            images = any(x.ndim == 4 and not t for x, t in zip(done.xs, token))
            if limit is None or offset <= limit or grid == 1 or not images:
                return groups, offset
            grid -= 1
    masks = feature_mask if isinstance(feature_mask, (list, tuple)) else [feature_mask]
    if len(masks) != len(done.xs):
        raise ValueError(f"`feature_mask` must give one mask per attributed input "
                         f"({len(done.xs)}), got {len(masks)}.")
    groups = []
    for j, (mask, x, is_token) in enumerate(zip(masks, done.xs, token)):
        mask = np.asarray(mask)
        if mask.dtype.kind not in "iu":
            raise TypeError(f"`feature_mask` must hold integers (group ids), got dtype "
                            f"{mask.dtype}.")
        shape = x.shape[1:]
        if is_token:  # over token positions; the embedding axis follows
            mask = mask[..., None]
        if mask.ndim == len(shape) + 1 and mask.shape[0] == 1:
            mask = mask[0]  # a leading batch axis of 1
        try:
            groups.append(np.broadcast_to(mask, shape).astype(np.int32))
        except ValueError:
            raise ValueError(f"`feature_mask` of shape {np.shape(masks[j])} does not broadcast "
                             f"to one sample's shape {shape[:-1] if is_token else shape}."
                             ) from None
    ids = np.unique(np.concatenate([g.ravel() for g in groups]))
    if ids.min() < 0 or not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError(f"`feature_mask` must number its groups 0..M-1, each used; got ids "
                         f"{ids[:10].tolist()}{' ...' if len(ids) > 10 else ''}.")
    return groups, int(len(ids))


def _core(model, key, plan, chunk, coalitions):
    """`core(xs, bases, held, targets, groups, z, start) -> f`: the `chunk`
    rows (sample, coalition) from flat index `start`, built, run forward and
    scored inside the compiled function (`z`: `[K, M]` 0/1 float32)."""
    ops = keras.ops

    def build(holder):
        return lambda *args: core(holder, *args)

    def core(holder, xs, bases, held, targets, groups, z, start):
        _, _, sample, coalition = _feeding.chunk_index(start, chunk, coalitions,
                                                       ops.shape(xs[0])[0])
        kept = backend.gather(z, coalition)  # [chunk, M]
        points = []
        for x, base, group in zip(xs, bases, groups):
            # keep[r, element] = kept[r, group[element]]
            keep = ops.take(kept, ops.reshape(group, (-1,)), axis=1)
            keep = ops.reshape(ops.cast(keep, x.dtype), (-1,) + tuple(x.shape[1:]))
            rows, origin = backend.gather(x, sample), backend.gather(base, sample)
            points.append(origin + keep * (rows - origin))
        model_xs = [None if h is None else backend.gather(h, sample) for h in held]
        outs = model(_feeding.feed(plan, points, model_xs, holder), training=False)
        return ops.cast(_feeding.take_targets(outs, key, backend.gather(targets, sample)),
                        "float32")

    return _cores.cached_core(model, ("coalitions", key, chunk, coalitions), plan, build)


def evaluate(model, done, bases, groups, z, batch_size=None):
    """`v`: `[n, K]` float64, the explained output on every coalition of `z`
    (`[K, M]` 0/1) of every sample."""
    coalitions = len(z)
    total_rows = done.n * coalitions
    chunk = _feeding.chunk_rows(total_rows,
                                _feeding.forward_batch_size(model, done.xs, batch_size))
    core = _core(model, done.key, done.plan, chunk, coalitions)
    args = _cores.as_tensors((list(done.xs), list(bases), _feeding.held_inputs(done),
                              np.asarray(done.targets), [g.astype(np.int32) for g in groups],
                              z.astype(np.float32)))
    values = [backend.to_numpy(core(*args, _feeding.start_index(start)))
              for start in range(0, total_rows, chunk)]
    return np.concatenate(values)[:total_rows].astype(np.float64).reshape(done.n, coalitions)


def _bits(m):
    """Every coalition of `m` groups, `[2^m, m]`: row k holds group i when bit i of k is set."""
    k = np.arange(2 ** m, dtype=np.int64)
    return ((k[:, None] >> np.arange(m)) & 1).astype(np.float32)


def shapley_from_all(v, m):
    """Exact Shapley values `[n, m]` from `v` `[n, 2^m]` on every coalition
    (row k of `_bits(m)`), in float64."""
    k = np.arange(2 ** m, dtype=np.int64)
    size = np.array([bin(i).count("1") for i in range(2 ** m)])
    weight = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m)
                       if s < m else 0.0 for s in size])
    phi = np.zeros((len(v), m))
    for i in range(m):
        without = k[(k >> i) & 1 == 0]
        phi[:, i] = ((v[:, without | (1 << i)] - v[:, without]) * weight[without]).sum(axis=1)
    return phi


def _spread(done, groups, phi):
    """Group values `[n, M]` onto the elements of each attributed input (a
    token input: one value per token, not per embedding unit)."""
    out = []
    for group, i in zip(groups, done.plan.attributed):
        value = phi[:, group.astype(np.int64)]
        out.append(value[..., :1] if done.plan.kinds[i] == "token" else value)
    return out


def _setup(model, inputs, target, output, position, feature_mask, baseline, grid, limit=None):
    done = _feeding.setup(model, inputs, target, output, position)
    groups, m = feature_groups(done, feature_mask, grid, limit)
    bases = _baseline_sets(baseline, done.plan, done.xs)[0]
    return done, groups, m, [b.astype(x.dtype) for b, x in zip(bases, done.xs)]


def _result(done, groups, phi, v_full, v_empty):
    return Attribution(attributions=_feeding.leaves_like(done, _spread(done, groups, phi)),
                       delta=phi.sum(axis=1) - (v_full - v_empty), **done.explained,
                       output=v_full, baseline_output=v_empty,
                       skipped=dict(done.plan.skipped))


def shapley(model, inputs, *, target=None, output=None, position="last", batch_size=None,
            feature_mask=None, baseline=None):
    """Exact Shapley values of feature groups, by enumerating the 2^M
    coalitions (M <= 16).

    Args:
        feature_mask: Integer group ids broadcastable to one sample's shape
            (a list: one per attributed input; token inputs: per token),
            groups 0..M-1. Default: one group per feature of a table, per
            position of a sequence, a 4 x 4 grid of patches of an image
            (coarser when other inputs' groups would pass 16).
        baseline: What a group absent from a coalition takes (default
            zeros; token inputs: the zero embedding; as in
            `tbx.integrated_gradients`: a number, one sample's shape or the
            inputs' shape).
    """
    done, groups, m, bases = _setup(model, inputs, target, output, position, feature_mask,
                                    baseline, IMAGE_GRID["shapley"], MAX_GROUPS)
    if m > MAX_GROUPS:
        given = ("`feature_mask` has" if feature_mask is not None
                 else "The inputs' default groups are")
        raise ValueError(f"{given} {m} groups; `shapley` enumerates 2^M coalitions and takes "
                         f"at most {MAX_GROUPS} groups: pass a coarser `feature_mask`, or use "
                         f"`kernel_shap`.")
    v = evaluate(model, done, bases, groups, _bits(m), batch_size)
    phi = shapley_from_all(v, m)
    return _result(done, groups, phi, v[:, -1], v[:, 0])


def _kernel_weight(m, size):
    """The Shapley kernel (M - 1) / (C(M, s) s (M - s)) of a coalition of `size`."""
    return (m - 1) / (math.comb(m, size) * size * (m - size))


def sample_coalitions(m, samples, seed):
    """`(z [K, m], weights [K])`: every coalition but the empty and the full
    one with its kernel weight when `samples >= 2^m - 2`; else `samples`
    draws (pairs: a coalition and its complement) from the kernel, weight 1."""
    if samples >= 2 ** m - 2:
        z = _bits(m)[1:-1]
        sizes = z.sum(axis=1).astype(int)
        return z, np.array([_kernel_weight(m, s) for s in sizes])
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes))
    p /= p.sum()
    pairs = -(-samples // 2)
    drawn = rng.choice(sizes, size=pairs, p=p)
    z = np.zeros((2 * pairs, m), np.float32)
    for r, s in enumerate(drawn):
        z[2 * r, rng.choice(m, size=s, replace=False)] = 1
        z[2 * r + 1] = 1 - z[2 * r]
    return z[:samples], np.ones(min(samples, 2 * pairs))


def kernel_fit(v, v_empty, v_full, z, weights):
    """`[n, M]` weighted least squares of `v - v_empty` by `z . phi` under
    `sum(phi) = v_full - v_empty` (the last group eliminated), float64."""
    n, m = len(v), z.shape[1]
    if m == 1:
        return (v_full - v_empty)[:, None]
    z = z.astype(np.float64)
    total = v_full - v_empty
    design = z[:, :-1] - z[:, -1:]  # [K, M-1]
    w = np.sqrt(weights)[:, None]
    phi = np.zeros((n, m))
    for s in range(n):
        y = v[s] - v_empty[s] - z[:, -1] * total[s]
        solution, *_ = np.linalg.lstsq(design * w, y * w[:, 0], rcond=None)
        phi[s, :-1] = solution
        phi[s, -1] = total[s] - solution.sum()
    return phi


def kernel_shap(model, inputs, *, target=None, output=None, position="last", batch_size=None,
                feature_mask=None, baseline=None, samples=512, seed=0):
    """KernelSHAP (Lundberg & Lee 2017) over feature groups.

    Args:
        feature_mask: As in `shapley`; default: one group per feature of a
            table, per position of a sequence, an 8 x 8 grid of patches of
            an image.
        baseline: As in `shapley`.
        samples: Coalitions evaluated per sample (int >= 2); at least
            2^M - 2: all of them, and the result is the exact Shapley values.
        seed: Seed of the coalitions drawn (the same seed, the same result).
    """
    samples = _validate.check_int("samples", samples, minimum=2)
    seed = _validate.check_int("seed", seed)
    done, groups, m, bases = _setup(model, inputs, target, output, position, feature_mask,
                                    baseline, IMAGE_GRID["kernel_shap"])
    z, weights = sample_coalitions(m, samples, seed)
    ends = np.stack([np.zeros(m, np.float32), np.ones(m, np.float32)])
    v = evaluate(model, done, bases, groups, np.concatenate([ends, z]), batch_size)
    phi = kernel_fit(v[:, 2:], v[:, 0], v[:, 1], z, weights)
    return _result(done, groups, phi, v[:, 1], v[:, 0])

