"""Train a small CNN on scikit-learn's bundled 8x8 digits with tb_explain.

Usage:
    python demo_train.py [--logdir DIR] [--epochs N] [--freq N]

Logs keras's loss curves and everything tb_explain logs, then prints the
`tensorboard --logdir ...` command to browse them.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import tb_explain as tbx  # noqa: E402


def load_data(seed=0):
    """Returns `(x_train, y_train), (x_val, y_val)`: 8x8x1 images in [0, 1]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def build_model():
    """A small CNN for 8x8 digits."""
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1), name="digit"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dropout(0.2, name="dropout"),
            keras.layers.Dense(10, activation="softmax", name="classes"),
        ],
        name="digits_cnn",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default=os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")),
                        help="run directory (default: runs/<timestamp>)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs (default: 12)")
    parser.add_argument("--freq", type=int, default=3, help="log every N epochs (default: 3)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.freq < 1:
        parser.error(f"--freq must be >= 1, got {args.freq}")

    keras.utils.set_random_seed(0)
    (x, y), (x_val, y_val) = load_data()
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        keras.callbacks.TensorBoard(args.logdir),
        *tbx.explain(args.logdir, data=(x_val[:8], y_val[:8]), freq=args.freq, images=True),
    ]
    model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(x_val, y_val),
              callbacks=callbacks, verbose=2)
    root = os.path.dirname(os.path.abspath(args.logdir)) or "."
    print(f"\nLogged to {args.logdir}. Browse it with:\n\n    tensorboard --logdir {root}\n")


if __name__ == "__main__":
    main()
