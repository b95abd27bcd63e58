// Attributions: every probe sample with its input and each method's map, an
// epoch slider; for tables, each feature's scores and the rules at that epoch.
import {el, getJSON, imageURL, markdown, scalarCell, section, format} from "../util.js";

function sanityBadges(data) {
  const badges = el("div", {id: "sanity-badges"});
  for (const badge of data.sanity) {
    badges.append(el("span", {class: `badge ${badge.passes ? "pass" : "fail"}`,
      "data-tag": badge.tag, "data-epoch": String(badge.step), "data-value": String(badge.value),
      title: "sanity check (model-parameter randomization): rank correlation with the trained model's maps once every layer is re-initialized; below 0.5 passes"},
      `${badge.method}: ${badge.passes ? "passes" : "fails"} (${format(badge.value)})`));
  }
  return data.sanity.length ? badges
    : el("p", {class: "muted", text: "No sanity check in this run (Attributions(sanity_check=True))."});
}

// The step of `column` to show at `epoch`: that epoch, or for the input
// (the same probe at every epoch) the last step it was logged.
function stepOf(column, epoch) {
  if (column.steps.includes(epoch)) return epoch;
  return column.label === "input" && column.steps.length ? column.steps[column.steps.length - 1] : null;
}

function imageGrid(run, data, epoch) {
  const inputs = new Set(data.columns.map((c) => c.input));
  const name = (c) => (inputs.size > 1 ? `${c.label} · ${c.input}` : c.label);
  const grid = el("div", {class: "grid", id: "attribution-grid",
                          style: `grid-template-columns: 80px repeat(${data.columns.length}, max-content)`});
  grid.append(el("div"));
  for (const column of data.columns) grid.append(el("div", {class: "muted", text: name(column)}));
  for (let i = 0; i < data.samples; i++) {
    grid.append(el("div", {text: `sample ${i}`}));
    for (const column of data.columns) {
      const step = stepOf(column, epoch);
      if (step === null || i >= column.samples) { grid.append(el("div")); continue; }
      grid.append(el("img", {src: imageURL(run, column.tag, step, i), alt: `${name(column)} of sample ${i}`,
                             "data-tag": column.tag, "data-step": String(step), "data-sample": String(i)}));
    }
  }
  return grid;
}

// Features (rows, by the first score at `epoch`) by scores (columns).
function featureTable(data, epoch) {
  const at = (tag) => { const p = (data.scalars[tag] || []).find((q) => q[0] === epoch); return p ? p[1] : undefined; };
  const names = [...new Set(data.features.flatMap((f) => Object.keys(f.tags)))];
  const first = data.features[0];
  const key = (n) => { const v = first.tags[n] ? at(first.tags[n]) : undefined; return typeof v === "number" ? -v : Infinity; };
  names.sort((a, b) => key(a) - key(b) || a.localeCompare(b));
  const top = new Map(data.features.map((source) => [source, Math.max(0, ...Object.values(source.tags)
    .map(at).filter((v) => typeof v === "number"))]));
  const table = el("table", {id: "feature-table"});
  const head = el("tr", {}, el("th", {text: "feature"}));
  for (const source of data.features) head.append(el("th", {text: source.label}));
  table.append(head);
  for (const feature of names) {
    const tr = el("tr", {}, el("th", {class: "row", text: feature}));
    for (const source of data.features) {
      const tag = source.tags[feature];
      const value = tag === undefined ? undefined : at(tag);
      const td = value === undefined ? el("td") : scalarCell(tag, epoch, value);
      if (typeof value === "number" && top.get(source) > 0) {  // a bar: the share of the largest
        const share = Math.max(0, (100 * value) / top.get(source)).toFixed(1);
        td.style.background = `linear-gradient(to left, var(--bar) ${share}%, transparent ${share}%)`;
      }
      tr.append(td);
    }
    table.append(tr);
  }
  return el("div", {class: "scroll"}, table);
}

export async function renderAttributions(main, run, context) {
  const memory = (context && context.memory) || {};
  const data = await getJSON("attributions", {run});
  const root = section("attributions", "Attributions");
  main.append(root);
  root.append(el("h3", {text: "Sanity check"}), sanityBadges(data));
  if (!data.epochs.length) {
    root.append(el("p", {class: "muted", text: "No attributions in this run (tbx.explain(..., data=...) logs them)."}));
    return;
  }
  if (data.columns.length && !data.columns.some((c) => c.label === "input")) {
    root.append(el("p", {class: "muted", text: "The inputs are not shown (privacy level of the run)."}));
  }
  const slider = el("input", {type: "range", min: "0", max: String(data.epochs.length - 1),
                              value: String(data.epochs.includes(memory.epoch) ? data.epochs.indexOf(memory.epoch)
                                           : data.epochs.length - 1),
                              id: "epoch-slider", "aria-label": "epoch"});
  const label = el("span", {id: "epoch-label"});
  root.append(el("div", {class: "legend"}, "Epoch ", slider, label,
    el("span", {text: `logged epochs: ${data.epochs.join(", ")}` + (data.columns.length
      ? " (TensorBoard keeps 10 images per tag unless started with --samples_per_plugin images=N)" : "")})));
  const body = el("div");
  root.append(body);
  function draw() {
    const epoch = data.epochs[Number(slider.value)];
    memory.epoch = epoch;
    label.textContent = String(epoch);
    body.textContent = "";
    if (data.columns.length) body.append(imageGrid(run, data, epoch));
    if (data.features.length) body.append(el("h3", {text: `Features at epoch ${epoch}`}), featureTable(data, epoch));
    const texts = [...data.texts].sort((a, b) => !a.tag.startsWith("rules/") - !b.tag.startsWith("rules/"));
    for (const text of texts) {
      const point = text.points.find((p) => p[0] === epoch);
      if (point) body.append(el("h3", {text: text.tag}), markdown(point[1], {"data-tag": text.tag, "data-epoch": String(epoch)}));
    }
  }
  slider.addEventListener("input", draw);
  draw();
}
