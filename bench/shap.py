"""The SHAP family against Captum, side by side (PyTorch backend).

Usage:
    KERAS_BACKEND=torch python bench/shap.py [--repeats 3]

The demo's CNN (8 x 8 digits, random weights), 4 images; the same Keras
model is the PyTorch module Captum explains, so both run the same weights
and count the same model evaluations:

- KernelSHAP, 64 groups (one per pixel), 512 coalitions per image:
  `tbx.attribute(..., "kernel_shap", samples=512)` against Captum's
  `KernelShap(n_samples=512)`;
- exact Shapley values, 6 groups (a 2 x 3 grid of patches): ours evaluates
  the 2^6 = 64 coalitions per image; Captum's `ShapleyValues` walks the 6!
  permutations (7 evaluations each, 5,040 per image): the time in all, the
  values (max absolute difference); and per model evaluation, taking turns
  (ours on 12 groups: 4,096 coalitions per image; Captum's on 5 groups,
  its forward calls counted, each evaluating one coalition of every image).

Captum evaluates one perturbation per forward pass (its default,
`perturbations_per_eval=1`); ours builds every coalition inside batched
compiled passes (on PyTorch, chunks of at most 1,024 rows here: see
`FORWARD_VALUES` in `tb_explain/backend/torch.py`). Each time is the best of
its repeats: this machine's slow spells would otherwise decide the ratio. Target: >= 20x
faster per model evaluation. Needs
`pip install "tb_explain[bench]"` (captum).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
#: glibc's malloc returns large freed blocks to the system and maps them again
#: (its thresholds move with what ran before): after Captum's run, ours ran
#: 1.6x slower in the same process. Both sides run with the thresholds pinned.
PINNED = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}
if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in PINNED.items()):
    os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **PINNED})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_model, load_data  # noqa: E402


def best_time(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main():
    import torch  # noqa: PLC0415
    from captum.attr import KernelShap, ShapleyValues  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if keras.backend.backend() != "torch":
        raise SystemExit("Captum explains PyTorch modules: run with KERAS_BACKEND=torch.")
    keras.utils.set_random_seed(0)
    model = build_model()
    (x, _), _ = load_data()
    x = x[:4]
    target = model.predict(x, verbose=0).argmax(axis=1)
    inputs = torch.tensor(x)
    forward = lambda t: model(t)  # noqa: E731
    rows = [["method", "evaluations / image", "ours (s)", "Captum (s)", "per evaluation: "
             "Captum / ours", "max |difference|"]]

    pixels = np.arange(64).reshape(8, 8, 1)
    tbx.attribute(model, x, "kernel_shap", target=target, feature_mask=pixels, samples=512)
    ours, _, mine = best_time(lambda: tbx.attribute(
        model, x, "kernel_shap", target=target, feature_mask=pixels, samples=512), args.repeats)
    mask = torch.tensor(pixels[None])
    theirs, _, captum = best_time(lambda: KernelShap(forward).attribute(
        inputs, target=torch.tensor(target), feature_mask=mask, baselines=0.0, n_samples=512),
        args.repeats)
    diff = np.abs(mine.attributions - captum.detach().numpy()).max()
    rows.append(["kernel_shap (64 groups)", "512", f"{ours:.3f}", f"{theirs:.3f}",
                 f"{theirs / ours:.1f}x", f"{diff:.3g} (both sample)"])

    patches = (np.arange(8)[:, None] // 4 * 3 + np.arange(8)[None, :] * 3 // 8)[..., None]
    tbx.attribute(model, x, "shapley", target=target, feature_mask=patches)
    ours, _, mine = best_time(lambda: tbx.attribute(
        model, x, "shapley", target=target, feature_mask=patches), args.repeats)
    theirs, _, captum = best_time(lambda: ShapleyValues(forward).attribute(
        inputs, target=torch.tensor(target), feature_mask=torch.tensor(patches[None]),
        baselines=0.0), 1)
    diff = np.abs(mine.attributions - captum.detach().numpy()).max()
    rows.append(["shapley (6 groups)", "64 (Captum: 5,040)", f"{ours:.3f}", f"{theirs:.3f}",
                 f"{theirs / ours:.0f}x in all", f"{diff:.3g}"])

    # per evaluation, interleaved: ours on 12 groups (4,096 coalitions per image),
    # Captum's on 5 groups (its forward calls counted)
    twelve = (np.arange(8)[:, None] // 4 * 6 + np.arange(8)[None, :] * 6 // 8)[..., None]
    five = np.broadcast_to((np.arange(8) * 5 // 8)[None, :, None], (8, 8, 1))
    calls = [0]

    def counted(t):
        calls[0] += 1
        return model(t)

    tbx.attribute(model, x, "shapley", target=target, feature_mask=twelve)
    runs = {"ours": lambda: tbx.attribute(model, x, "shapley", target=target,
                                          feature_mask=twelve),
            "captum": lambda: ShapleyValues(counted).attribute(
                inputs, target=torch.tensor(target), feature_mask=torch.tensor(five[None]),
                baselines=0.0)}
    runs["captum"]()
    per_call, calls[0] = calls[0], 0
    best = {k: min(v) for k, v in interleaved(runs, max(5, args.repeats)).items()}
    rows.append(["shapley (12 groups)", "4,096", f"{best['ours']:.3f}",
                 f"{best['captum']:.3f} (5 groups: {per_call:,} calls)",
                 f"{(best['captum'] / per_call) / (best['ours'] / 4096):.1f}x", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("target: >= 20x per model evaluation")


if __name__ == "__main__":
    main()
