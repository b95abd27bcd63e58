"""FeatureImportance and DecisionRules callbacks: what a tabular model relies on."""

import numpy as np

from tb_explain import _validate
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import importance, predictions, rules
from tb_explain.compute.attribution import _inputs, _outputs
from tb_explain.summary import ops


def _table_data(data, name, need_labels):
    """`(x, y)` of `data` ((x,), (x, y), (x, y, w) or x), checked as tables."""
    if isinstance(data, tuple):
        if not 1 <= len(data) <= 3:
            raise ValueError(f"{name}: `data` must be (x, y) or (x, y, sample_weight), got a "
                             f"tuple of {len(data)} elements.")
        x, y = data[0], data[1] if len(data) > 1 else None
    else:
        x, y = data, None
    if hasattr(x, "element_spec"):
        raise TypeError(f"{name}: `data` must be arrays (x, y), not a tf.data.Dataset: "
                        f"permutations need the whole table in memory.")
    importance.tables(x, what="data")  # 2-D float tables only
    if isinstance(y, (dict, list)):  # labels per output of a multi-output model
        y = y if isinstance(y, dict) else [np.asarray(part) for part in y]
    elif y is not None:
        y = np.asarray(y)
    if need_labels and y is None:
        raise ValueError(f"{name}: `data` has no labels: permutation importance scores the model "
                         f"against them; pass data=(x, y).")
    return x, y


def _explained(callback, output):
    """The outputs a tabular callback explains: `[output]`, or every output."""
    plan = _inputs.plan_inputs(callback.model, callback.x)
    keys = _outputs.explained_outputs(callback.model, plan, output)
    return keys, (lambda key: "" if len(keys) == 1 else f"{key}/")


class _PerOutput(ExplainCallback):
    """A tabular callback: one `_log_output(key, tag segment, epoch)` per
    explained output (`prepare` sets `_keys` and `_segment`)."""

    needs_call = True

    def log_event(self, epoch):
        for key in self._keys:
            self._log_output(key, self._segment(key), epoch)


class FeatureImportance(_PerOutput):
    """Logs permutation feature importance of a tabular model as it trains.

    At each event, `tbx.permutation_importance` on `data` (scikit-learn's
    semantics: score drop when a feature's column is permuted, over
    `repeats` permutations, all in one compiled forward function), logged as:

    - `importance/<feature>` (Scalars): the mean importance, so the trend
      over epochs shows; `importance/<input>/<feature>` for several inputs;
    - `importance/ranking` (Text): features by importance, with their
      standard deviation over repeats and, when `IntegratedGradients` runs on
      the same `log_dir`, each feature's rank by mean |attribution| beside it
      (two views of what the model relies on; where they disagree, look
      closer).

    Args:
        log_dir: Directory of the run (created if missing).
        data: `(x, y)`: 2-D float table(s) (a list or dict for multi-input
            models) and labels; a few hundred rows or more.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        repeats: Permutations per feature (int >= 1).
        metric: None (accuracy or R2), `"loss"`, a scikit-learn scoring name
            (`"roc_auc"`, `"neg_log_loss"`...) or a callable
            `(y_true, y_pred) -> float`; see `tbx.permutation_importance`.
        feature_names: Names (a list, or a dict of lists per input).
        groups: `{name: [columns]}` permuted together (one-hot blocks).
        seed: Seed of the permutations (the same at every event, so changes
            come from the model).
        output: For multi-output models, the output explained (default:
            every output, `importance/<output>/<feature>`, with `y` a dict or
            list of labels per output).

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        tbx.FeatureImportance("runs/exp1", data=(x_val, y_val), freq=5,
                              feature_names=names)])
    ```
    """

    tag_prefix = "importance"

    def __init__(self, log_dir, data, freq=1, repeats=5, metric=None, feature_names=None,
                 groups=None, seed=0, output=None):
        super().__init__(log_dir, freq)
        self.x, self.y = _table_data(data, "FeatureImportance", need_labels=True)
        self.repeats = _validate.check_int("repeats", repeats, minimum=1)
        self.metric = importance.check_metric(metric)
        leaves, _, names = importance.tables(self.x, what="data")
        importance.column_names(leaves, names, feature_names)  # raises on a wrong length
        self.feature_names = feature_names
        self.groups = groups
        self.seed = _validate.check_int("seed", seed)
        self.output = output

    def _compute(self, key):
        return importance.permutation_importance(
            self.model, self.x, predictions.part_for(self.y, key), metric=self.metric,
            repeats=self.repeats, seed=self.seed, feature_names=self.feature_names,
            groups=self.groups, output=key)

    def prepare(self):
        with self.model_checks():  # one forward pass on a few rows: outputs, tasks, groups
            self._keys, self._segment = _explained(self, self.output)
            if self.metric == "loss" and len(self._keys) > 1:
                raise ValueError("`metric='loss'` is the compiled loss of the whole model; on a "
                                 "multi-output model use the default metric or a callable.")
            leaves, structure, names = importance.tables(self.x)
            for key in self._keys:
                labels = predictions.part_for(self.y, key)
                if labels is None:
                    raise ValueError(f"`data` has no labels for output {key!r}.")
                importance.score_function(self.model, leaves, structure, labels, key,
                                          self.metric)
            importance._columns(leaves, importance.column_names(
                leaves, names, self.feature_names), self.groups)

    def _log_output(self, key, segment, epoch):
        result = self._compute(key)
        for name, value in zip(result.names, result.importances_mean):
            ops.write_scalar(f"importance/{segment}{name}", value, epoch)
        attributions = self._writer.shared.get("attribution_means", {})
        ig_rank = {}
        if attributions:
            ordered = sorted(attributions, key=lambda k: -attributions[k])
            ig_rank = {name: i + 1 for i, name in enumerate(ordered)}
        header = ["rank", "feature", "importance", "std"] + (["IG rank"] if ig_rank else [])
        rows = []
        for rank, i in enumerate(result.ranking()):
            name = result.names[i]
            row = [rank + 1, name, f"{result.importances_mean[i]:.4g}",
                   f"{result.importances_std[i]:.2g}"]
            if ig_rank:
                row.append(ig_rank.get(name, "–"))
            rows.append(row)
        what = {None: "score drop (accuracy or R2)", "loss": "loss increase"}.get(
            self.metric if not callable(self.metric) else "callable", "score drop")
        ops.write_markdown(
            f"importance/{segment}ranking",
            f"Permutation importance at epoch {epoch} ({what} when the feature is permuted, "
            f"mean of {self.repeats} repeats; baseline score {result.baseline_score:.4g}):\n\n"
            + ops.markdown_table(header, rows), epoch)


class DecisionRules(_PerOutput):
    """Logs the decision rules a surrogate tree reads off the model, as it trains.

    At each event, `tbx.extract_rules` on `data`: scikit-learn's CART fitted
    to the model's own predictions (the `tb_explain[rules]` extra), so the
    rules change as the model learns:

    - `rules/text` (Text): one rule per line, IF ... AND ... THEN class
      (support, confidence), by support;
    - `rules/fidelity` (Scalars): agreement of the rules with the model on a
      held-out quarter of `data` (R2 for regression models): trust the rules
      as far as this goes;
    - `rules/leaves` (Scalars): the number of rules.

    A surrogate explains the model, not the data: a rule says what the
    model predicts, right or wrong.

    Args:
        log_dir: Directory of the run (created if missing).
        data: 2-D float table(s) (labels, if given, are ignored).
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        max_depth: Tree depth (int >= 1): at most `2**max_depth` rules.
        feature_names: Names (a list, or a dict of lists per input).
        class_names: Class names of a classifier (a dict of lists per output
            for multi-output models).
        min_samples_leaf: Smallest rule, a fraction of the rows or a count.
        output: For multi-output models, the output explained (default:
            every output, under `rules/<output>/...`).
        privacy: `"off"` and `"inputs"` as above (rules are aggregates);
            `"strict"`: every rule covers at least `min_samples` rows, so no
            rule describes a handful of samples.
        min_samples: Rows a rule covers at least at `privacy="strict"`.

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        tbx.DecisionRules("runs/exp1", data=x_val, freq=5, feature_names=names,
                          class_names=["malignant", "benign"])])
    ```
    """

    tag_prefix = "rules"

    def __init__(self, log_dir, data, freq=1, max_depth=3, feature_names=None, class_names=None,
                 min_samples_leaf=1, privacy="off", min_samples=8, output=None):
        super().__init__(log_dir, freq)
        rules._sklearn_tree()  # says what to install, now
        self.x, _ = _table_data(data, "DecisionRules", need_labels=False)
        rows = len(importance.tables(self.x)[0][0])
        if rows < 8:
            raise ValueError(f"DecisionRules: `data` has {rows} rows; decision rules need at "
                             f"least 8 (a few hundred make reliable ones).")
        self.max_depth = _validate.check_int("max_depth", max_depth, minimum=1)
        leaves, _, names = importance.tables(self.x, what="data")
        importance.column_names(leaves, names, feature_names)
        self.feature_names = feature_names
        self.class_names = class_names
        self.privacy, self.min_samples = _validate.check_privacy(privacy, True, min_samples)
        if self.privacy == "strict":
            smallest = (min_samples_leaf if isinstance(min_samples_leaf, int)
                        else int(np.ceil(min_samples_leaf * rows)))
            min_samples_leaf = max(smallest, self.min_samples)
        self.min_samples_leaf = min_samples_leaf
        self.output = output

    def _class_names(self, key):
        names = self.class_names
        return names.get(key) if isinstance(names, dict) else names

    def _compute(self, key):
        return rules.extract_rules(self.model, self.x, feature_names=self.feature_names,
                                   class_names=self._class_names(key), max_depth=self.max_depth,
                                   min_samples_leaf=self.min_samples_leaf, output=key)

    def prepare(self):
        with self.model_checks():
            self._keys, self._segment = _explained(self, self.output)
            leaves, structure, _ = importance.tables(self.x)
            for key in self._keys:
                rules._model_labels(self.model, [leaf[:8] for leaf in leaves], structure, key,
                                    self._class_names(key))

    def _log_output(self, key, segment, epoch):
        result = self._compute(key)
        kind = "accuracy" if result.task != "regression" else "R2"
        ops.write_markdown(f"rules/{segment}text", (
            f"Decision rules at epoch {epoch}: a depth-{self.max_depth} tree fitted to the "
            f"model's predictions, fidelity {result.fidelity:.3f} ({kind} against the model on "
            f"held-out rows). They explain the model, not the data.\n\n{result.text}"), epoch)
        ops.write_scalar(f"rules/{segment}fidelity", result.fidelity, epoch)
        ops.write_scalar(f"rules/{segment}leaves", len(result.rules), epoch)
