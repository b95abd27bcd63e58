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
- `mislabel_score`: minus the mean margin over the logged epochs whose
  margins separate best (see `mislabel_score`); `label_issues()` the
  examples it flags (`flagged`: margin below 0 there on average and in at
  least half of those epochs), `likely_label` and
  `noise_matrix` (given label x likely true label) from the same epochs.
"""

import dataclasses
import functools

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

#: The mislabel score's epochs: those whose margin separation (`separation`)
#: is at least this quantile of the logged epochs'.
WINDOW_QUANTILE = 0.5

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


def separation(margins):
    """`(E,)`: how cleanly each logged epoch's margins split at 0, the
    distance between the mean of the positive and of the negative margins
    in pooled standard deviations (0 when either side has fewer than two).

    Early epochs separate little (nothing is learned yet); once the network
    memorizes flipped labels, their margins turn positive and the split
    closes again. The epochs between are where a flipped label shows."""
    out = np.zeros(len(margins))
    for e, m in enumerate(np.asarray(margins, np.float64)):
        negative, positive = m[m < 0], m[m >= 0]
        if len(negative) < 2 or len(positive) < 2:
            continue
        pooled = np.sqrt((negative.var() * len(negative) + positive.var() * len(positive))
                         / len(m))
        if pooled > 0:
            out[e] = (positive.mean() - negative.mean()) / pooled
    return out


def window(margins):
    """`(E,)` bool: the logged epochs the mislabel score reads, those whose
    `separation` is at least its `WINDOW_QUANTILE` over the epochs."""
    spread = separation(margins)
    return spread >= np.quantile(spread, WINDOW_QUANTILE)


def mislabel_score(margins):
    """Higher = more likely mislabeled: minus an example's mean margin (the
    given label's logit minus the largest other) over the `window` epochs.

    A flipped label's margin stays negative while the network follows the
    other examples of its true class, and turns only when the network
    memorizes it. Averaging every epoch (AUM, Pleiss et al. 2020) mixes in
    epochs that say little: the first ones, before anything is learned,
    and those after memorization, when flipped examples look learned. The
    epochs whose margins split best into a positive and a negative group
    are where the flips show, whatever the noise's structure. On
    `bench/dynamics.py` (symmetric, asymmetric and pair noise, on digits and
    on a table) this ranks flips better than AUM over all epochs and than
    the former score, which standardized AUM within each given class: under
    asymmetric noise the class receiving the flips holds many of them, and
    its own mean and spread hid them (precision@k 0.67 against 0.87 here).

    Args:
        margins: `(E, n)` margins per logged epoch.
    """
    margins = np.asarray(margins, np.float64)
    return -margins[window(margins)].mean(axis=0)


def flagged(margins):
    """`(n,)` bool: the examples flagged as mislabeled, those whose margin
    over the `window` epochs is below 0 on average and in at least half of
    them (one very negative epoch does not flag an example the network
    mostly got right).

    On `bench/dynamics.py` the second condition raises the flagged set's F1
    in every setting of the table (by 0.002-0.007) and leaves the digits'
    as they were or raises them (by up to 0.003): the examples it drops are
    mostly clean ones the table's MLP gets wrong in a few epochs only.

    Args:
        margins: `(E, n)` margins per logged epoch.
    """
    margins = np.asarray(margins, np.float64)
    kept = margins[window(margins)]
    return (kept.mean(axis=0) < 0) & ((kept < 0).mean(axis=0) >= 0.5)


def likely_labels(margins, predicted, labels):
    """`(n,)` each example's likely true label: its given label where it is
    not `flagged`, else the class it was predicted most often in the
    `window` epochs (other than the given one)."""
    margins, predicted = np.asarray(margins, np.float64), np.asarray(predicted)
    labels = np.asarray(labels)
    keep = window(margins)
    likely = labels.copy()
    chosen = np.flatnonzero(flagged(margins))
    votes = predicted[keep][:, chosen]
    for column, i in enumerate(chosen):
        other = votes[:, column][votes[:, column] != labels[i]]
        if len(other):
            likely[i] = np.bincount(other).argmax()
    return likely


def noise_matrix(labels, likely, classes):
    """`(classes, classes)`: the joint of given label (rows) and likely true
    label (columns) over the examples, summing to 1."""
    joint = np.zeros((classes, classes))
    np.add.at(joint, (np.asarray(labels), np.asarray(likely)), 1.0)
    return joint / max(len(labels), 1)


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

    @functools.cached_property
    def mislabel_score(self):
        return mislabel_score(self._row("margin"))

    @functools.cached_property
    def likely_label(self):
        """`(n,)` each example's likely true label (`likely_labels`): its
        given label, or for a flagged one (`label_issues`) the class the
        network predicted most often in the score's epochs."""
        return likely_labels(self._row("margin"), self.predicted, self.labels)

    @property
    def noise_matrix(self):
        """`(C, C)` the estimated joint of given label (rows) and likely true
        label (columns), summing to 1 (`noise_matrix`): off the diagonal,
        which classes are confused with which, and how often."""
        classes = max(len(self.class_names), int(self.labels.max()) + 1,
                      int(self.predicted.max()) + 1)
        return noise_matrix(self.labels, self.likely_label, classes)

    def label_issues(self):
        """Example positions flagged as mislabeled, most likely first: those
        whose margin over the score's epochs is below 0 on average and in at
        least half of them (`flagged`: the network preferred another class
        there). The library estimates the set's size itself, as
        `cleanlab.filter.find_label_issues` does."""
        flagged = self.likely_label != self.labels
        ranking = self.ranking()
        return ranking[flagged[ranking]]

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
