"""Classification and regression metrics from whole-dataset scores (numpy).

Exact, and named like scikit-learn's: every function here is tested against
`sklearn.metrics` on the same predictions.
"""

import numpy as np


def confusion(y_true, y_pred, classes):
    """`[classes, classes]` counts: a row per true class, a column per predicted."""
    index = y_true.astype(np.int64) * classes + y_pred.astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def per_class(matrix):
    """One-vs-rest precision, recall and F1 per class from a confusion matrix
    (0 where undefined, scikit-learn's `zero_division=0`)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    return precision, recall, f1


def rankdata(values):
    """1-based ranks of `values`, ties sharing their mean rank (mid-ranks), as
    `scipy.stats.rankdata` gives them."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a, b):
    """Spearman rank correlation of two equally long vectors (0 if one is constant)."""
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    ra -= ra.mean()
    rb -= rb.mean()
    norm = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / norm) if norm > 0 else 0.0


def roc_auc(positive, scores):
    """Exact ROC AUC of `scores` for binary `positive` labels, or NaN when only
    one class is present: the Mann-Whitney statistic with mid-ranks for ties
    (what the trapezoid rule over every threshold gives)."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(confidence, correct, bins=15):
    """ECE: bins of equal width over [0, 1]; sum over bins of
    (count / N) * |accuracy - mean confidence|.

    Returns:
        `(ece, counts, accuracy, mean_confidence)`, the last three per bin
        (NaN for empty bins).
    """
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    index = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)  # 1.0 in the last bin
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    hits = np.bincount(index, weights=correct, minlength=bins)
    conf = np.bincount(index, weights=confidence, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = hits / counts
        mean_conf = conf / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_conf), 0.0)
    ece = float(np.sum(counts / max(len(confidence), 1) * gaps))
    return ece, counts, accuracy, mean_conf


def regression(y_true, y_pred):
    """MAE, RMSE and R2 as scikit-learn computes them for several targets:
    per target, then averaged (`multioutput="uniform_average"`)."""
    y_true = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1)
    error = y_pred - y_true
    mae = np.mean(np.abs(error), axis=0)
    rmse = np.sqrt(np.mean(error ** 2, axis=0))
    total = np.sum((y_true - y_true.mean(axis=0)) ** 2, axis=0)
    residual = np.sum(error ** 2, axis=0)
    # scikit-learn: R2 = 1 when both sums are 0, 0 when only the total is
    r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1),
                  np.where(residual > 0, 0.0, 1.0))
    return float(mae.mean()), float(rmse.mean()), float(r2.mean())
