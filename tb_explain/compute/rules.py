"""Decision rules: a surrogate CART tree fitted to the model's own predictions.

The tree (scikit-learn's CART, the `tb_explain[rules]` extra) explains the
model, not the data: it is fitted to what the model predicts on `x`, and its
fidelity (agreement with the model on a held-out part of `x`) says how far
its rules can be trusted.
"""

import dataclasses

import numpy as np

from tb_explain import _validate
from tb_explain.compute import importance

#: Fraction of `x` held out to measure fidelity.
HOLDOUT = 0.25


def _sklearn_tree():
    try:
        from sklearn import tree  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            "Decision rules need scikit-learn's CART: install the extra with "
            "`pip install 'tb_explain[rules]'` (or `pip install scikit-learn`).") from exc
    return tree


@dataclasses.dataclass
class Condition:
    """`feature operator threshold`, in the units of `x` (operator `<=` or `>`)."""

    feature: str
    operator: str
    threshold: float

    def __str__(self):
        return f"{self.feature} {self.operator} {self.threshold:.4g}"


@dataclasses.dataclass
class Rule:
    """One leaf of the surrogate tree: IF all conditions THEN prediction.

    Attributes:
        conditions: List of `Condition`s, from the root down.
        prediction: The class name (classifiers) or the mean predicted value.
        support: Fraction of the samples of `x` the rule covers.
        confidence: Fraction of those on which the model predicts
            `prediction` (classifiers), or R2 of the leaf's mean against the
            model's predictions there (regressors: 1 - variance explained).
    """

    conditions: list
    prediction: object
    support: float
    confidence: float

    def __str__(self):
        body = " AND ".join(str(c) for c in self.conditions) or "always"
        what = "confidence" if isinstance(self.prediction, str) else "spread (std)"
        return (f"IF {body} THEN {self.prediction} (support {self.support:.1%}, "
                f"{what} {self.confidence:.3g})")


@dataclasses.dataclass
class DecisionRules:
    """Result of `tbx.extract_rules`.

    Attributes:
        rules: `Rule`s, one per leaf, by support (largest first).
        fidelity: Held-out agreement with the model (accuracy for
            classifiers, R2 for regressors): of a tree with the same settings
            fitted to the other rows, scored on the `holdout` rows; the
            estimate of how far the rules, fitted to all of `x`, follow the
            model on rows they have not seen.
        text: Markdown, one readable rule per line.
        holdout: Indices of `x` held out for `fidelity`.
        tree: The scikit-learn tree the rules are read from, fitted to the
            model's labels of all of `x`.
        task: The model output's task (`multiclass`, `binary`, `regression`...).
    """

    rules: list
    fidelity: float
    text: str
    holdout: np.ndarray
    tree: object
    task: str

    def predict(self, x):
        """The rules' predictions for `x`, as the model's labels are: class
        indices (ints) for a classifier, values for a regressor, as
        scikit-learn's trees return what they were fitted on. Class names
        appear only in `text` and the rules."""
        leaves, _, _ = importance.tables(x)
        return self.tree.predict(np.concatenate(leaves, axis=1))


def _model_labels(model, leaves, structure, output, class_names):
    """The model's own predictions on `x`: class indices (and names), or values."""
    task, logits = importance.output_task(model, leaves, structure,
                                          np.zeros(len(leaves[0])), output)
    run = importance._Model(model, structure, output, importance.DEFAULT_ROWS)
    scores = run(leaves)
    if task == "regression":
        return task, scores.mean(axis=1) if scores.shape[1] > 1 else scores[:, 0], None
    from tb_explain.compute import predictions  # noqa: PLC0415

    probs = predictions.probabilities(task, scores, logits)
    if task in ("binary", "multilabel") and scores.shape[1] == 1:
        task, labels, classes = "binary", (probs[:, 0] >= 0.5).astype(np.int64), 2
    elif task == "multilabel":
        raise ValueError("Decision rules explain one class per sample; for a multilabel output, "
                         "explain one label at a time (a single-unit model or `output=`).")
    else:
        labels, classes = np.argmax(probs, axis=1), scores.shape[1]
    names = [str(c) for c in class_names] if class_names is not None else [
        str(i) for i in range(classes)]
    if len(names) != classes:
        raise ValueError(f"`class_names` has {len(names)} names but the model has {classes} "
                         f"classes.")
    return task, labels, names


def extract_rules(model, x, *, feature_names=None, class_names=None, max_depth=3,
                  min_samples_leaf=1, output=None, seed=0):
    """Readable decision rules that mimic a tabular model.

    Fits scikit-learn's CART (`DecisionTreeClassifier`, or
    `DecisionTreeRegressor` for regression models) to the model's own
    predictions on `x` and reads one rule per leaf; its fidelity is
    measured the way a held-out score is: a tree with the same settings,
    fitted to three quarters of `x`, scored on the quarter held out. It
    explains the model, not the data: a rule says what the model does,
    right or wrong. With the defaults, the tree is the one
    `DecisionTreeClassifier(max_depth=3)` fits to the model's labels.

    Args:
        model: A Keras model taking 2-D float tables.
        x: The table(s) to explain the model on (a few hundred rows or more).
        feature_names: Names (a list, or a dict of lists per input).
        class_names: Class names of a classifier.
        max_depth: Tree depth, so at most `2**max_depth` rules (int >= 1).
        min_samples_leaf: Smallest leaf, a fraction of the samples (float in
            (0, 0.5]) or a count (int >= 1; scikit-learn's default, 1).
        output: For multi-output models, the output explained.
        seed: Seed of the held-out split and the tree (int).

    Returns:
        A `DecisionRules` with `.rules`, `.fidelity`, `.text` and `.predict`.

    Raises:
        ImportError: without scikit-learn (`pip install 'tb_explain[rules]'`).

    Example:

    ```python
    rules = tbx.extract_rules(model, x_val, feature_names=names,
                              class_names=["malignant", "benign"])
    print(rules.text)          # IF worst radius > 0.31 AND ... THEN malignant (...)
    print(rules.fidelity)      # agreement with the model on held-out rows
    ```
    """
    tree_module = _sklearn_tree()
    max_depth = _validate.check_int("max_depth", max_depth, minimum=1)
    if isinstance(min_samples_leaf, float):
        _validate.check_float("min_samples_leaf", min_samples_leaf, 0.0, 0.5)
        if min_samples_leaf == 0.0:
            raise ValueError("`min_samples_leaf` must be in (0, 0.5] or an int >= 1, got 0.0.")
    else:
        _validate.check_int("min_samples_leaf", min_samples_leaf, minimum=1)
    seed = _validate.check_int("seed", seed)
    leaves, structure, input_names = importance.tables(x)
    names = [n for per in importance.column_names(leaves, input_names, feature_names) for n in per]
    table = np.concatenate(leaves, axis=1)
    n = len(table)
    if n < 8:
        raise ValueError(f"`x` has {n} samples: decision rules need at least 8 (a few hundred "
                         f"make reliable ones).")
    task, labels, classes = _model_labels(model, leaves, structure, output, class_names)
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * HOLDOUT)))
    holdout, fit_rows = np.sort(order[:cut]), np.sort(order[cut:])
    kind = tree_module.DecisionTreeRegressor if task == "regression" else \
        tree_module.DecisionTreeClassifier

    def fitted(rows):
        return kind(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                    random_state=seed).fit(table[rows], labels[rows])

    agreement = fitted(fit_rows).predict(table[holdout])
    tree = fitted(np.arange(n))
    if task == "regression":
        from tb_explain.compute import metrics  # noqa: PLC0415

        fidelity = metrics.regression(labels[holdout], agreement)[2]
    else:
        fidelity = float(np.mean(agreement == labels[holdout]))
    rules = _read_rules(tree, table, labels, names, classes, task)
    text = "\n".join(f"{i + 1}. {rule}" for i, rule in enumerate(rules))
    return DecisionRules(rules=rules, fidelity=float(fidelity), text=text, holdout=holdout,
                         tree=tree, task=task)


def _read_rules(tree, table, labels, names, classes, task):
    """One `Rule` per leaf, with support and confidence over all of `x`."""
    t = tree.tree_
    leaf_of = tree.apply(table)
    rules = []

    def walk(node, conditions):
        if t.children_left[node] == -1:  # a leaf
            inside = leaf_of == node
            support = float(inside.mean())
            if task == "regression":
                prediction = float(t.value[node].ravel()[0])
                spread = float(np.std(labels[inside])) if inside.any() else 0.0
                rules.append(Rule(list(conditions), prediction, support, spread))
            else:
                k = int(np.argmax(t.value[node].ravel()))
                cls = int(tree.classes_[k])
                confidence = float(np.mean(labels[inside] == cls)) if inside.any() else 0.0
                rules.append(Rule(list(conditions), classes[cls], support, confidence))
            return
        feature, threshold = names[t.feature[node]], float(t.threshold[node])
        walk(t.children_left[node], conditions + [Condition(feature, "<=", threshold)])
        walk(t.children_right[node], conditions + [Condition(feature, ">", threshold)])

    walk(0, [])
    return sorted(rules, key=lambda r: -r.support)
