"""Train a small model on data bundled with scikit-learn, with tb_explain.

Usage:
    python demo_train.py [--dataset digits|cancer] [--logdir DIR] [--epochs N] [--freq N]
                         [--flip FRACTION]

`digits` (default): a small CNN on the 8x8 digit images, with image
attributions by five methods side by side (integrated gradients, saliency,
SmoothGrad, Grad-CAM, occlusion) and their sanity check. `cancer`: an MLP on the breast-cancer table, with per-feature
attributions named by the dataset's feature names, permutation feature
importance and the decision rules a surrogate tree reads off the model. Both
log what the model
predicts on the train and validation sets (metrics, confusion, PR curves,
calibration, confident mistakes, diagnostics) and how it learns each
training example (TrainingDynamics: the Explain tab's Data view; `--flip 0.1`
mislabels 10% of the training labels, seeded, for it to find). Logs the loss curves
(the scalars keras.callbacks.TensorBoard writes, on every backend)
and everything tb_explain logs, then prints the `tensorboard --logdir ...`
command to browse them.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402

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


def load_cancer(seed=0):
    """Returns `(x_train, y_train), (x_val, y_val), feature_names`, standardized."""
    data = load_breast_cancer()
    x = data.data.astype("float32")
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    x = (x - mean) / std
    return (x[:split], y[:split]), (x[split:], y[split:]), list(data.feature_names)


def flip_labels(y, fraction, classes, seed=0):
    """`y` with a seeded `fraction` of its labels moved to another class."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), int(round(fraction * len(y))), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return noisy


def build_mlp(features):
    """A small MLP for tabular binary classification."""
    return keras.Sequential(
        [
            keras.layers.Input((features,), name="features"),
            keras.layers.Dense(32, activation="relu", name="hidden1"),
            keras.layers.Dense(16, activation="tanh", name="hidden2"),
            keras.layers.Dense(1, activation="sigmoid", name="malignant_vs_benign"),
        ],
        name="cancer_mlp",
    )


def build_model(shape=(8, 8, 1)):
    """A small CNN for 8x8 digits (or images of another `shape`)."""
    return keras.Sequential(
        [
            keras.layers.Input(shape, name="digit"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            # momentum 0.9, not Keras's 0.99: over a 12-epoch fit of 23 steps
            # each, 0.99 leaves the moving statistics epochs behind the
            # weights, and every inference-mode view (validation loss, the
            # data map) would show a worse model than training does
            # (Predictions measures it: outputs/batchnorm_lag).
            keras.layers.BatchNormalization(momentum=0.9, name="bn1"),
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
    parser.add_argument("--dataset", choices=["digits", "cancer"], default="digits",
                        help="digits (images, default) or cancer (a table)")
    parser.add_argument("--logdir", default=os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")),
                        help="run directory (default: runs/<timestamp>)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs (default: 12)")
    # Every epoch by default: the data map (training dynamics) is a mean and
    # a spread over the logged epochs, and over 12 epochs logged every third
    # one, the first (a model still warming up) makes every example look
    # "ambiguous"; logged every epoch, most read as easy, as they are.
    parser.add_argument("--freq", type=int, default=1, help="log every N epochs (default: 1)")
    parser.add_argument("--flip", type=float, default=0.0,
                        help="fraction of training labels to mislabel at random (default: 0)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.freq < 1:
        parser.error(f"--freq must be >= 1, got {args.freq}")
    if not 0.0 <= args.flip < 1.0:
        parser.error(f"--flip must be in [0, 1), got {args.flip}")

    keras.utils.set_random_seed(0)
    if args.dataset == "digits":
        (x, y), (x_val, y_val) = load_data()
        model = build_model()
        loss, options = "sparse_categorical_crossentropy", {
            "class_names": [str(d) for d in range(10)], "sanity_check": True,
            "methods": ["saliency", "smoothgrad", "gradcam", "occlusion"]}
    else:
        (x, y), (x_val, y_val), names = load_cancer()
        model = build_mlp(x.shape[1])
        loss, options = "binary_crossentropy", {"feature_names": names,
                                                "class_names": ["malignant", "benign"]}
    if args.flip:
        y = flip_labels(y, args.flip, classes=10 if args.dataset == "digits" else 2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, metrics=["accuracy"])
    probe = (x_val[:128], y_val[:128]) if args.dataset == "digits" else (x_val, y_val)
    callbacks = [
        # The probe callbacks keep its first rows (4 images, 32 for gradients);
        # ActivationImages' Gram matrices use up to 512 rows (what
        # `tb-explain compare` needs for the CKA between two runs' layers), and
        # for tables FeatureImportance and DecisionRules read all of it.
        *tbx.explain(args.logdir, data=probe, freq=args.freq, images=True,
                     steps=32, datasets={"train": (x, y), "validation": (x_val, y_val)},
                     **options),
    ]
    if args.dataset == "digits":  # what each conv2 filter and each class responds to most
        callbacks.append(tbx.FeatureVisualization(args.logdir, layers=["conv2", "classes"],
                                                  units=10, freq=args.freq, steps=128))
    model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(x_val, y_val),
              callbacks=callbacks, verbose=2)
    root = os.path.dirname(os.path.abspath(args.logdir)) or "."
    print(f"\nLogged to {args.logdir}. Browse it with:\n\n    tensorboard --logdir {root}\n\n"
          "The EXPLAIN tab tells the run's story (its Data view: the training examples the\n"
          "model finds hardest or mislabeled); PROJECTOR shows how the hidden layer "
          "arranges\nthe train and validation points at each logged epoch. Train again with "
          "another --logdir\n(and, say, --flip 0.1) and compare the two runs: the Explain tab's "
          "Compare view, or\n\n    tb-explain compare RUN_A RUN_B\n")


if __name__ == "__main__":
    main()
