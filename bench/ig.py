"""Speed of tbx.integrated_gradients against its floor and the TF tutorial's recipe.

Usage:
    python bench/ig.py [--repeats N]

Per model, all measured in one run, interleaved, after warm-up (tracing); each
ratio compares the fastest of the repeats (the least disturbed by this noisy
machine):

- floor: one compiled gradient of the target output over the same
  `samples x steps` interpolated inputs, precomputed (the least any IG
  implementation must do);
- tbx: `tbx.integrated_gradients(model, x, steps=51,
  method="riemann_trapezoid")`, everything included (targets, baseline
  outputs, completeness delta);
- tutorial: the recipe of the official TensorFlow IG tutorial
  (tensorflow.org/tutorials/interpretability/integrated_gradients): one image
  at a time, alphas in batches of 32 through a `tf.function`, trapezoidal
  average of the concatenated gradients.

Targets: tbx / floor <= 1.25, tbx / tutorial < 1.
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
from bench._timing import compiled_input_gradient, interleaved  # noqa: E402
from demo_train import build_model, load_data  # noqa: E402

M_STEPS = 50  # the tutorial's default: 51 alphas


def tutorial_ig(model):
    """The TF tutorial's recipe, for one model."""

    def interpolate_images(baseline, image, alphas):
        alphas_x = alphas[:, tf.newaxis, tf.newaxis, tf.newaxis]
        baseline_x = tf.expand_dims(baseline, axis=0)
        input_x = tf.expand_dims(image, axis=0)
        return baseline_x + alphas_x * (input_x - baseline_x)

    def compute_gradients(images, target_class_idx):
        with tf.GradientTape() as tape:
            tape.watch(images)
            probs = model(images)[:, target_class_idx]
        return tape.gradient(probs, images)

    @tf.function
    def one_batch(baseline, image, alpha_batch, target_class_idx):
        return compute_gradients(interpolate_images(baseline, image, alpha_batch),
                                 target_class_idx)

    def integral_approximation(gradients):
        grads = (gradients[:-1] + gradients[1:]) / tf.constant(2.0)
        return tf.math.reduce_mean(grads, axis=0)

    def integrated_gradients(baseline, image, target_class_idx, m_steps=M_STEPS, batch_size=32):
        alphas = tf.linspace(start=0.0, stop=1.0, num=m_steps + 1)
        gradient_batches = []
        for alpha in tf.range(0, len(alphas), batch_size):
            from_ = alpha
            to = tf.minimum(from_ + batch_size, len(alphas))
            gradient_batches.append(one_batch(baseline, image, alphas[from_:to],
                                              target_class_idx))
        total_gradients = tf.concat(gradient_batches, axis=0)
        return (image - baseline) * integral_approximation(total_gradients)

    def run(x, targets):
        baseline = tf.zeros(x.shape[1:])
        return np.stack([integrated_gradients(baseline, tf.constant(img), int(t)).numpy()
                         for img, t in zip(x, targets)])

    return run


def bench(name, model, x, repeats):
    targets = np.argmax(model.predict(x, verbose=0), axis=1)
    steps = M_STEPS + 1
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    batch = tf.constant((alphas[None, :, None, None, None] * x[:, None]).reshape(-1, *x.shape[1:]))
    batch_targets = tf.constant(np.repeat(targets, steps).astype(np.int32))
    floor, tutorial = compiled_input_gradient(model), tutorial_ig(model)
    ours = lambda: tbx.integrated_gradients(model, x, target=targets, steps=steps,  # noqa: E731
                                            method="riemann_trapezoid")
    runs = {"floor": lambda: floor(batch, batch_targets),
            "tbx": ours, "tutorial": lambda: tutorial(x, targets)}
    same = np.abs(ours().attributions - tutorial(x, targets)).max()
    times = interleaved(runs, repeats)
    best = {k: min(v) for k, v in times.items()}  # the least-disturbed run of each
    print(f"{name:34s} {best['tbx'] / best['floor']:10.2f} {best['tbx'] / best['tutorial']:12.2f}"
          f" {same:14.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"{'model (samples x 51 steps)':34s} {'tbx/floor':>10s} {'tbx/tutorial':>12s}"
          f" {'max |diff|':>14s}")
    (x, _), _ = load_data()
    keras.utils.set_random_seed(0)
    bench("demo CNN (8 digits)", build_model(), x[:8], args.repeats)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    images = np.random.default_rng(0).random((4, 96, 96, 3), dtype=np.float32)
    bench("MobileNetV2 96x96 (4 images)", model, images, args.repeats)


if __name__ == "__main__":
    main()
