"""Permutation feature importance (Breiman 2001), with scikit-learn's semantics.

Importance of a feature = the score on the data minus the score with that
feature's column permuted (higher is more important), once per repeat; for
`metric="loss"`, the loss increase. Every permuted copy, for every feature and
repeat, goes through one compiled forward function in chunks of rows; no
`predict` call per feature.
"""

import dataclasses

import keras
import numpy as np

from tb_explain import _validate, backend
from tb_explain.compute import predictions
from tb_explain.compute.attribution import _cores, _inputs, _outputs

#: Rows per forward pass when `batch_size` is None.
DEFAULT_ROWS = 8192


@dataclasses.dataclass
class PermutationImportance:
    """Result of `tbx.permutation_importance`, named as scikit-learn's.

    Attributes:
        importances: `[features, repeats]` score drop (loss increase for
            `metric="loss"`) per feature (or group) and repeat.
        importances_mean: `[features]` mean over repeats.
        importances_std: `[features]` standard deviation over repeats.
        names: Feature (or group) names, `<input>/<feature>` for several inputs.
        baseline_score: Score (or loss) on the unpermuted data.
    """

    importances: np.ndarray
    importances_mean: np.ndarray
    importances_std: np.ndarray
    names: list
    baseline_score: float

    def ranking(self):
        """Indices of the features, most important first."""
        return np.argsort(-self.importances_mean, kind="stable")


def tables(x, what="x"):
    """`(leaves, structure, names)` of tabular inputs: 2-D float arrays only.

    Raises:
        ValueError: for images, sequences, token ids or strings.
    """
    leaves, structure = _inputs.flatten_inputs(x)
    names = _inputs.input_names(structure)
    for name, leaf in zip(names, leaves):
        if leaf.ndim != 2 or leaf.dtype.kind != "f":
            kind = ("token ids or categorical codes" if leaf.dtype.kind in "iu" else
                    "strings" if leaf.dtype.kind in "US" else f"{leaf.ndim}-D inputs")
            raise ValueError(
                f"`{what}` input {name!r} has shape {leaf.shape} and dtype {leaf.dtype}: feature "
                f"importance and decision rules need 2-D float tables (samples x features), "
                f"not {kind}.")
    return leaves, structure, names


def column_names(leaves, input_names, given):
    """Names per feature column: `given` (a list, or a dict of lists per input),
    else `feature_<j>`; prefixed with the input name for several inputs."""
    out = []
    for name, leaf in zip(input_names, leaves):
        names = given.get(name) if isinstance(given, dict) else given
        count = leaf.shape[1]
        if names is not None and len(names) != count:
            raise ValueError(f"`feature_names` has {len(names)} names but input {name!r} has "
                             f"{count} features.")
        names = [str(n) for n in names] if names is not None else [
            f"feature_{j}" for j in range(count)]
        out.append(names if len(leaves) == 1 else [f"{name}/{n}" for n in names])
    return out


def _columns(leaves, names, groups):
    """`[(name, [(input index, column)...])]`: one entry per feature or group."""
    flat = [n for per_input in names for n in per_input]
    where = [(i, j) for i, leaf in enumerate(leaves) for j in range(leaf.shape[1])]
    if groups is None:
        return list(zip(flat, [[w] for w in where]))
    if not isinstance(groups, dict):
        raise TypeError(f"`groups` must be a dict {{name: [column, ...]}}, got {groups!r}.")
    grouped, out = set(), []
    for group, cols in groups.items():
        cols = list(cols)
        bad = [c for c in cols if not (isinstance(c, (int, np.integer)) and 0 <= c < len(where))
               and c not in flat]
        if bad or not cols:
            raise ValueError(f"`groups[{group!r}]` must list column indices in [0, {len(where)}) "
                             f"or feature names, got {cols!r}.")
        index = [c if isinstance(c, (int, np.integer)) else flat.index(c) for c in cols]
        grouped.update(index)
        out.append((str(group), [where[c] for c in index]))
    out += [(flat[c], [where[c]]) for c in range(len(where)) if c not in grouped]
    return out


class _Model:
    """The model's outputs as numpy, through the shared compiled forward."""

    def __init__(self, model, structure, output, batch_size):
        self.model, self.structure, self.output = model, structure, output
        self.forward = _cores.forward(model)
        self.batch_size = batch_size

    def __call__(self, leaves):
        rows = len(leaves[0])
        parts = []
        for start in range(0, rows, self.batch_size):
            chunk = [leaf[start:start + self.batch_size] for leaf in leaves]
            out = self.forward(_inputs.rebuilder(self.structure)(chunk))
            parts.append(backend.to_numpy(_outputs.select(out, self.key(out))))
        return np.concatenate(parts)

    def key(self, out):
        return _outputs.output_key(self.model, out, self.output)


def default_score(task, logits):
    """Accuracy for classifiers, R2 for regressors (scikit-learn's `score`)."""
    def score(y, scores):
        if task == "regression":
            from tb_explain.compute import metrics  # noqa: PLC0415 (light, numpy only)

            return metrics.regression(y, scores)[2]
        probs = predictions.probabilities(task, scores, logits)
        predicted, truth, _ = predictions.decisions(task, scores.shape[1], probs, y)
        correct = (predicted == truth).reshape(len(predicted), -1)
        return float(np.mean(correct.all(axis=1)))  # multilabel: subset accuracy
    return score


#: scikit-learn scoring names `metric=` accepts (higher is better, so the
#: errors and the log loss are negated, as scikit-learn's scorers are).
SCORING = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "neg_log_loss", "r2",
           "neg_mean_squared_error", "neg_mean_absolute_error")
_CLASSIFIER_SCORING = SCORING[:5]


def check_metric(metric):
    """Validates `metric`: None, `"loss"`, a scikit-learn scoring name or a callable."""
    if metric is None or metric == "loss" or callable(metric) or metric in SCORING:
        return metric
    raise ValueError(f"`metric` must be None, 'loss', a callable (y_true, y_pred) -> float or "
                     f"one of scikit-learn's scoring names {list(SCORING)}, got {metric!r}.")


def named_score(name, task, logits, units):
    """`score(y, scores)` of scikit-learn's scoring `name` (its meaning and
    sign: `sklearn.metrics.get_scorer(name)` on an estimator whose `predict`
    is the model's decision and `predict_proba` its probabilities)."""
    try:
        from sklearn import metrics as sk  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"`metric={name!r}` is scikit-learn's scorer: `pip install "
                          f"scikit-learn` (or the extra 'tb_explain[rules]').") from exc
    classifier = task != "regression"
    if classifier != (name in _CLASSIFIER_SCORING):
        kind = "classifier" if name in _CLASSIFIER_SCORING else "regressor"
        raise ValueError(f"`metric={name!r}` scores a {kind}, but the model's output is a "
                         f"{task} output.")
    if task == "multilabel":
        raise ValueError(f"`metric={name!r}` needs one class per sample; the output is "
                         f"multilabel (use the default metric or a callable).")
    classes = 2 if task == "binary" else units
    if name in ("f1", "roc_auc") and classes != 2:
        raise ValueError(f"`metric={name!r}` is scikit-learn's binary scorer; the model has "
                         f"{classes} classes (pass a callable for a multiclass average).")

    def score(y, scores):
        if not classifier:
            y = np.asarray(y, np.float64).reshape(len(y), -1)
            if name == "r2":
                return float(sk.r2_score(y, scores))
            error = sk.mean_squared_error if name == "neg_mean_squared_error" \
                else sk.mean_absolute_error
            return -float(error(y, scores))
        probs = predictions.probabilities(task, scores, logits)
        predicted, truth, _ = predictions.decisions(task, scores.shape[1], probs, y)
        if task == "binary":
            probs = np.stack([1.0 - probs[:, 0], probs[:, 0]], axis=1)
        if name == "accuracy":
            return float(sk.accuracy_score(truth, predicted))
        if name == "balanced_accuracy":
            return float(sk.balanced_accuracy_score(truth, predicted))
        if name == "f1":
            return float(sk.f1_score(truth, predicted))
        if name == "roc_auc":
            return float(sk.roc_auc_score(truth, probs[:, 1]))
        return -float(sk.log_loss(truth, probs, labels=np.arange(classes)))
    return score


def output_task(model, leaves, structure, y, output, with_units=False):
    """`(task, logits)` of the explained output (and its units, `with_units`),
    from one forward pass on a few rows."""
    out = _cores.forward(model)(_inputs.rebuilder(structure)(
        [leaf[:8] for leaf in leaves]))
    key = _outputs.output_key(model, out, output)
    units = int(_outputs.select(out, key).shape[1])
    task, logits = predictions.task_of(model, key, units, np.asarray(y))
    return (task, logits, units) if with_units else (task, logits)


def score_function(model, leaves, structure, y, output, metric):
    """`(score(y_pred) -> float, sign)` of `metric` on labels `y` (importance
    is `sign * (baseline - permuted)`), validated against the model's output."""
    if metric is None:
        score = default_score(*output_task(model, leaves, structure, y, output))
    elif metric == "loss":
        return (lambda pred: float(backend.to_numpy(model.compute_loss(
            y=keras.ops.convert_to_tensor(y), y_pred=keras.ops.convert_to_tensor(pred))))), -1.0
    elif callable(metric):
        score = metric
    else:
        score = named_score(metric, *output_task(model, leaves, structure, y, output,
                                                 with_units=True))
    return (lambda pred: float(score(y, pred))), 1.0


def permutation_importance(model, x, y, *, metric=None, repeats=5, seed=0, batch_size=None,
                           feature_names=None, groups=None, output=None):
    """Permutation importance of every feature of a tabular Keras model.

    scikit-learn's semantics (`sklearn.inspection.permutation_importance`):
    the importance of a feature is the score on `(x, y)` minus the score
    after permuting that feature's column, for each of `repeats`
    permutations. All `features x repeats` permuted copies go through one
    compiled forward function in chunks of `batch_size` rows.

    Args:
        model: A Keras model taking 2-D float tables (one, or a list / dict).
        x: The table(s), `[n, features]` float arrays.
        y: Labels (class ids, one-hot, 0/1, or targets), as the model is fit.
        metric: None (accuracy for classifiers, R2 for regressors, like
            scikit-learn estimators' `score`), `"loss"` (the compiled loss;
            importance = loss increase), one of scikit-learn's scoring names
            (`"accuracy"`, `"balanced_accuracy"`, `"f1"`, `"roc_auc"`,
            `"neg_log_loss"`, `"r2"`, `"neg_mean_squared_error"`,
            `"neg_mean_absolute_error"`: its meaning and sign, computed with
            `sklearn.metrics` on the model's decisions and probabilities;
            `f1` and `roc_auc` are binary), or a callable
            `(y_true, y_pred) -> float`, higher is better, where `y_pred` is
            the model's output.
        repeats: Permutations per feature (int >= 1).
        seed: Seed of the permutations (int).
        batch_size: Rows per forward pass (int >= 1); None: 8192.
        feature_names: Names (a list, or a dict of lists per input).
        groups: `{name: [columns]}` permuted together (one-hot blocks), by
            column index over all inputs or by feature name; other features
            stay on their own.
        output: For multi-output models, the output explained.

    Returns:
        A `PermutationImportance` (`.importances`, `.importances_mean`,
        `.importances_std`, `.names`, `.baseline_score`).

    Example:

    ```python
    result = tbx.permutation_importance(model, x_val, y_val, repeats=10,
                                        feature_names=names)
    for i in result.ranking()[:5]:
        print(result.names[i], result.importances_mean[i], result.importances_std[i])
    ```
    """
    repeats = _validate.check_int("repeats", repeats, minimum=1)
    seed = _validate.check_int("seed", seed)
    batch_size = DEFAULT_ROWS if batch_size is None else _validate.check_int(
        "batch_size", batch_size, minimum=1)
    check_metric(metric)
    leaves, structure, input_names = tables(x)
    n = len(leaves[0])
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(f"`y` has {len(y)} samples but `x` has {n}.")
    names = column_names(leaves, input_names, feature_names)
    columns = _columns(leaves, names, groups)
    score_of, sign = score_function(model, leaves, structure, y, output, metric)
    run = _Model(model, structure, output, batch_size)
    baseline = score_of(run(leaves))
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n) for _ in range(repeats)]
    copies = [(f, r) for f in range(len(columns)) for r in range(repeats)]
    per_chunk = max(1, batch_size // n)  # whole copies per forward pass
    importances = np.zeros((len(columns), repeats))
    for start in range(0, len(copies), per_chunk):
        group = copies[start:start + per_chunk]
        stacked = [np.concatenate([leaf] * len(group)) for leaf in leaves]
        for k, (f, r) in enumerate(group):
            for i, j in columns[f][1]:  # a group's columns share one permutation
                stacked[i][k * n:(k + 1) * n, j] = leaves[i][orders[r], j]
        scores = run(stacked)
        for k, (f, r) in enumerate(group):
            importances[f, r] = sign * (baseline - score_of(scores[k * n:(k + 1) * n]))
    return PermutationImportance(
        importances=importances, importances_mean=importances.mean(axis=1),
        importances_std=importances.std(axis=1), names=[name for name, _ in columns],
        baseline_score=float(baseline))
