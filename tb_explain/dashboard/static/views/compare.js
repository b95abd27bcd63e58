// Compare: many runs overlaid (training curves, metrics per dataset, the
// hyperparameters that differ, one weight histogram), then two runs, or two
// epochs of one, compared: linear CKA between their layers, gradient health
// ratios per layer and epoch, and the examples one gets right and the other wrong.
import {el, getJSON, format, section, ramp, lineChart} from "../util.js";

const MAX_RUNS = 50;

// One colour per run: hues spread by the golden angle (distinct for 50 runs).
export function runColor(i) {
  return `hsl(${Math.round((i * 137.508) % 360)}, 62%, ${i % 2 ? 42 : 55}%)`;
}

function pairs(name, values) { return values.map((v) => [name, v]); }

export async function renderCompare(main, run, context) {
  const memory = context.memory.compare = context.memory.compare || {};
  const all = context.runs.map((r) => r.run);
  if (!memory.runs) memory.runs = all.slice(-MAX_RUNS);
  memory.runs = memory.runs.filter((r) => all.includes(r));
  const root = section("compare", "Compare runs");
  main.append(root);
  const picker = el("div", {id: "compare-runs", class: "run-picker"});
  const many = el("div", {id: "compare-many"});
  const two = el("div", {id: "compare-two"});
  root.append(el("p", {class: "muted", text: `Tick up to ${MAX_RUNS} runs to overlay; ` +
    "below, pick two runs (or one run at two epochs) to compare what they learned."}),
    picker, many, two);
  function drawPicker() {
    picker.textContent = "";
    all.forEach((name) => {
      const box = el("input", {type: "checkbox", "aria-label": `overlay ${name}`});
      box.checked = memory.runs.includes(name);
      box.addEventListener("change", () => {
        memory.runs = all.filter((r) => (r === name ? box.checked : memory.runs.includes(r)));
        if (memory.runs.length > MAX_RUNS) memory.runs = memory.runs.slice(-MAX_RUNS);
        drawPicker(); drawMany();
      });
      const k = memory.runs.indexOf(name);
      picker.append(el("label", {class: "run-choice"}, box,
        el("span", {class: "swatch", style: k >= 0 ? `background: ${runColor(k)}` : ""}), name));
    });
  }
  async function drawMany() {
    const box = el("div");
    many.replaceChildren(box);
    if (!memory.runs.length) return;
    const params = pairs("run", memory.runs);
    if (memory.histogram) params.push(["tag", memory.histogram]);
    if (memory.histogram && memory.histogramStep !== undefined) params.push(["step", memory.histogramStep]);
    let data;
    try {
      data = await getJSON("overlay", params);
    } catch (error) {
      if (!memory.histogram) throw error;
      memory.histogram = undefined; memory.histogramStep = undefined;  // not shared by these runs
      return drawMany();
    }
    const color = Object.fromEntries(data.runs.map((r, k) => [r, runColor(k)]));
    const charts = el("div", {class: "charts"});
    for (const curve of ["train", "validation"]) {
      const series = data.runs.map((r) => ({name: r, color: color[r], points: data.curves[r][curve]}))
        .filter((s) => s.points.length);
      if (series.length) charts.append(el("figure", {}, el("figcaption", {text: `${curve} loss`}),
        lineChart(series, {id: `overlay-${curve}`, label: `${curve} loss per run`, legend: false, width: 420})));
    }
    for (const [tag, perRun] of Object.entries(data.metrics)) {
      const series = data.runs.filter((r) => perRun[r]).map((r) => ({name: r, color: color[r], points: perRun[r]}));
      charts.append(el("figure", {"data-tag": tag}, el("figcaption", {text: tag.replace(/^outputs\//, "")}),
        lineChart(series, {label: tag, legend: false, width: 420})));
    }
    box.append(el("h3", {text: "Training curves and metrics"}), charts);
    box.append(hparamTable(data, color));
    box.append(histogramOverlay(data, color));
  }
  function hparamTable(data, color) {
    const names = [...new Set(data.runs.flatMap((r) => Object.keys(data.hparams[r] || {})))].sort();
    const differs = (h) => new Set(data.runs.map((r) => JSON.stringify((data.hparams[r] || {})[h]))).size > 1;
    if (memory.onlyDiffering === undefined) memory.onlyDiffering = true;
    const shown = names.filter((h) => !memory.onlyDiffering || differs(h));
    const only = el("input", {type: "checkbox", id: "only-differing"});
    only.checked = memory.onlyDiffering;
    const wrap = el("div", {id: "compare-hparams"});
    only.addEventListener("change", () => { memory.onlyDiffering = only.checked; wrap.replaceWith(hparamTable(data, color)); });
    const table = el("table", {id: "hparams-table"});
    const head = el("tr", {}, el("th", {text: "run"}));
    for (const h of shown) head.append(el("th", {text: h, class: differs(h) ? "differs" : ""}));
    table.append(head);
    for (const r of data.runs) {
      const tr = el("tr", {"data-run": r}, el("th", {class: "row"}, el("span", {class: "swatch", style: `background: ${color[r]}`}), r));
      for (const h of shown) {
        const v = (data.hparams[r] || {})[h];
        tr.append(el("td", {text: v === undefined ? "" : typeof v === "number" ? format(v) : String(v),
                            title: v === undefined ? "" : String(v)}));
      }
      table.append(tr);
    }
    wrap.append(el("h3", {text: "Hyperparameters"}),
      el("label", {}, only, ` only what differs (${names.filter(differs).length} of ${names.length})`),
      el("div", {class: "scroll"}, table));
    return wrap;
  }
  function histogramOverlay(data, color) {
    const wrap = el("div", {id: "compare-histogram"}, el("h3", {text: "A weight histogram, overlaid"}));
    const tags = Object.keys(data.histograms);
    if (!tags.length) {
      wrap.append(el("p", {class: "muted", text: "No weight histogram logged by the ticked runs (WeightHistograms)."}));
      return wrap;
    }
    const choose = el("select", {"aria-label": "histogram"});
    choose.append(el("option", {value: "", text: "choose a weight"}));
    // weights most runs share first (same architecture), then by name
    tags.sort((x, y) => data.histograms[y] - data.histograms[x] || x.localeCompare(y));
    for (const t of tags) choose.append(el("option", {value: t,
      text: `${t.replace(/^weights\//, "")} (${data.histograms[t]} of ${data.runs.length} runs)`}));
    choose.value = memory.histogram || "";
    choose.addEventListener("change", () => { memory.histogram = choose.value || undefined; memory.histogramStep = undefined; drawMany(); });
    wrap.append(el("label", {}, "Weight ", choose));
    const h = data.histogram;
    if (!h) return wrap;
    const step = el("select", {"aria-label": "histogram epoch"});
    for (const s of h.steps) step.append(el("option", {value: String(s), text: String(s)}));
    step.value = String(h.step);
    step.addEventListener("change", () => { memory.histogramStep = step.value; drawMany(); });
    wrap.append(el("label", {}, " at epoch ", step));
    const series = data.runs.filter((r) => h.runs[r]).map((r) => ({name: r, color: color[r], points: h.runs[r].map(([left, right, count]) => {
      const width = right - left;
      return [(left + right) / 2, width > 0 ? count / width : count];
    })}));
    wrap.append(lineChart(series, {id: "overlay-histogram", label: `${h.tag} at epoch ${h.step}`, legend: false,
                                   width: 640, xLabel: "value"}));
    return wrap;
  }
  drawPicker();
  await drawMany();
  await drawTwo(two, run, all, memory);
}

async function drawTwo(two, run, all, memory) {
  // Each draw fills its own box: a slower earlier draw never adds to a newer one.
  const box = el("div");
  two.replaceChildren(box);
  if (!memory.a || !all.includes(memory.a)) memory.a = run || all[0];
  if (!memory.b || !all.includes(memory.b)) memory.b = all.find((r) => r !== memory.a) || memory.a;
  const selectA = el("select", {"aria-label": "run A", id: "compare-a"});
  const selectB = el("select", {"aria-label": "run B", id: "compare-b"});
  for (const name of all) {
    selectA.append(el("option", {value: name, text: name}));
    selectB.append(el("option", {value: name, text: name}));
  }
  selectA.value = memory.a; selectB.value = memory.b;
  const epochA = el("input", {type: "number", min: "0", placeholder: "auto", "aria-label": "epoch of A", id: "compare-epoch"});
  const epochB = el("input", {type: "number", min: "0", placeholder: "auto", "aria-label": "epoch of B", id: "compare-epoch-b"});
  epochA.value = memory.epoch || ""; epochB.value = memory.epochB || "";
  const redraw = () => {
    memory.a = selectA.value; memory.b = selectB.value; memory.epoch = epochA.value; memory.epochB = epochB.value;
    drawTwo(two, run, all, memory);
  };
  for (const input of [selectA, selectB, epochA, epochB]) input.addEventListener("change", redraw);
  box.append(el("h3", {text: "Two runs, or two epochs of one"}),
    el("div", {class: "controls"}, el("label", {}, "A ", selectA, " epoch ", epochA),
       el("label", {}, "B ", selectB, " epoch ", epochB),
       el("span", {class: "muted", text: "(B = A: two epochs of one run; blank epoch: the last both logged)"})));
  const params = {a: memory.a, b: memory.b};
  if (memory.epoch !== "" && memory.epoch !== undefined) params.epoch = memory.epoch;
  if (memory.epochB !== "" && memory.epochB !== undefined) params.epoch_b = memory.epochB;
  let data;
  try {
    data = await getJSON("compare", params);
  } catch (error) {
    box.append(el("p", {class: "error", id: "compare-error", text: error.message}));
    return;
  }
  const title = data.a === data.b ? `${data.a}: epoch ${data.epoch} (A) vs epoch ${data.epoch_b} (B)`
    : `${data.a} at epoch ${data.epoch} (A) vs ${data.b} at epoch ${data.epoch_b} (B)`;
  box.append(el("p", {id: "compare-title", text: title}));
  box.append(ckaMatrix(data));
  if (data.a === data.b) box.append(await stoppedChanging(data.a));
  box.append(await healthRatios(data));
  box.append(disagreementTables(data));
  box.append(await attributionPair(data, params, memory));
  if (data.notes.length) {
    const list = el("ul", {class: "muted", id: "compare-notes"});
    for (const note of data.notes) list.append(el("li", {text: note}));
    box.append(el("h4", {text: "Not compared"}), list);
  }
}

function ckaMatrix(data) {
  const wrap = el("div", {id: "compare-cka"}, el("h4", {text: "Representations: linear CKA on the probe"}));
  if (!data.cka) {
    wrap.append(el("p", {class: "muted", text: "No Gram matrices at these epochs (see below)."}));
    return wrap;
  }
  wrap.append(el("p", {class: "muted", text: `${data.cka.n} probe rows; 1: the two layers represent the ` +
    "probe alike (up to rotation and scale), 0: unrelated. Rows: A's layers; columns: B's."}));
  const table = el("table", {class: "matrix", id: "cka-table"});
  const head = el("tr", {}, el("th", {text: "A \\ B"}));
  for (const layer of data.cka.layers_b) head.append(el("th", {text: layer, class: "vertical-head", title: layer}));
  table.append(head);
  data.cka.layers_a.forEach((layer, i) => {
    const tr = el("tr", {}, el("th", {class: "row", text: layer}));
    data.cka.matrix[i].forEach((value, j) => {
      const number = typeof value === "number";
      tr.append(el("td", {"data-value": String(value), "data-a": layer, "data-b": data.cka.layers_b[j],
        title: `CKA(${layer} of A, ${data.cka.layers_b[j]} of B) = ${value}`,
        style: number ? `background: ${ramp(value)}; color: ${value > 0.6 ? "#000" : "#fff"}` : "",
        text: number ? value.toFixed(2) : "—"}));
    });
    table.append(tr);
  });
  wrap.append(el("div", {class: "scroll"}, table));
  return wrap;
}

// Two epochs of one run: each layer's CKA with itself at the previous logged
// epoch, every epoch (near 1: the layer stopped changing).
async function stoppedChanging(run) {
  const wrap = el("div", {id: "compare-stability"}, el("h4", {text: "When each layer stopped changing"}));
  let h;
  try { h = await getJSON("health", {run, signal: "cka_previous"}); } catch (error) { return wrap; }
  if (!h.rows.length) {
    wrap.append(el("p", {class: "muted", text: "No CKA between consecutive epochs (ActivationImages with data, two events or more)."}));
    return wrap;
  }
  wrap.append(el("p", {class: "muted", text: "CKA of each layer's outputs on the probe with its outputs at the previous logged epoch: yellow (1), the representation no longer changes."}));
  const table = el("table", {class: "matrix", id: "stability-table"});
  const head = el("tr", {}, el("th", {text: "layer"}));
  for (const e of h.epochs) head.append(el("th", {text: String(e)}));
  table.append(head);
  for (const row of h.rows) {
    const tr = el("tr", {"data-layer": row.name}, el("th", {class: "row", text: row.name}));
    row.values.forEach((v, k) => tr.append(el("td", typeof v === "number" ? {"data-tag": row.tag, "data-epoch": String(h.epochs[k]),
      "data-value": String(v), title: `${row.tag} @ epoch ${h.epochs[k]}: ${v}`, style: `background: ${ramp(v)}; color: ${v > 0.6 ? "#000" : "#fff"}`,
      text: v.toFixed(2)} : {text: ""})));
    table.append(tr);
  }
  wrap.append(el("div", {class: "scroll"}, table));
  return wrap;
}

async function healthRatios(data) {
  const wrap = el("div", {id: "compare-health"}, el("h4", {text: "Gradient health: B's gradient norm over A's"}));
  if (!Object.keys(data.health).length) {
    wrap.append(el("p", {class: "muted", text: "No layer gradient norms in both runs (GradientNorms)."}));
    return wrap;
  }
  let a, b;
  try {
    [a, b] = await Promise.all([getJSON("health", {run: data.a}), data.a === data.b ? null : getJSON("health", {run: data.b})]);
  } catch (error) {
    a = null;
  }
  b = b || a;
  const table = el("table", {class: "matrix", id: "health-ratio-table"});
  const shade = (ratio) => {  // log2 ratio: blue below 1, orange above, white at 1
    if (typeof ratio !== "number" || !(ratio > 0)) return "";
    const t = Math.max(-1, Math.min(1, Math.log2(ratio) / 3));
    return t >= 0 ? `background: rgba(245, 124, 0, ${t.toFixed(2)})` : `background: rgba(26, 115, 232, ${(-t).toFixed(2)})`;
  };
  if (a && data.a !== data.b) {  // every epoch both logged, beside the chosen pair
    const epochs = a.epochs.filter((e) => b.epochs.includes(e));
    const head = el("tr", {}, el("th", {text: "layer"}), el("th", {text: `A@${data.epoch} / B@${data.epoch_b}`}));
    for (const e of epochs) head.append(el("th", {text: String(e)}));
    table.append(head);
    const rowsB = Object.fromEntries(b.rows.map((r) => [r.name, r]));
    for (const [layer, ratio] of Object.entries(data.health)) {
      const tr = el("tr", {"data-layer": layer}, el("th", {class: "row", text: layer}),
        el("td", {"data-value": String(ratio), style: shade(ratio), text: format(ratio)}));
      const rowA = a.rows.find((r) => r.name === layer), rowB = rowsB[layer];
      for (const e of epochs) {
        const va = rowA && rowA.values[a.epochs.indexOf(e)], vb = rowB && rowB.values[b.epochs.indexOf(e)];
        const ratioE = typeof va === "number" && typeof vb === "number" && va ? vb / va : null;
        tr.append(el("td", {style: shade(ratioE), title: `epoch ${e}: ${ratioE}`, text: ratioE === null ? "" : format(ratioE)}));
      }
      table.append(tr);
    }
    wrap.append(el("p", {class: "muted", text: "First column: at the chosen epochs; then at every epoch both logged. " +
      "Orange: B's gradients larger; blue: smaller."}));
  } else {
    table.append(el("tr", {}, el("th", {text: "layer"}), el("th", {text: "ratio"})));
    for (const [layer, ratio] of Object.entries(data.health)) {
      table.append(el("tr", {"data-layer": layer}, el("th", {class: "row", text: layer}),
        el("td", {"data-value": String(ratio), style: shade(ratio), text: format(ratio)})));
    }
  }
  wrap.append(el("div", {class: "scroll"}, table));
  return wrap;
}

// Both runs' attributions of one probe sample, side by side, and their rank correlation.
async function attributionPair(data, params, memory) {
  const wrap = el("div", {id: "compare-attributions"}, el("h4", {text: "Attributions: what each run looks at"}));
  const tags = Object.keys(data.attributions);
  if (!tags.length) {
    wrap.append(el("p", {class: "muted", text: "No attribution of the same probe in both runs at these epochs (Attributions, IntegratedGradients)."}));
    return wrap;
  }
  if (!tags.includes(memory.attribution)) memory.attribution = tags[0];
  const choose = el("select", {"aria-label": "attribution", id: "compare-attribution"});
  for (const t of tags) {
    const values = data.attributions[t].filter((v) => typeof v === "number");
    const mean = values.length ? values.reduce((x, y) => x + y, 0) / values.length : NaN;
    choose.append(el("option", {value: t, text: `${t.replace(/^attributions\//, "")} (mean ρ ${format(mean)})`}));
  }
  choose.value = memory.attribution;
  let body;
  try {
    body = await getJSON("compare", {...params, attribution: memory.attribution, sample: memory.sample || 0});
  } catch (error) {
    memory.sample = 0;
    body = await getJSON("compare", {...params, attribution: memory.attribution, sample: 0});
  }
  const maps = body.attribution_maps;
  const sample = el("select", {"aria-label": "probe sample", id: "compare-sample"});
  for (let k = 0; k < maps.samples; k++) sample.append(el("option", {value: String(k), text: `sample ${k}`}));
  sample.value = String(maps.sample);
  const panel = el("div", {class: "heads"});
  const redraw = async () => {
    memory.attribution = choose.value; memory.sample = Number(sample.value);
    wrap.replaceWith(await attributionPair(data, params, memory));
  };
  choose.addEventListener("change", () => { memory.sample = 0; redraw(); });
  sample.addEventListener("change", redraw);
  wrap.append(el("div", {class: "controls"}, el("label", {}, "Attribution ", choose), el("label", {}, " probe ", sample),
    el("span", {id: "compare-spearman", "data-value": String(maps.spearman),
                text: `Spearman rank correlation ${format(maps.spearman)}`})));
  for (const [key, run, epoch] of [["a", data.a, data.epoch], ["b", data.b, data.epoch_b]]) {
    panel.append(el("figure", {}, el("figcaption", {text: `${key.toUpperCase()}: ${run} @ epoch ${epoch}`}), mapCanvas(maps[key])));
  }
  wrap.append(panel);
  return wrap;
}

// A map of values (rows of numbers) as a canvas, each map scaled by its own
// largest magnitude; one row (a table's features) as a strip.
function mapCanvas(rows) {
  const h = rows.length, w = rows[0].length;
  const canvas = el("canvas", {width: String(w), height: String(h)});
  const scale = Math.max(1, Math.floor(192 / Math.max(h, w)));
  canvas.style.width = `${w * scale}px`; canvas.style.height = `${h * scale}px`;
  const values = rows.flat().filter((v) => typeof v === "number");
  const low = Math.min(...values), high = Math.max(...values);
  const signed = low < 0;
  const top = Math.max(Math.abs(low), Math.abs(high)) || 1;
  const ctx = canvas.getContext("2d");
  rows.forEach((row, i) => row.forEach((v, j) => {
    if (typeof v !== "number") { ctx.fillStyle = "magenta"; }
    else if (signed) { const t = v / top; ctx.fillStyle = t >= 0 ? `rgba(217, 48, 37, ${t})` : `rgba(26, 115, 232, ${-t})`; }
    else { ctx.fillStyle = ramp(high > low ? (v - low) / (high - low) : 0); }
    ctx.fillRect(j, i, 1, 1);
  }));
  return canvas;
}

function disagreementTables(data) {
  const wrap = el("div", {id: "compare-disagreement"}, el("h4", {text: "Where they disagree"}));
  const names = Object.keys(data.disagreement);
  if (!names.length) {
    wrap.append(el("p", {class: "muted", text: "No per-example predictions in both runs at these epochs (Predictions)."}));
    return wrap;
  }
  for (const name of names) {
    const d = data.disagreement[name];
    wrap.append(el("p", {"data-dataset": name, text: `${name}: ${d.n} rows; A right and B wrong: ${d.a_only.length}; ` +
      `B right and A wrong: ${d.b_only.length}; both wrong: ${d.both_wrong.length}.`}));
    const rows = data.examples[name] || [];
    if (!rows.length) continue;
    const table = el("table", {class: "disagreement", "data-dataset": name});
    table.append(el("tr", {}, el("th", {text: "row"}), el("th", {text: "input"}), el("th", {text: "right"}),
                    el("th", {text: "A predicts"}), el("th", {text: "B predicts"})));
    for (const r of rows) {
      const thumb = r.thumbnail === null ? el("span", {class: "muted", text: "—"})
        : el("img", {class: "thumb", alt: `row ${r.i}`, src: `./thumbnail?${new URLSearchParams({run: data.a, i: r.thumbnail})}`});
      table.append(el("tr", {"data-row": String(r.i), "data-side": r.side}, el("td", {text: String(r.i)}), el("td", {}, thumb),
        el("td", {text: r.side === "a_only" ? "A only" : "B only"}),
        el("td", {class: r.side === "a_only" ? "good" : "bad", text: r.a}),
        el("td", {class: r.side === "b_only" ? "good" : "bad", text: r.b})));
    }
    wrap.append(el("div", {class: "scroll short"}, table));
  }
  return wrap;
}
