"""Comparing two runs, or two epochs of one: what changed, and where.

Computed from the logs alone (`tb_explain.reader`: the same parse for
Python, the `tb-explain compare` command and the Explain tab's Compare
view); the models are not needed:

- representations: linear CKA between every layer of A and every layer of B
  on the probe (`ActivationImages`' Gram matrices, `compute.similarity`);
- mistakes: per dataset, the examples one run gets right and the other
  wrong (`Predictions`' per-example results);
- metrics: every `outputs/...` scalar both runs logged;
- gradient health: per layer, B's gradient norm over A's (`GradientNorms`).

Example:

```python
c = tbx.compare("runs/lr1e-3", "runs/lr1e-2")
print(c.cka.layers_a, c.cka.matrix.diagonal())
print(c.disagreement["validation"].a_only[:10])
print(tbx.compare("runs/lr1e-3", epoch=9, epoch_b=0).cka.matrix)   # two epochs of one run
```
"""

import dataclasses
import math

import numpy as np

from tb_explain import reader, tags
from tb_explain.compute import similarity


@dataclasses.dataclass
class CKA:
    """Linear CKA between two runs' layers on the same probe.

    Attributes:
        layers_a: Layer paths of A, in forward order (as the activation rows
            name them).
        layers_b: Layer paths of B.
        matrix: float64 `(len(layers_a), len(layers_b))`, in [0, 1]; NaN where
            a layer is constant over the probe.
        n: Probe rows.
    """
    layers_a: list
    layers_b: list
    matrix: np.ndarray
    n: int

    def diagonal(self):
        """`{layer: CKA}` of the layers both runs have (same path)."""
        index_b = {p: j for j, p in enumerate(self.layers_b)}
        return {p: float(self.matrix[i, index_b[p]]) for i, p in enumerate(self.layers_a)
                if p in index_b}


@dataclasses.dataclass
class Disagreement:
    """Where two runs' predictions on one dataset differ.

    Attributes:
        a_only: Sorted row indices A predicts right and B wrong.
        b_only: Sorted row indices B predicts right and A wrong.
        both_wrong: Sorted row indices both predict wrong.
        n: Rows of the dataset.
        predicted_a: A's predicted class per row (-1: multilabel).
        predicted_b: B's.
        class_names: The output's class names.
    """
    a_only: np.ndarray
    b_only: np.ndarray
    both_wrong: np.ndarray
    n: int
    predicted_a: np.ndarray
    predicted_b: np.ndarray
    class_names: list


@dataclasses.dataclass
class Comparison:
    """What `tbx.compare` found. See `compare`.

    Attributes:
        run_a: A's path (or name).
        run_b: B's (the same as `run_a` for two epochs of one run).
        epoch: A's epoch.
        epoch_b: B's epoch.
        cka: A `CKA`, or None when either run logged no Gram matrices at its
            epoch (no `ActivationImages` with data, `similarity_samples=0`,
            privacy "strict").
        disagreement: `{dataset: Disagreement}` for every dataset both runs'
            `Predictions` logged per example at those epochs.
        metrics: `{tag: (a, b)}` for every `outputs/...` scalar both logged.
        health: `{layer: B's gradient norm / A's}` (NaN where both are 0,
            infinity where only A's is).
        attributions: `{tag: rank correlations}`: for every attribution
            (`attributions/<method>/<input>`) both runs logged per sample on
            the same probe, the Spearman correlation of A's and B's map (or
            feature row) per probe sample (`Attributions`, `IntegratedGradients`).
        notes: What could not be compared, and why.
    """
    run_a: str
    run_b: str
    epoch: int
    epoch_b: int
    cka: object
    disagreement: dict
    metrics: dict
    health: dict
    notes: list
    attributions: dict = dataclasses.field(default_factory=dict)

    def to_json(self):
        """The JSON body of the Explain tab's `compare` route (NaN and
        infinities as strings, as the tab's other routes send them)."""
        def number(value):
            value = float(value)
            if math.isnan(value):
                return "NaN"
            return ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) else value

        cka = None if self.cka is None else {
            "layers_a": self.cka.layers_a, "layers_b": self.cka.layers_b, "n": self.cka.n,
            "matrix": [[number(v) for v in row] for row in self.cka.matrix]}
        return {"a": self.run_a, "b": self.run_b, "epoch": self.epoch, "epoch_b": self.epoch_b,
                "cka": cka,
                "disagreement": {name: {"a_only": d.a_only.tolist(), "b_only": d.b_only.tolist(),
                                        "both_wrong": d.both_wrong.tolist(), "n": d.n}
                                 for name, d in self.disagreement.items()},
                "metrics": {tag: [number(a), number(b)] for tag, (a, b) in self.metrics.items()},
                "health": {layer: number(r) for layer, r in self.health.items()},
                "attributions": {tag: [number(v) for v in values]
                                 for tag, values in self.attributions.items()},
                "notes": list(self.notes)}

    def report(self, top=10):
        """A Markdown report: metrics, the largest health ratios, the CKA
        diagonal, disagreement counts (what `tb-explain compare A B` prints)."""
        same = self.run_a == self.run_b
        title = (f"# {self.run_a}: epoch {self.epoch} vs epoch {self.epoch_b}" if same else
                 f"# {self.run_a} (epoch {self.epoch}) vs {self.run_b} (epoch {self.epoch_b})")
        lines = [title, ""]
        headline = {t: v for t, v in self.metrics.items() if t.rsplit("/", 1)[-1] in HEADLINE}
        if headline:
            lines += ["## Metrics", "", "| tag | A | B | B - A |", "|---|---|---|---|"]
            lines += [f"| {t} | {_fmt(a)} | {_fmt(b)} | {_fmt(b - a)} |"
                      for t, (a, b) in headline.items()]
            rest = len(self.metrics) - len(headline)
            lines += ["", f"({rest} per-class metrics more in `Comparison.metrics`.)"] if rest \
                else []
            lines.append("")
        if self.health:
            ranked = sorted(self.health.items(), key=lambda kv: -abs(math.log(kv[1]))
                            if kv[1] > 0 and math.isfinite(kv[1]) else -math.inf)[:top]
            lines += ["## Gradient health (B's gradient norm / A's, largest changes)", "",
                      "| layer | ratio |", "|---|---|"]
            lines += [f"| {layer} | {_fmt(r)} |" for layer, r in ranked]
            lines.append("")
        if self.cka is not None:
            diagonal = self.cka.diagonal()
            lines += [f"## Representations (linear CKA on {self.cka.n} probe rows, same layer)",
                      "", "| layer | CKA |", "|---|---|"]
            lines += [f"| {layer} | {_fmt(v)} |" for layer, v in diagonal.items()]
            if not diagonal:
                lines.append("| (no layer path in common: see the full matrix) | |")
            lines.append("")
        if self.disagreement:
            lines += ["## Disagreement", "",
                      "| dataset | rows | A right, B wrong | B right, A wrong | both wrong |",
                      "|---|---|---|---|---|"]
            lines += [f"| {name} | {d.n} | {len(d.a_only)} | {len(d.b_only)} | "
                      f"{len(d.both_wrong)} |" for name, d in self.disagreement.items()]
            lines.append("")
        if self.attributions:
            lines += ["## Attributions (Spearman correlation of A's and B's, per probe sample)",
                      "", "| attribution | per sample | mean |", "|---|---|---|"]
            lines += [f"| {tag} | {', '.join(_fmt(v) for v in values)} | "
                      f"{_fmt(np.nanmean(values)) if np.isfinite(values).any() else 'nan'} |"
                      for tag, values in self.attributions.items()]
            lines.append("")
        if self.notes:
            lines += ["## Not compared", ""] + [f"- {note}" for note in self.notes] + [""]
        return "\n".join(lines).rstrip() + "\n"


#: Metrics the report shows (every `outputs/` scalar is in `metrics`).
HEADLINE = ("accuracy", "loss", "macro_f1", "ece", "mae", "rmse", "r2", "batchnorm_lag")


def _fmt(value):
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def compare(run_a, run_b=None, *, epoch=None, epoch_b=None):
    """Compares two runs, or two epochs of one run, from their logs.

    Args:
        run_a: A run directory (what `tbx.load_run` takes), or a `tbx.Run`.
        run_b: Another run, or None to compare two epochs of `run_a`.
        epoch: A's epoch. Default: the last epoch both runs logged (with
            `run_b=None`, `run_a`'s last).
        epoch_b: B's epoch. Default: `epoch`; with `run_b=None`, the first
            epoch `run_a` logged (what changed since then).

    Returns:
        A `Comparison`.

    Raises:
        ValueError: if the runs' probes are not the same examples (CKA needs
            the same rows), if a dataset's examples differ between the runs,
            if an epoch was not logged, or if the runs share no epoch.

    Example:

    ```python
    c = tbx.compare("runs/a", "runs/b")
    print(c.report())
    ```
    """
    from tb_explain.runs import Run  # noqa: PLC0415

    a = run_a if isinstance(run_a, Run) else Run(run_a)
    b = a if run_b is None else (run_b if isinstance(run_b, Run) else Run(run_b))
    return from_sources(a.source, b.source, epoch=epoch, epoch_b=epoch_b, same=run_b is None,
                      names=(a.path, b.path))


def _health_tags(source):
    """`{layer: tag}` of the layers' gradient norms (not the variables')."""
    head, tail = tags.SIGNALS["gradient_norm"][1].split("{}")
    layers = reader.model_layers(source)
    found = {}
    for tag in source.scalar_tags():
        if tag.startswith(head) and tag.endswith(tail) and len(tag) > len(head) + len(tail):
            found[tag[len(head):len(tag) - len(tail)]] = tag
    if layers:
        found = {name: tag for name, tag in found.items() if name in layers}
    else:  # no model summary: a layer's path is a prefix of its variables' paths
        found = {name: tag for name, tag in found.items()
                 if any(other.startswith(name + "/") for other in found)}
    order = {p: i for i, p in enumerate(layers)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


class _Side:
    """What one run logged that a comparison reads (listings, then the data
    of the chosen epoch only)."""

    def __init__(self, source):
        self.source = source
        self.grams = reader.gram_epochs(source)
        self.predicted = reader.predicted_epochs(source)
        scalar_tags = source.scalar_tags()
        self.metric_tags = [t for t in scalar_tags if t.startswith("outputs/")]
        self.health_tags = _health_tags(source)
        self.attributions = reader.attribution_epochs(source)
        self.scalars = source.scalars(self.metric_tags + list(self.health_tags.values()))

    def epochs(self):
        steps = set(self.grams) | set(self.predicted) | set(self.attributions)
        for points in self.scalars.values():
            steps.update(step for step, _ in points)
        return sorted(steps)

    def value(self, tag, epoch):
        at = [v for step, v in self.scalars.get(tag, ()) if step == epoch]
        return at[-1] if at else None


def from_sources(source_a, source_b, epoch=None, epoch_b=None, same=False, names=("a", "b")):
    """`compare` on two `reader` sources (the Explain tab's route calls this
    with TensorBoard's data provider). `same`: the sources are one run."""
    a = _Side(source_a)
    b = a if same else _Side(source_b)
    epochs_a, epochs_b = a.epochs(), b.epochs()
    if not epochs_a or not epochs_b:
        empty = names[0] if not epochs_a else names[1]
        raise ValueError(f"run {empty!r} logged nothing tbx.compare reads (no Predictions, "
                         f"ActivationImages or GradientNorms event).")
    for value, name, run, logged in ((epoch, "epoch", names[0], epochs_a),
                                     (epoch_b, "epoch_b", names[1], epochs_b)):
        if value is not None and value not in logged:
            raise ValueError(f"`{name}`={value!r}: run {run!r} logged no epoch {value!r} "
                             f"(it logged {logged}).")
    if epoch is None:
        if same:
            epoch = epochs_a[-1]
        else:
            common = sorted(set(epochs_a) & set(epochs_b))
            if not common:
                raise ValueError(f"runs {names[0]!r} and {names[1]!r} share no logged epoch "
                                 f"({epochs_a} and {epochs_b}): pass `epoch` and `epoch_b`.")
            epoch = common[-1]
    if epoch_b is None:
        epoch_b = epochs_a[0] if same else epoch
        if epoch_b not in epochs_b:
            raise ValueError(f"`epoch_b` (default {epoch_b}): run {names[1]!r} logged no epoch "
                             f"{epoch_b} (it logged {epochs_b}); pass `epoch_b`.")
    notes = []
    return Comparison(
        run_a=names[0], run_b=names[1], epoch=int(epoch), epoch_b=int(epoch_b),
        cka=_cka(a, b, epoch, epoch_b, notes), disagreement=_disagreement(a, b, epoch, epoch_b,
                                                                          notes),
        metrics=_metrics(a, b, epoch, epoch_b), health=_health(a, b, epoch, epoch_b),
        attributions=_attributions(a, b, epoch, epoch_b, notes), notes=notes)


def _cka(a, b, epoch, epoch_b, notes):
    grams_a = reader.grams(a.source, epoch, a.grams)
    grams_b = reader.grams(b.source, epoch_b, b.grams)
    if grams_a is None or grams_b is None:
        notes.append(f"representations: no Gram matrices at epoch "
                     f"{epoch if grams_a is None else epoch_b} of run "
                     f"{'A' if grams_a is None else 'B'} (ActivationImages with data logs them, "
                     f"except at privacy 'strict')")
        return None
    if grams_a.probe != grams_b.probe or grams_a.n != grams_b.n:
        raise ValueError(
            f"the two runs' probes are not the same examples (probe of {grams_a.n} rows, "
            f"fingerprint {grams_a.probe}, against {grams_b.n} rows, {grams_b.probe}): CKA "
            f"compares layers on the same probe rows; give both fits the same `data`.")
    return CKA(layers_a=grams_a.layers, layers_b=grams_b.layers,
               matrix=similarity.cka(grams_a.packed, grams_b.packed), n=grams_a.n)


def _disagreement(a, b, epoch, epoch_b, notes):
    results_a = reader.predicted(a.source, epoch, a.predicted)
    results_b = reader.predicted(b.source, epoch_b, b.predicted)
    out = {}
    for name in results_a:
        if name not in results_b:
            continue
        ra, rb = results_a[name], results_b[name]
        if ra.data != rb.data or len(ra.correct) != len(rb.correct):
            raise ValueError(
                f"dataset {name!r} holds different examples in the two runs ({len(ra.correct)} "
                f"rows, fingerprint {ra.data}, against {len(rb.correct)} rows, {rb.data}): "
                f"disagreement compares the same rows.")
        out[name] = Disagreement(
            a_only=np.flatnonzero(ra.correct & ~rb.correct),
            b_only=np.flatnonzero(rb.correct & ~ra.correct),
            both_wrong=np.flatnonzero(~ra.correct & ~rb.correct), n=len(ra.correct),
            predicted_a=ra.predicted, predicted_b=rb.predicted, class_names=ra.class_names)
    missing = sorted(set(results_a) ^ set(results_b))
    if missing:
        notes.append(f"disagreement: dataset(s) {missing} logged per example by one run only "
                     f"at these epochs")
    if not results_a and not results_b:
        notes.append("disagreement: no per-example predictions at these epochs (Predictions "
                     "logs them, except at privacy 'strict')")
    return out


def ranks(values):
    """Ranks of `values` (0-based), ties sharing their average rank."""
    values = np.asarray(values, np.float64).ravel()
    order = values.argsort(kind="stable")
    rank = np.empty(len(values))
    rank[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, rank) / counts)[inverse]


def spearman(x, y):
    """Spearman's rank correlation of two arrays (NaN when either is constant)."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denominator) if denominator else math.nan


def _attributions(a, b, epoch, epoch_b, notes):
    both = set(a.attributions.get(epoch, {})) & set(b.attributions.get(epoch_b, {}))
    if not both:
        return {}
    values_a = reader.attributions(a.source, epoch, both, a.attributions)
    values_b = reader.attributions(b.source, epoch_b, both, b.attributions)
    out = {}
    for tag in sorted(both):
        (va, probe_a), (vb, probe_b) = values_a[tag], values_b[tag]
        if probe_a != probe_b or va.shape != vb.shape:
            notes.append(f"attributions: {tag} explains different probe samples in the two runs")
            continue
        out[tag] = [spearman(x, y) for x, y in zip(va, vb)]
    return out


def _metrics(a, b, epoch, epoch_b):
    out = {}
    for tag in sorted(set(a.metric_tags) & set(b.metric_tags)):
        va, vb = a.value(tag, epoch), b.value(tag, epoch_b)
        if va is not None and vb is not None:
            out[tag] = (va, vb)
    return out


def _health(a, b, epoch, epoch_b):
    out = {}
    for layer, tag in a.health_tags.items():
        if layer not in b.health_tags:
            continue
        va, vb = a.value(tag, epoch), b.value(b.health_tags[layer], epoch_b)
        if va is None or vb is None:
            continue
        out[layer] = vb / va if va else (math.nan if vb == 0 else math.inf)
    return out
