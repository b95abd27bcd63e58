"""tbx.permutation_importance against scikit-learn's on the same wrapped model.

Usage:
    python bench/importance.py [--repeats N] [--runs N]

The demo's breast-cancer MLP (30 features, 455 training rows), trained a few
epochs; both compute permutation importance on the validation rows with the
same number of repeats and the same metric (accuracy): scikit-learn calls the
wrapped model's `predict` once per feature and repeat, tb_explain sends every
permuted copy through one compiled forward function in chunks. Prints the
median times of interleaved runs and their ratio (target: >= 10x faster),
and the largest difference of the mean importances (two estimates of the
same quantity, so within noise).
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_mlp, load_cancer  # noqa: E402


class Wrapped(ClassifierMixin, BaseEstimator):
    """The Keras model as a scikit-learn classifier (`predict` thresholds at 0.5)."""

    def __init__(self, model=None):
        self.model = model

    def fit(self, x, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x):
        return (self.model.predict(x, verbose=0, batch_size=len(x))[:, 0] >= 0.5).astype(int)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    (x, y), (x_val, y_val), names = load_cancer()
    keras.utils.set_random_seed(0)
    model = build_mlp(x.shape[1])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=5, verbose=0)
    wrapped = Wrapped(model).fit(x_val, y_val)
    ours = lambda: tbx.permutation_importance(model, x_val, y_val, repeats=args.repeats)  # noqa
    theirs = lambda: permutation_importance(wrapped, x_val, y_val,  # noqa: E731
                                            n_repeats=args.repeats, random_state=0)
    a, b = ours(), theirs()  # warm up both (tracing, predict's function)
    times = interleaved({"tb_explain": ours, "scikit-learn": theirs}, args.runs)
    t_ours, t_theirs = (statistics.median(times[k]) for k in ("tb_explain", "scikit-learn"))
    print(f"{x.shape[1]} features x {args.repeats} repeats on {len(x_val)} rows, median of "
          f"{args.runs} interleaved runs")
    print(f"scikit-learn: {t_theirs:.3f} s; tb_explain: {t_ours:.3f} s; speed-up "
          f"{t_theirs / t_ours:.1f}x  (target >= 10x)")
    print(f"largest |difference| of mean importances: "
          f"{np.max(np.abs(a.importances_mean - b.importances_mean)):.4f} "
          f"(largest std over repeats: {max(a.importances_std.max(), b.importances_std.max()):.4f})")


if __name__ == "__main__":
    main()
