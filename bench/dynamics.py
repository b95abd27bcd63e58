"""Finding flipped labels: TrainingDynamics against cleanlab, side by side.

Usage:
    python bench/dynamics.py [--data digits table] [--kinds symmetric asymmetric pair]
                             [--noise 0.1 0.2] [--seeds 0 1 2] [--repeats 3]

Two datasets, each with its own model:

- `digits`: scikit-learn's digits (the demo's 80% training split, 1,437
  images), the demo's CNN, 12 epochs;
- `table`: a 5-class table (scikit-learn's `make_classification`, 2,000
  rows, 20 features, 6 informative, class_sep 0.8: a clean model reaches
  about 80%), an MLP (64-32), 30 epochs;

both batch 64, Adam 1e-3. Three kinds of label noise, a seeded `noise`
fraction of the training labels each:

- `symmetric`: to another class at random;
- `asymmetric`: every class's flips go to one other class, the class it is
  most confused with (as annotators confuse similar classes);
- `pair`: classes paired by confusion (greedily, most confused first), the
  flips of each go to its partner (two classes swap).

"Confused with" comes from the clean labels: cross-validated logistic
regression's confusion matrix (independent of the models compared).
Rankings of the training examples, most likely flipped first:

- `TrainingDynamics`: `ranking()` (`mislabel_score`), from one ordinary fit;
- AUM alone (the same fit's `aum`, lowest first);
- cleanlab: `cleanlab.rank.get_label_quality_scores` (lowest first) on
  out-of-sample probabilities from 5-fold cross-validation of the same model
  and epochs (five more fits), and `cleanlab.filter.find_label_issues`' own
  flagged set (its F1 against the flips), against `label_issues()`'s.

Each ranking is scored by precision at k (k = number flipped) and AUROC
against the flips, the flagged sets by F1 (targets: TrainingDynamics >=
cleanlab in each setting, all three figures), as
a mean over `seeds` (the flips and the model's initialization). Last, the fit
with the callback against the plain fit (digits), interleaved `repeats`
times: the ratio of the medians (target <= 1.35). Needs
`pip install "tb_explain[bench]"` (cleanlab, scikit-learn).
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

KINDS = ("symmetric", "asymmetric", "pair")


def load_table():
    """The 5-class table: `(x, y)` standardized."""
    from sklearn.datasets import make_classification  # noqa: PLC0415

    x, y = make_classification(n_samples=2000, n_features=20, n_informative=6, n_redundant=4,
                               n_classes=5, n_clusters_per_class=1, class_sep=0.8,
                               random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    return x, y.astype("int64")


def build_table_model():
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(5, activation="softmax")])


DATA = {  # name: (loader, model, epochs)
    "digits": (lambda: load_data()[0], build_model, 12),
    "table": (load_table, build_table_model, 30),
}


def confusion_targets(x, y, classes):
    """`(most_confused, partner)`: per class, the other class cross-validated
    logistic regression confuses it with most, and a pairing of the classes
    by confusion (greedy; an odd class out is paired with its most confused)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.model_selection import cross_val_predict  # noqa: PLC0415

    flat = x.reshape(len(x), -1)
    predicted = cross_val_predict(LogisticRegression(max_iter=2000), flat, y, cv=5)
    counts = np.zeros((classes, classes))
    np.add.at(counts, (y, predicted), 1)
    np.fill_diagonal(counts, -1)
    most = counts.argmax(axis=1)
    both = counts + counts.T
    partner = np.full(classes, -1)
    for flat_index in np.argsort(-both, axis=None):
        i, j = divmod(int(flat_index), classes)
        if i != j and partner[i] < 0 and partner[j] < 0:
            partner[i], partner[j] = j, i
    partner[partner < 0] = most[partner < 0]
    return most, partner


def add_noise(y, fraction, kind, classes, seed, targets):
    """`y` with a seeded `fraction` of its labels flipped (see the module docstring)."""
    if kind == "symmetric":
        return flip_labels(y, fraction, classes, seed)
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), int(round(fraction * len(y))), replace=False)
    noisy = y.copy()
    most, partner = targets
    noisy[flipped] = (most if kind == "asymmetric" else partner)[y[flipped]]
    return noisy


def fit(data, x, y, seed, callbacks=()):
    keras.utils.set_random_seed(seed)
    _, build, epochs = DATA[data]
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=list(callbacks))
    return model


def precision_at_k(order, truth):
    k = int(truth.sum())
    return float(truth[order[:k]].mean())


def auroc(score, truth):
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    return float(roc_auc_score(truth, score))


def set_f1(flagged, truth):
    hits = float((flagged & truth).sum())
    precision, recall = hits / max(flagged.sum(), 1), hits / truth.sum()
    return 2 * precision * recall / (precision + recall) if hits else 0.0


def cross_validated(data, x, y, classes, seed, folds=5):
    """Out-of-sample probabilities from `folds`-fold cross-validation."""
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415

    probs = np.zeros((len(y), classes))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = fit(data, x[train], y[train], seed)
        probs[held] = model.predict(x[held], batch_size=256, verbose=0)
    return probs


def one_setting(data, x, y_clean, kind, noise, seed, targets, save=None):
    from cleanlab.filter import find_label_issues  # noqa: PLC0415
    from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

    classes = int(y_clean.max()) + 1
    y = add_noise(y_clean, noise, kind, classes, seed, targets)
    truth = y != y_clean
    callback = tbx.TrainingDynamics(tempfile.mkdtemp(prefix="tbx_bench_"), (x, y))
    fit(data, x, y, seed, [callback])
    scores = callback.scores()
    out = {"ours": (precision_at_k(scores.ranking(), truth), auroc(scores.mislabel_score, truth))}
    aum_order = np.argsort(scores.aum, kind="stable")
    out["AUM alone"] = (precision_at_k(aum_order, truth), auroc(-scores.aum, truth))
    probs = cross_validated(data, x, y, classes, seed)
    quality = get_label_quality_scores(y, probs)
    out["cleanlab"] = (precision_at_k(np.argsort(quality, kind="stable"), truth),
                       auroc(-quality, truth))
    flagged = np.zeros(len(y), bool)
    flagged[find_label_issues(y, probs, return_indices_ranked_by="self_confidence")] = True
    out["cleanlab set F1"] = (set_f1(flagged, truth), float(flagged.sum()))
    ours = np.zeros(len(y), bool)
    ours[scores.label_issues()] = True
    out["ours set F1"] = (set_f1(ours, truth), float(ours.sum()))
    if save:  # what the scores are computed from, to study rules without refitting
        os.makedirs(save, exist_ok=True)
        np.savez_compressed(os.path.join(save, f"{data}_{kind}_{noise}_{seed}.npz"),
                            records=scores.records, labels=y, clean=y_clean, probs=probs,
                            cleanlab_flagged=flagged, cleanlab_quality=quality)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save", help="a directory: each setting's records, labels and "
                                       "cleanlab's probabilities and set, as .npz")
    args = parser.parse_args()
    print(f"means over seeds {args.seeds}; precision@k / AUROC (set: F1 / flagged count)")
    met = True
    for data in args.data:
        x, y = DATA[data][0]()
        targets = confusion_targets(x, y, int(y.max()) + 1)
        print(f"\n{data}: {len(x)} training examples, {DATA[data][2]} epochs; most confused "
              f"with: {targets[0].tolist()}, pairs: {targets[1].tolist()}")
        for kind in args.kinds:
            for noise in args.noise:
                results = [one_setting(data, x, y, kind, noise, seed, targets, args.save)
                           for seed in args.seeds]
                cells = []
                for name in results[0]:
                    a = statistics.mean(r[name][0] for r in results)
                    b = statistics.mean(r[name][1] for r in results)
                    cells.append(f"{name} {a:.3f}/{b:.3f}" if "set F1" not in name
                                 else f"{name} {a:.3f} ({b:.0f} flagged)")

                def mean(name, i):
                    return statistics.mean(r[name][i] for r in results)
                ok = all(mean("ours", i) >= mean("cleanlab", i) for i in (0, 1)) and (
                    mean("ours set F1", 0) >= mean("cleanlab set F1", 0))
                met &= ok
                print(f"  {kind:<10} {noise:4.0%}: " + "; ".join(cells)
                      + ("" if ok else "  <- below cleanlab"))
    if "digits" in args.data:
        x, y = DATA["digits"][0]()
        noisy = flip_labels(y, args.noise[0], 10, args.seeds[0])
        times = interleaved({
            "plain": lambda: fit("digits", x, noisy, 0),
            "with TrainingDynamics": lambda: fit("digits", x, noisy, 0, [tbx.TrainingDynamics(
                tempfile.mkdtemp(prefix="tbx_bench_"), (x, noisy))]),
        }, args.repeats)
        plain, ours = (statistics.median(times[k]) for k in ("plain", "with TrainingDynamics"))
        print(f"\nfit time (digits), median of {args.repeats} interleaved: plain {plain:.2f} s, "
              f"with TrainingDynamics {ours:.2f} s: {ours / plain:.3f}x  (target <= 1.35; "
              f"cleanlab's route adds 5 fits)")
    print(f"precision@k and AUROC >= cleanlab in every setting: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
