"""tbx.feature_visualization against tf-keras-vis' ActivationMaximization, side by side.

Usage:
    pip install tf-keras-vis      # the reference (test-only dependency)
    python bench/features.py [--units 8] [--steps 128] [--repeats 3]

On MobileNetV2 (96x96, random weights: no download) both optimize one image
per filter of a mid-level block (`block_6_expand_relu`) for the same number
of steps, all units in one batch, each with its default regularizers. The
activation each image reaches is measured the same way for both (the
filter's mean over positions, on the final image, without transforms), and
the time of a whole call (tracing included: each is what a user pays per
call). Prints the median over `--repeats` interleaved runs, and the ratios
(targets: activation >= 1x the reference's, time <= 0.5x).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYER = "block_6_expand_relu"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415

    try:
        from tf_keras_vis.activation_maximization import ActivationMaximization  # noqa: PLC0415
        from tf_keras_vis.utils.scores import CategoricalScore  # noqa: PLC0415
    except ImportError:
        raise SystemExit("needs the reference: pip install tf-keras-vis") from None

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    units = list(range(args.units))
    probe = keras.Model(model.inputs, model.get_layer(LAYER).output)

    def reached(images):  # images in [0, 1]
        out = probe(tf.convert_to_tensor(images, tf.float32), training=False).numpy()
        return np.array([out[k, ..., u].mean() for k, u in enumerate(units)])

    def ours():
        fv = tbx.feature_visualization(model, LAYER, units, steps=args.steps)
        return fv.images

    def reference():
        am = ActivationMaximization(probe, clone=False)
        rng = np.random.default_rng(0)
        seed = rng.uniform(0, 1, (len(units), 96, 96, 3)).astype("float32")
        images = am(CategoricalScore(units), seed_input=seed, input_range=(0.0, 1.0),
                    steps=args.steps)
        return np.asarray(images, np.float32) / 255.0 if np.max(images) > 1.5 else np.asarray(
            images, np.float32)

    times = {"tb_explain": [], "tf-keras-vis": []}
    acts = {"tb_explain": [], "tf-keras-vis": []}
    for _ in range(args.repeats):
        for name, fn in (("tb_explain", ours), ("tf-keras-vis", reference)):
            start = time.perf_counter()
            images = fn()
            times[name].append(time.perf_counter() - start)
            acts[name].append(float(reached(images).mean()))
    print(f"MobileNetV2 96x96, layer {LAYER}, {len(units)} units, {args.steps} steps, "
          f"median of {args.repeats}")
    for name in times:
        print(f"{name:<14} {statistics.median(times[name]):8.2f} s   mean activation reached "
              f"{statistics.median(acts[name]):.4g}")
    t = statistics.median(times["tb_explain"]) / statistics.median(times["tf-keras-vis"])
    a = statistics.median(acts["tb_explain"]) / statistics.median(acts["tf-keras-vis"])
    print(f"time ratio {t:.2f}x (target <= 0.5), activation ratio {a:.2f}x (target >= 1)")


if __name__ == "__main__":
    main()
