"""The `tb-explain` command: compare runs and summarize one, in the terminal.

Usage:
    tb-explain compare RUN [RUN ...] [--format text|markdown|csv|json]
    tb-explain compare A B [--epoch E] [--epoch-b F]
    tb-explain compare A --epoch E --epoch-b F
    tb-explain summary RUN [--format text|json]

`compare` prints a table of the runs' figures; given two run directories
(or one with `--epoch-b`: two epochs of it) in the text or markdown format,
it then prints `tbx.compare`'s Markdown report: the metrics, the largest
gradient health ratios, the CKA of each layer with itself, and the
disagreement counts per dataset.

A RUN is a run directory written by tb_explain (keras's `train/` and
`validation/` sub-runs beside it are read too), or a root directory, which
stands for every such run below it.
"""

import argparse
import csv
import io
import json
import os
import sys

from tb_explain import __version__

SUBRUNS = ("train", "validation")


def _experiments(path):
    """Run directories named by a command-line argument."""
    from tb_explain.runs import Run, load_runs

    try:
        return {path: Run(path)}
    except ValueError:
        pass
    runs = load_runs(path)  # raises ValueError when nothing is there
    found = {os.path.join(path, name) if name != "." else path: run for name, run in runs.items()
             if os.path.basename(name) not in SUBRUNS}
    if not found:
        raise ValueError(f"No tb_explain run under {path!r}: only keras sub-runs "
                         f"({', '.join(SUBRUNS)}) were found.")
    return found


def _metrics(path, run):
    """Final metrics: the HParams copies, else keras's epoch_* scalars."""
    from tb_explain.runs import Run

    metrics = {tag.split("/", 1)[1]: run.last(tag) for tag in run.tags("scalars")
               if tag.startswith("hparams/")}
    if metrics:
        return metrics
    for sub, prefix in (("train", ""), ("validation", "val_")):
        subdir = os.path.join(path, sub)
        if os.path.isdir(subdir):
            try:
                subrun = Run(subdir)
            except ValueError:
                continue
            for tag in subrun.tags("scalars"):
                if tag.startswith("epoch_"):
                    metrics[prefix + tag[len("epoch_"):]] = subrun.last(tag)
    return metrics


def describe(path, run):
    """One row of figures for a run (a dict)."""
    row = {"run": path}
    row.update(sorted(_metrics(path, run).items()))
    if "gradients/global_norm" in run.tags("scalars"):
        steps, norms = run.scalars("gradients/global_norm")
        row["grad_norm_first"] = float(norms[0])
        row["grad_norm_last"] = float(norms[-1])
        row["grad_norm_trend"] = float(norms[-1] / norms[0]) if norms[0] else float("nan")
    dead = [run.last(t) for t in run.tags("scalars") if t.endswith("/dead_fraction")]
    if dead:
        row["dead_fraction_mean"] = float(sum(dead) / len(dead))
        row["dead_fraction_max"] = float(max(dead))
    delta = run.last("attributions/completeness_delta")
    if delta is not None:
        row["ig_completeness_delta"] = delta
    row.update(_dataset_metrics(run))
    return row


#: Headline metrics of `Predictions`, per dataset (and output).
HEADLINE = ("accuracy", "loss", "macro_f1", "ece", "mae", "rmse", "r2")


def _dataset_metrics(run):
    """`{"<dataset>[/<output>]/<metric>": last value}` of the `outputs/` headline metrics."""
    found = {}
    for tag in sorted(run.tags("scalars")):
        parts = tag.split("/")
        if parts[0] == "outputs" and len(parts) in (3, 4) and parts[-1] in HEADLINE:
            found["/".join(parts[1:])] = run.last(tag)
    return found


def _fmt(value):
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render(rows, fmt):
    """Renders rows (dicts) as text, markdown, csv or json."""
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    table = [[_fmt(row.get(c)) for c in columns] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(table)
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in table]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    return "\n".join(lines)


def summarize(path, run):
    """A dict describing one run: tags by kind, steps, figures, alerts."""
    kinds = {}
    for kind in ("scalars", "histograms", "images", "text", "keras_graph"):
        tags = run.tags(kind)
        if tags:
            kinds[kind] = len(tags)
    steps = sorted({int(s) for t in run.tags("scalars") for s in run.scalars(t)[0]})
    alerts = {}
    for tag in ("weights/alerts", "gradients/alerts"):
        if tag in run.tags("text"):
            step, text = run.text(tag)[-1]
            alerts[tag] = {"step": step, "text": text}
    return {"run": path, "tags": kinds, "steps": steps, "op_graph": bool(run.has_graph),
            "hparams": run.hparams, "figures": describe(path, run), "alerts": alerts}


def _summary_text(info):
    lines = [f"run: {info['run']}",
             "tags: " + ", ".join(f"{n} {k}" for k, n in info["tags"].items()),
             f"steps (epochs) logged: {info['steps']}",
             f"op graph: {'yes' if info['op_graph'] else 'no'}"]
    if info["hparams"]:
        lines.append("hparams: " + ", ".join(f"{k}={_fmt(v)}" for k, v in info["hparams"].items()))
    figures = {k: v for k, v in info["figures"].items() if k != "run"}
    if figures:
        lines.append("figures: " + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()))
    for tag, alert in info["alerts"].items():
        lines.append(f"{tag} (epoch {alert['step']}): " + alert["text"].replace("\n", " "))
    return "\n".join(lines)


def _pair(args, experiments):
    """The two runs a report compares (`(run, None)`: two epochs of one), or
    None: two run directories named as two arguments, or one run with
    `--epoch-b`."""
    runs = list(experiments.values())
    if len(args.runs) == 2 and len(runs) == 2:
        return runs[0], runs[1]
    if len(args.runs) == 1 and len(runs) == 1 and args.epoch_b is not None:
        return runs[0], None
    if args.epoch is not None or args.epoch_b is not None:
        raise ValueError("--epoch and --epoch-b need two runs (A B), or one run and --epoch-b.")
    return None


def main(argv=None):
    """Entry point of the `tb-explain` console script."""
    parser = argparse.ArgumentParser(
        prog="tb-explain", description="Compare tb_explain runs, or summarize one.")
    parser.add_argument("--version", action="version", version=f"tb-explain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="side-by-side table of runs")
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--format", choices=["text", "markdown", "csv", "json"], default="text")
    compare.add_argument("--epoch", type=int, default=None,
                         help="A's epoch (default: the last both runs logged)")
    compare.add_argument("--epoch-b", type=int, default=None, dest="epoch_b",
                         help="B's epoch (default: --epoch); with one run, its other epoch")
    summary = commands.add_parser("summary", help="describe one run")
    summary.add_argument("run", metavar="RUN")
    summary.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            experiments = {}
            for path in args.runs:
                experiments.update(_experiments(path))
            rows = [describe(path, run) for path, run in experiments.items()]
            pair = _pair(args, experiments)
            print(render(rows, args.format))
            if pair is not None and args.format in ("text", "markdown"):
                from tb_explain.comparison import compare as compare_runs  # noqa: PLC0415

                print()
                print(compare_runs(*pair, epoch=args.epoch, epoch_b=args.epoch_b).report(),
                      end="")
        else:
            experiments = _experiments(args.run)
            if len(experiments) != 1:
                parser.error(f"{args.run!r} holds {len(experiments)} runs; name one of "
                             f"{sorted(experiments)}")
            (path, run), = experiments.items()
            info = summarize(path, run)
            print(json.dumps(info, indent=2) if args.format == "json" else _summary_text(info))
    except ValueError as exc:
        print(f"tb-explain: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
