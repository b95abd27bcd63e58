"""Finding flipped labels: TrainingDynamics against cleanlab, side by side.

Usage:
    python bench/dynamics.py [--noise 0.1 0.2] [--seeds 0 1 2] [--epochs 12] [--repeats 3]

scikit-learn's digits (the demo's 80% training split, 1,437 images), with a
seeded `noise` fraction of the training labels flipped to another class at
random; the demo's CNN, trained `epochs` epochs (batch 64, Adam 1e-3) on the
noisy labels. Three rankings of the training examples, most likely flipped
first:

- `TrainingDynamics`: `ranking()` (`mislabel_score`), from one ordinary fit;
- AUM alone (the same fit's `aum`, lowest first);
- cleanlab: `cleanlab.rank.get_label_quality_scores` (lowest first) on
  out-of-sample probabilities from 5-fold cross-validation of the same model
  and epochs (five more fits), and `cleanlab.filter.find_label_issues`' own
  flagged set (its precision and recall).

Each is scored by precision at k (k = number flipped) and AUROC against the
flips (targets: TrainingDynamics >= cleanlab in each setting), as a mean over
`seeds` (the flips and the model's initialization). Last, the fit with the
callback against the plain fit, interleaved `repeats` times: the ratio of
the medians (target <= 1.35). Needs `pip install "tb_explain[bench]"`
(cleanlab, scikit-learn).
"""

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from demo_train import build_model, flip_labels, load_data  # noqa: E402


def fit(x, y, epochs, seed, callbacks=()):
    keras.utils.set_random_seed(seed)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=list(callbacks))
    return model


def precision_at_k(order, truth):
    k = int(truth.sum())
    return float(truth[order[:k]].mean())


def auroc(score, truth):
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    return float(roc_auc_score(truth, score))


def cross_validated(x, y, epochs, seed, folds=5):
    """Out-of-sample probabilities from `folds`-fold cross-validation."""
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415

    probs = np.zeros((len(y), 10))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = fit(x[train], y[train], epochs, seed)
        probs[held] = model.predict(x[held], batch_size=256, verbose=0)
    return probs


def one_setting(x, y_clean, noise, seed, epochs):
    from cleanlab.filter import find_label_issues  # noqa: PLC0415
    from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

    y = flip_labels(y_clean, noise, 10, seed)
    truth = y != y_clean
    callback = tbx.TrainingDynamics(tempfile.mkdtemp(prefix="tbx_bench_"), (x, y))
    fit(x, y, epochs, seed, [callback])
    scores = callback.scores()
    out = {"ours": (precision_at_k(scores.ranking(), truth), auroc(scores.mislabel_score, truth))}
    aum_order = np.argsort(scores.aum, kind="stable")
    out["AUM alone"] = (precision_at_k(aum_order, truth), auroc(-scores.aum, truth))
    probs = cross_validated(x, y, epochs, seed)
    quality = get_label_quality_scores(y, probs)
    out["cleanlab"] = (precision_at_k(np.argsort(quality, kind="stable"), truth),
                       auroc(-quality, truth))
    issues = find_label_issues(y, probs)
    out["cleanlab find_label_issues"] = (float(truth[issues].mean()) if issues.any() else 0.0,
                                         float(truth[issues].sum() / truth.sum()))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    (x, y), _ = load_data()
    print(f"digits, {len(x)} training images, demo CNN, {args.epochs} epochs; means over seeds "
          f"{args.seeds}")
    met = True
    for noise in args.noise:
        results = [one_setting(x, y, noise, seed, args.epochs) for seed in args.seeds]
        print(f"\n{noise:.0%} of the labels flipped ({int(round(noise * len(y)))} examples)")
        print(f"  {'ranking':<28} {'precision@k':>12} {'AUROC':>8}")
        for name in results[0]:
            p = statistics.mean(r[name][0] for r in results)
            a = statistics.mean(r[name][1] for r in results)
            if name == "cleanlab find_label_issues":
                print(f"  {name:<28} precision {p:.3f}, recall {a:.3f} of its flagged set")
            else:
                print(f"  {name:<28} {p:12.3f} {a:8.3f}")
        for i in (0, 1):
            ours = statistics.mean(r["ours"][i] for r in results)
            theirs = statistics.mean(r["cleanlab"][i] for r in results)
            met &= ours >= theirs
    noisy = flip_labels(y, args.noise[0], 10, args.seeds[0])
    times = interleaved({
        "plain": lambda: fit(x, noisy, args.epochs, 0),
        "with TrainingDynamics": lambda: fit(x, noisy, args.epochs, 0, [tbx.TrainingDynamics(
            tempfile.mkdtemp(prefix="tbx_bench_"), (x, noisy))]),
    }, args.repeats)
    plain, ours = (statistics.median(times[k]) for k in ("plain", "with TrainingDynamics"))
    print(f"\nfit time, median of {args.repeats} interleaved: plain {plain:.2f} s, with "
          f"TrainingDynamics {ours:.2f} s: {ours / plain:.3f}x  (target <= 1.35; cleanlab's "
          f"route adds 5 fits)")
    print(f"precision@k and AUROC >= cleanlab in every setting: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
