// Outputs: per dataset, the metrics across epochs; diagnostics; confusion and mistakes.
import {el, getJSON, imageURL, markdown, scalarCell, section} from "../util.js";

export async function renderOutputs(main, run, context) {
  const memory = (context && context.memory) || {};
  const data = await getJSON("outputs", {run});
  const root = section("outputs", "Outputs");
  main.append(root);
  if (!data.datasets.length) {
    root.append(el("p", {class: "muted", text: "No outputs in this run (tbx.explain(..., datasets={...}))."}));
    return;
  }
  const table = el("table", {id: "metrics-table"});
  const head = el("tr", {}, el("th", {text: "dataset"}), el("th", {text: "metric"}));
  for (const epoch of data.epochs) head.append(el("th", {text: `epoch ${epoch}`}));
  table.append(head);
  for (const dataset of data.datasets) {
    for (const metric of dataset.metrics) {
      const byStep = new Map(metric.points.map((p) => [p[0], p[1]]));
      const tr = el("tr", {}, el("th", {class: "row", text: dataset.name}), el("th", {class: "row", text: metric.metric}));
      for (const epoch of data.epochs) {
        tr.append(byStep.has(epoch) ? scalarCell(metric.tag, epoch, byStep.get(epoch)) : el("td"));
      }
      table.append(tr);
    }
  }
  root.append(el("div", {class: "scroll"}, table));
  const epochs = data.epochs;
  const choose = el("select", {"aria-label": "epoch", id: "outputs-epoch"});
  for (const epoch of epochs) choose.append(el("option", {value: String(epoch), text: `epoch ${epoch}`}));
  choose.value = String(epochs.includes(memory.epoch) ? memory.epoch : epochs[epochs.length - 1]);
  const detail = el("div");
  root.append(el("h3", {}, "At ", choose), detail);
  function draw() {
    const epoch = Number(choose.value);
    memory.epoch = epoch;
    detail.textContent = "";
    const diag = data.diagnostics.filter((d) => d[0] === epoch);
    if (diag.length) detail.append(el("h3", {text: "Diagnostics across datasets"}),
                                   markdown(diag[0][1], {id: "diagnostics"}));
    const row = el("div", {class: "detail"});
    for (const image of data.images) {
      if (!image.steps.includes(epoch)) continue;
      row.append(el("div", {}, el("h3", {text: image.tag}),
        el("img", {src: imageURL(run, image.tag, epoch, 0), alt: image.tag, "data-tag": image.tag,
                   "data-step": String(epoch)})));
    }
    detail.append(row);
    for (const text of data.mistakes || []) {
      const point = text.points.find((p) => p[0] === epoch);
      if (point) detail.append(el("h3", {text: text.tag}), markdown(point[1], {"data-tag": text.tag}));
    }
  }
  choose.addEventListener("change", draw);
  draw();
}
