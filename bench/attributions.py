"""Each attribution method as a ratio to its own compiled floor, side by side.

Usage:
    python bench/attributions.py [--repeats N] [--runs N] [--methods smoothgrad,...]

MobileNetV2 (weights=None, its BatchNormalization statistics set from 32
random images so activations do not vanish) at 96x96, 4 images, targets
fixed:

- SmoothGrad (50 noisy copies, saliency): floor = one compiled gradient over
  the 200 precomputed noisy inputs (target <= 1.25x);
- occlusion (default 12x12 window, stride 6: 225 positions): floor = one
  compiled forward pass over the 900 precomputed occluded inputs
  (target <= 1.25x);
- Grad-CAM (last 4-D layer): floor = one compiled input gradient of the 4
  images (target <= 1.5x);
- saliency, for reference: the same input gradient;
- DeepLIFT (zero baseline): against saliency (target <= 1.5x: one gradient
  over the images, after a forward pass over their references, which gives
  F at the baseline too).

Interleaved runs; the best of each (the least disturbed by this noisy
machine) is compared.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import (  # noqa: E402
    calibrate_batch_norm, compiled_forward, compiled_input_gradient, floor_inputs, interleaved)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=1,
                        help="independent measurements in a row, each its own best of "
                             "--repeats (default 1)")
    parser.add_argument("--methods", default="smoothgrad,occlusion,gradcam,saliency,deeplift",
                        help="comma-separated methods to time (default: all five)")
    args = parser.parse_args()
    chosen = args.methods.split(",")
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    x = np.random.default_rng(0).random((4, 96, 96, 3), dtype=np.float32)
    calibrate_batch_norm(model, np.random.default_rng(1).random((32, 96, 96, 3), np.float32))
    targets = np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int32)

    gradient, forward = compiled_input_gradient(model), compiled_forward(model)

    noisy, noisy_targets, occluded, occluded_targets = (
        tf.constant(a) for a in floor_inputs(model, x, targets))
    images, image_targets = tf.constant(x), tf.constant(targets)
    runs = {
        "smoothgrad floor": lambda: gradient(noisy, noisy_targets),
        "smoothgrad": lambda: tbx.attribute(model, x, "smoothgrad", target=targets, samples=50),
        "occlusion floor": lambda: forward(occluded, occluded_targets),
        "occlusion": lambda: tbx.attribute(model, x, "occlusion", target=targets),
        "gradcam floor": lambda: gradient(images, image_targets),
        "gradcam": lambda: tbx.attribute(model, x, "gradcam", target=targets),
        "saliency": lambda: tbx.attribute(model, x, "saliency", target=targets),
        "deeplift": lambda: tbx.attribute(model, x, "deeplift", target=targets),
    }
    floors = {m: "gradcam floor" if m == "saliency" else "saliency" if m == "deeplift"
              else f"{m} floor" for m in chosen}
    runs = {k: fn for k, fn in runs.items() if k in chosen or k in floors.values()}
    for fn in runs.values():  # trace and warm up everything first
        fn()
    for run in range(args.runs):
        best = {k: min(v) for k, v in interleaved(runs, args.repeats).items()}
        print(f"MobileNetV2 96x96, 4 images, best of {args.repeats} interleaved runs"
              + (f" (measurement {run + 1} of {args.runs})" if args.runs > 1 else ""))
        print(f"{'method':12s} {'seconds':>8s} {'floor':>8s} {'ratio':>6s}  target")
        for method, target in (("smoothgrad", 1.25), ("occlusion", 1.25), ("gradcam", 1.5),
                               ("saliency", None), ("deeplift", 1.5)):
            if method not in chosen:
                continue
            floor = best[floors[method]]
            goal = (f"<= {target}" + (" (of saliency)" if method == "deeplift" else "")
                    if target else "(reference)")
            print(f"{method:12s} {best[method]:8.3f} {floor:8.3f} "
                  f"{best[method] / floor:6.2f}  {goal}", flush=True)


if __name__ == "__main__":
    main()
