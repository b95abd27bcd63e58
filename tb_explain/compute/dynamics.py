"""Training dynamics: how a model learns each example, epoch after epoch.

Backend-neutral numpy on per-epoch model outputs. One logged epoch gives,
per tracked example, `epoch_record()`: the probability of the given label,
the margin (the given label's logit minus the largest other logit), the
predicted class and the TracIn self-influence term of the last Dense layer.
`Dynamics` holds the records of every logged epoch and derives the scores:

- `confidence`, `variability`, `correctness`: mean, population standard
  deviation of the given label's probability, and the fraction of epochs it
  was the argmax (dataset cartography, Swayamdipta et al. 2020);
- `aum`: the mean margin (area under the margin, Pleiss et al. 2020);
- `forgetting`: correct -> incorrect transitions between consecutive logged
  epochs (Toneva et al. 2019);
- `self_influence`: TracIn (Pruthi et al. 2020) restricted to the last Dense
  layer: sum over epochs of `lr * ||softmax(z) - onehot(y)||^2 * (||a||^2 + 1)`
  with `a` that layer's input;
- `mislabel_score`: how far below the examples of its given class an
  example's AUM and confidence lie (see `mislabel_score`).
"""

import dataclasses

import numpy as np

#: Regions of the data map (Swayamdipta et al. 2020), in a fixed order:
#: "ambiguous" has variability >= AMBIGUOUS_VARIABILITY; of the rest, "easy"
#: has confidence >= EASY_CONFIDENCE, "hard" the others (hard to learn).
REGIONS = ("easy", "ambiguous", "hard")
AMBIGUOUS_VARIABILITY = 0.2
EASY_CONFIDENCE = 0.5

#: Rows of one logged epoch's record, in the order they are written.
RECORD_ROWS = ("probability", "margin", "predicted", "influence")

#: Scores of `Dynamics`, in the order of the tab's table.
SCORES = ("confidence", "variability", "correctness", "aum", "forgetting", "self_influence",
          "mislabel_score")

#: The mislabel score: weights of the within-class standardized AUM and
#: confidence (see `mislabel_score`).
MISLABEL_WEIGHTS = {"aum": 1.0, "confidence": 0.25}

_TINY = np.finfo(np.float64).tiny


def class_logits(task, scores, logits):
    """`(n, C)` float64 logits of a classifier's outputs, up to a per-row constant.

    Args:
        task: `"multiclass"` or `"binary"`.
        scores: `(n, C)` outputs (binary: `(n, 1)` or `(n,)`).
        logits: Whether `scores` are logits (else probabilities: their logs
            are logits up to a per-row constant, which no score depends on).

    Returns:
        `(n, C)` float64; a binary output is two classes, logits `[0, z]`
        (probabilities: `[log(1 - p), log p]`).
    """
    scores = np.asarray(scores, np.float64).reshape(len(scores), -1)
    if task == "binary":
        column = scores[:, :1]
        if logits:
            return np.concatenate([np.zeros_like(column), column], axis=1)
        p = np.clip(column, 0.0, 1.0)
        return np.log(np.maximum(np.concatenate([1.0 - p, p], axis=1), _TINY))
    return scores if logits else np.log(np.maximum(scores, _TINY))


def softmax(z):
    """Row-wise softmax of float64 logits."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def epoch_record(z, labels, features=None, learning_rate=None):
    """One logged epoch's values per example.

    Args:
        z: `(n, C)` logits (`class_logits`).
        labels: `(n,)` integer class ids.
        features: Optional `(n, F)` inputs of the last Dense layer.
        learning_rate: The optimizer's learning rate at this epoch (with
            `features`).

    Returns:
        float32 `(4, n)`: the rows of `RECORD_ROWS` (the self-influence
        term is NaN without `features`).
    """
    z = np.asarray(z, np.float64)
    labels = np.asarray(labels, np.int64)
    rows = np.arange(len(z))
    p = softmax(z)
    others = z.copy()
    others[rows, labels] = -np.inf
    margin = z[rows, labels] - others.max(axis=1)
    predicted = np.argmax(z, axis=1)
    if features is None or learning_rate is None:
        influence = np.full(len(z), np.nan)
    else:
        residual = p.copy()
        residual[rows, labels] -= 1.0
        a = np.asarray(features, np.float64).reshape(len(z), -1)
        influence = (float(learning_rate) * (residual ** 2).sum(axis=1)
                     * ((a ** 2).sum(axis=1) + 1.0))
    return np.stack([p[rows, labels], margin, predicted, influence]).astype(np.float32)


def within_class(values, labels):
    """`values` standardized within each given class: (v - class mean) /
    class std (0 for a class of one value)."""
    values = np.asarray(values, np.float64)
    out = np.zeros_like(values)
    for c in np.unique(labels):
        mask = labels == c
        v = values[mask]
        spread = v.std()
        out[mask] = (v - v.mean()) / spread if spread > 0 else 0.0
    return out


def mislabel_score(aum, confidence, labels):
    """Higher = more likely mislabeled: how far below its given class's
    examples an example's AUM and confidence lie.

    `-(MISLABEL_WEIGHTS["aum"] * within_class(aum) + MISLABEL_WEIGHTS["confidence"]
    * within_class(confidence))`, in standard deviations of the class (0: a
    typical example of its class). A mislabeled example's margin stays
    negative while the model follows the other examples of its class, and
    turns only when it is memorized, so AUM carries the score. Comparing it
    with the examples of the same given class (as confident learning's
    per-class thresholds do) keeps the examples of a class that is slow to
    learn from flooding the top of the ranking; confidence separates
    examples AUM ties. On the digits benchmark (`bench/dynamics.py`) this
    ranks flipped labels better than AUM alone, confidence or
    self-influence.
    """
    labels = np.asarray(labels)
    return -(MISLABEL_WEIGHTS["aum"] * within_class(aum, labels)
             + MISLABEL_WEIGHTS["confidence"] * within_class(confidence, labels))


def regions(confidence, variability):
    """Region index per example (into `REGIONS`)."""
    confidence, variability = np.asarray(confidence), np.asarray(variability)
    return np.where(variability >= AMBIGUOUS_VARIABILITY, 1,
                    np.where(confidence >= EASY_CONFIDENCE, 0, 2))


@dataclasses.dataclass
class Dynamics:
    """Per-example training dynamics over the logged epochs.

    Attributes:
        epochs: `(E,)` the logged epochs, increasing.
        records: `(E, 4, n)` float32, one `epoch_record` per logged epoch.
        labels: `(n,)` the given labels (class ids).
        dataset: `(n,)` the dataset name of each example.
        index: `(n,)` its row in that dataset.
        class_names: Names of the classes.

    The scores (`confidence`, `variability`, `correctness`, `aum`,
    `forgetting`, `self_influence`, `mislabel_score`) are `(n,)` arrays
    aligned to the examples; `ranking()` sorts them by `mislabel_score`.

    Example:

    ```python
    dyn = tbx.load_run("runs/exp1").dynamics
    suspects = dyn.ranking()[:20]
    print(dyn.index[suspects], dyn.labels[suspects], dyn.mislabel_score[suspects])
    ```
    """

    epochs: np.ndarray
    records: np.ndarray
    labels: np.ndarray
    dataset: np.ndarray
    index: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.labels)

    def _row(self, name):
        return self.records[:, RECORD_ROWS.index(name)].astype(np.float64)

    @property
    def probability(self):
        """`(E, n)` the given label's probability at each logged epoch."""
        return self._row("probability")

    @property
    def predicted(self):
        """`(E, n)` the predicted class at each logged epoch."""
        return self._row("predicted").astype(np.int64)

    @property
    def correct(self):
        """`(E, n)` bool: argmax = the given label."""
        return self.predicted == self.labels[np.newaxis]

    @property
    def confidence(self):
        return self.probability.mean(axis=0)

    @property
    def variability(self):
        return self.probability.std(axis=0)

    @property
    def correctness(self):
        return self.correct.mean(axis=0)

    @property
    def aum(self):
        return self._row("margin").mean(axis=0)

    @property
    def forgetting(self):
        correct = self.correct
        return (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.int64)

    @property
    def self_influence(self):
        return self._row("influence").sum(axis=0)

    @property
    def mislabel_score(self):
        return mislabel_score(self.aum, self.confidence, self.labels)

    @property
    def region(self):
        """Region index per example into `REGIONS` (easy, ambiguous, hard)."""
        return regions(self.confidence, self.variability)

    def scores(self):
        """Every score as a dict `name -> (n,)` array (`SCORES`' order)."""
        return {name: getattr(self, name) for name in SCORES}

    def ranking(self):
        """Example positions, most likely mislabeled first (ties: lower
        AUM first, then position)."""
        return np.lexsort((np.arange(len(self)), self.aum, -self.mislabel_score))
