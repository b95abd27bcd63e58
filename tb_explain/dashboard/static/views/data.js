// Data: training dynamics per example (TrainingDynamics): the data map, a
// sortable, filterable table of every tracked example, and a picked
// example's thumbnail or inputs and its probability over the epochs.
import {el, format, getJSON, ramp, section} from "../util.js";

// Rows drawn after each sort or filter (the rest are counted, never drawn).
const SHOWN = 200;
const COLUMNS = [
  ["dataset", "dataset"], ["index", "index"], ["label", "given"], ["predicted", "predicted"],
  ["confidence", "confidence"], ["variability", "variability"], ["correctness", "correctness"],
  ["aum", "AUM"], ["forgetting", "forgetting"], ["self_influence", "self-influence"],
  ["mislabel_score", "mislabel score"]];
const whole = (v) => (Number.isInteger(v) ? String(v) : format(v));
const SCORES = new Set(["confidence", "variability", "correctness", "aum", "forgetting",
                        "self_influence", "mislabel_score"]);
// A categorical palette (Tableau 10) for colouring by class.
const CLASSES = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#bab0ac"];

function css(name) {
  return getComputedStyle(document.body).getPropertyValue(name).trim();
}

// Sorts positions by a column: numbers (NaN last) or names.
function sorter(data, key, descending) {
  const values = key === "dataset" ? data.dataset.map((d) => data.datasets[d])
    : key === "index" ? data.index : key === "label" ? data.label
    : key === "predicted" ? data.predicted : data.scores[key];
  const sign = descending ? -1 : 1;
  return (a, b) => {
    const x = values[a], y = values[b];
    const xn = typeof x !== "number" || Number.isNaN(x), yn = typeof y !== "number" || Number.isNaN(y);
    if (typeof x === "string" && typeof y === "string" && x !== y) return sign * (x < y ? -1 : 1);
    if (xn !== yn) return xn ? 1 : -1;
    if (x !== y && !xn) return sign * (x - y);
    return a - b;
  };
}

export async function renderData(main, run, context) {
  const memory = (context && context.memory) || {};
  const data = await getJSON("dynamics", {run});
  const root = section("data", "Data");
  main.append(root);
  if (!data.examples) {
    root.append(el("p", {class: "muted", text: "No training dynamics in this run: add " +
      "tbx.TrainingDynamics(log_dir, (x_train, y_train)), or give tbx.explain a datasets " +
      "entry named \"train\" (privacy=\"strict\" logs no per-example data)."}));
    return;
  }
  const n = data.examples;
  const names = data.class_names;
  const labelName = (c) => (c >= 0 && c < names.length ? names[c] : String(c));
  const counts = data.regions.map((_, r) => data.region.filter((v) => v === r).length);
  root.append(el("p", {class: "muted", text: `${n} examples tracked over ${data.epochs.length} ` +
    `logged epochs (${data.epochs.join(", ")}); scores over all of them (the mislabel score: ` +
    "over those whose margins separate best), predicted class at " +
    `epoch ${data.epochs[data.epochs.length - 1]}. Regions: ` + data.regions.map((r, i) =>
      `${r} ${(100 * counts[i] / n).toFixed(1)}%`).join(", ") + "."}));

  // -- the noise matrix: which classes look mislabeled as which ---------------------
  const confusions = [];
  data.noise_counts.forEach((row, given) => row.forEach((count, likely) => {
    if (given !== likely && count > 0) confusions.push([count, given, likely]);
  }));
  confusions.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
  const noise = el("div", {id: "data-noise"}, el("h3", {text: "Likely label noise"}));
  if (!confusions.length) {
    noise.append(el("p", {class: "muted", text: "No example flagged: every given label is the " +
      "model's preferred class over the epochs its margins separate best."}));
  } else {
    const flagged = confusions.reduce((t, c) => t + c[0], 0);
    noise.append(el("p", {class: "muted", text: `${flagged} of ${n} examples flagged ` +
      "(margin below 0 on average and in at least half of the epochs whose margins separate " +
      "best); by given and likely label:"}),
      el("ul", {}, ...confusions.slice(0, 8).map(([count, given, likely]) =>
      el("li", {"data-given": String(given), "data-likely": String(likely),
                text: `${count} of the ${labelName(given)}s are probably ${labelName(likely)}s`}))));
    if (names.length <= 20) {
      const grid = el("table", {id: "data-noise-matrix", class: "noise"},
        el("tr", {}, el("th", {text: "given \\ likely"}),
           ...names.map((_, c) => el("th", {text: labelName(c)}))));
      data.noise_counts.forEach((row, given) => grid.append(el("tr", {},
        el("th", {class: "row", text: labelName(given)}),
        ...row.map((count, likely) => el("td", {class: given === likely ? "muted" : count ? "hot" : "",
                                                text: String(count)})))));
      noise.append(el("details", {}, el("summary", {text: "every class"}), grid));
    }
  }
  root.append(noise);

  // -- the data map -----------------------------------------------------------------
  const W = 480, H = 360, PAD = 36;
  const canvas = el("canvas", {width: String(W), height: String(H), id: "data-map",
                               "aria-label": "data map"});
  const colourBy = el("select", {"aria-label": "colour by", id: "data-colour"},
    el("option", {value: "correctness", text: "correctness"}),
    el("option", {value: "class", text: "given class"}));
  colourBy.value = memory.dataColour || "correctness";
  const tip = el("div", {class: "tip", id: "data-tip", hidden: ""});
  const mapBox = el("div", {class: "map"}, el("label", {}, "Colour by ", colourBy), canvas, tip,
    el("p", {class: "muted", text: "x: variability (std of the given label's probability over " +
      "epochs), y: confidence (its mean). Hover a point to see the example; click to pick it."}));
  const picked = el("div", {id: "data-picked", class: "picked"});
  root.append(el("div", {class: "detail"}, mapBox, picked));
  const xOf = (v) => PAD + Math.min(v, 0.5) / 0.5 * (W - PAD - 8);
  const yOf = (c) => 8 + (1 - c) * (H - PAD - 8);
  const conf = data.scores.confidence, vari = data.scores.variability;
  const corr = data.scores.correctness;
  function drawMap() {
    const g = canvas.getContext("2d");
    g.fillStyle = css("--bg") || "#fff";
    g.fillRect(0, 0, W, H);
    g.strokeStyle = css("--muted") || "#888";
    g.fillStyle = css("--muted") || "#888";
    g.font = "11px sans-serif";
    g.strokeRect(PAD, 8, W - PAD - 8, H - PAD - 8);
    const ax = xOf(data.thresholds.variability), ey = yOf(data.thresholds.confidence);
    g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(ax, 8); g.lineTo(ax, H - PAD); g.moveTo(PAD, ey); g.lineTo(ax, ey);
    g.stroke();
    g.setLineDash([]);
    for (const t of [0, 0.25, 0.5, 0.75, 1]) g.fillText(String(t), 4, yOf(t) + 4);
    for (const t of [0, 0.1, 0.2, 0.3, 0.4, 0.5]) g.fillText(String(t), xOf(t) - 6, H - PAD + 14);
    g.fillText("variability", W / 2 - 24, H - 6);
    g.fillText("easy", PAD + 4, 20);
    g.fillText("hard", PAD + 4, H - PAD - 6);
    g.fillText("ambiguous", ax + 4, 20);
    const byClass = colourBy.value === "class";
    const order = [...Array(n).keys()].sort((a, b) => corr[b] - corr[a]);
    for (const i of order) {
      g.fillStyle = byClass ? CLASSES[data.label[i] % CLASSES.length] : ramp(corr[i]);
      g.fillRect(xOf(vari[i]) - 1.5, yOf(conf[i]) - 1.5, 3, 3);
    }
    if (memory.dataPicked !== undefined && memory.dataPicked < n) {
      const i = memory.dataPicked;
      g.strokeStyle = css("--accent") || "#f57c00";
      g.lineWidth = 2;
      g.strokeRect(xOf(vari[i]) - 5, yOf(conf[i]) - 5, 10, 10);
      g.lineWidth = 1;
    }
  }
  // Nearest point under the pointer: a grid of 8-pixel cells.
  const grid = new Map();
  for (let i = 0; i < n; i++) {
    const key = `${Math.floor(xOf(vari[i]) / 8)},${Math.floor(yOf(conf[i]) / 8)}`;
    if (!grid.has(key)) grid.set(key, []);
    grid.get(key).push(i);
  }
  function nearest(x, y) {
    let best = -1, dist = 36;
    const cx = Math.floor(x / 8), cy = Math.floor(y / 8);
    for (let dx = -1; dx <= 1; dx++) {
      for (let dy = -1; dy <= 1; dy++) {
        for (const i of grid.get(`${cx + dx},${cy + dy}`) || []) {
          const d = (xOf(vari[i]) - x) ** 2 + (yOf(conf[i]) - y) ** 2;
          if (d < dist) { dist = d; best = i; }
        }
      }
    }
    return best;
  }
  const where = (i) => `${data.datasets[data.dataset[i]]}[${data.index[i]}]`;
  function describe(i) {
    return `${where(i)}: given ${labelName(data.label[i])}, predicted ` +
      `${labelName(data.predicted[i])}; confidence ${format(conf[i])}, variability ` +
      `${format(vari[i])}, mislabel score ${format(data.scores.mislabel_score[i])}` +
      (data.inputs ? `\n${data.inputs[i]}` : "");
  }
  canvas.addEventListener("mousemove", (event) => {
    const box = canvas.getBoundingClientRect();
    const i = nearest(event.clientX - box.left, event.clientY - box.top);
    if (i < 0) { tip.hidden = true; return; }
    tip.hidden = false;
    tip.replaceChildren();
    if (data.thumbnails) {
      tip.append(el("img", {src: `./thumbnail?${new URLSearchParams({run, i})}`,
                            alt: where(i)}));
    }
    tip.append(el("div", {text: describe(i)}));
    tip.style.left = `${event.clientX - box.left + 12}px`;
    tip.style.top = `${event.clientY - box.top + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    const i = nearest(event.clientX - box.left, event.clientY - box.top);
    if (i >= 0) pick(i);
  });
  colourBy.addEventListener("change", () => { memory.dataColour = colourBy.value; drawMap(); });

  // -- the picked example ------------------------------------------------------------
  function curve(i, probability) {
    const w = 320, h = 140, left = 34, bottom = 20;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(h));
    svg.setAttribute("id", "data-curve");
    const epochs = data.epochs;
    const span = Math.max(1, epochs[epochs.length - 1] - epochs[0]);
    const px = (e) => left + (e - epochs[0]) / span * (w - left - 10);
    const py = (p) => 6 + (1 - p) * (h - bottom - 6);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    add("rect", {x: left, y: 6, width: w - left - 10, height: h - bottom - 6, fill: "none",
                 stroke: "currentColor", "stroke-opacity": 0.3});
    for (const t of [0, 0.5, 1]) add("text", {x: 4, y: py(t) + 4, "font-size": 10,
                                               fill: "currentColor"}, String(t));
    add("text", {x: left, y: h - 4, "font-size": 10, fill: "currentColor"}, `epoch ${epochs[0]}`);
    add("text", {x: w - 60, y: h - 4, "font-size": 10, fill: "currentColor"},
        `epoch ${epochs[epochs.length - 1]}`);
    const points = epochs.map((e, k) => `${px(e)},${py(probability[k])}`).join(" ");
    add("polyline", {points, fill: "none", stroke: css("--accent") || "#f57c00",
                     "stroke-width": 2});
    epochs.forEach((e, k) => add("circle", {cx: px(e), cy: py(probability[k]), r: 2.5,
      fill: css("--accent") || "#f57c00", "data-epoch": e, "data-value": probability[k]}));
    return svg;
  }
  function pick(i) {
    memory.dataPicked = i;
    picked.replaceChildren(el("h3", {text: `Example ${where(i)}`}));
    if (data.thumbnails) {
      picked.append(el("img", {class: "thumb", src: `./thumbnail?${new URLSearchParams({run, i})}`,
                               alt: where(i)}));
    } else if (data.inputs) {
      picked.append(el("pre", {class: "text", text: data.inputs[i]}));
    } else {
      picked.append(el("p", {class: "muted", text: "Inputs not logged (privacy)."}));
    }
    const table = el("table", {}, el("tr", {}, el("th", {class: "row", text: "given"}),
      el("td", {text: labelName(data.label[i])})), el("tr", {}, el("th", {class: "row",
      text: "predicted"}), el("td", {text: labelName(data.predicted[i])})), el("tr", {},
      el("th", {class: "row", text: "likely label"}), el("td", {text: labelName(data.likely[i])})));
    for (const [key, label] of COLUMNS) {
      if (!SCORES.has(key)) continue;
      table.append(el("tr", {}, el("th", {class: "row", text: label}),
        el("td", {"data-index": String(i), "data-score": key,
                  "data-value": String(data.scores[key][i])}, whole(data.scores[key][i]))));
    }
    const curveBox = el("div", {class: "muted", text: "loading…"});
    picked.append(table, el("h3", {text: "Probability of the given label"}), curveBox);
    getJSON("curve", {run, i}).then((c) => {  // one example's curve, on demand
      if (memory.dataPicked === i) curveBox.replaceChildren(curve(i, c.probability));
    }).catch((e) => { curveBox.textContent = String(e.message || e); });
    drawMap();
    for (const tr of body.querySelectorAll("tr.picked")) tr.classList.remove("picked");
    const row = body.querySelector(`tr[data-index="${i}"]`);
    if (row) row.classList.add("picked");
  }

  // -- the table ----------------------------------------------------------------------
  const datasetFilter = el("select", {"aria-label": "dataset", id: "data-dataset"},
    el("option", {value: "", text: "every dataset"}),
    ...data.datasets.map((d, k) => el("option", {value: String(k), text: d})));
  const labelFilter = el("select", {"aria-label": "given label", id: "data-label"},
    el("option", {value: "", text: "every label"}),
    ...names.map((name, c) => el("option", {value: String(c), text: name})));
  const regionFilter = el("select", {"aria-label": "region", id: "data-region"},
    el("option", {value: "", text: "every region"}),
    ...data.regions.map((r, k) => el("option", {value: String(k), text: r})));
  const wrongOnly = el("input", {type: "checkbox", id: "data-wrong"});
  const minScore = el("input", {type: "number", step: "0.1", id: "data-min-score",
                                placeholder: "min mislabel score", "aria-label": "min mislabel score"});
  const status = el("span", {class: "muted", id: "data-status"});
  root.append(el("div", {class: "controls"}, datasetFilter, labelFilter, regionFilter,
    el("label", {}, wrongOnly, " predicted ≠ given"), minScore, status));
  const table = el("table", {id: "data-table"});
  const head = el("tr");
  const sort = {key: memory.dataSort || "mislabel_score", descending: memory.dataDescending ?? true};
  for (const [key, label] of COLUMNS) {
    head.append(el("th", {"data-key": key, class: "sortable", text: label, onclick: () => {
      sort.descending = sort.key === key ? !sort.descending : SCORES.has(key);
      sort.key = key;
      memory.dataSort = key;
      memory.dataDescending = sort.descending;
      update();
    }}));
  }
  const body = el("tbody");
  table.append(el("thead", {}, head), body);
  root.append(el("div", {class: "scroll"}, table));
  const all = Int32Array.from({length: n}, (_, i) => i);
  function update() {
    const start = performance.now();
    const d = datasetFilter.value === "" ? -1 : Number(datasetFilter.value);
    const c = labelFilter.value === "" ? -1 : Number(labelFilter.value);
    const r = regionFilter.value === "" ? -1 : Number(regionFilter.value);
    const low = minScore.value === "" ? -Infinity : Number(minScore.value);
    const wrong = wrongOnly.checked;
    const score = data.scores.mislabel_score;
    const kept = all.filter((i) => (d < 0 || data.dataset[i] === d) && (c < 0 || data.label[i] === c)
      && (r < 0 || data.region[i] === r) && (!wrong || data.predicted[i] !== data.label[i])
      && !(score[i] < low));
    const rows = Array.from(kept).sort(sorter(data, sort.key, sort.descending));
    body.replaceChildren();
    for (const i of rows.slice(0, SHOWN)) {
      const tr = el("tr", {"data-index": String(i), onclick: () => pick(i)});
      tr.append(el("th", {class: "row", text: data.datasets[data.dataset[i]]}),
                el("td", {text: String(data.index[i])}),
                el("td", {text: labelName(data.label[i])}),
                el("td", {text: labelName(data.predicted[i]),
                          class: data.predicted[i] !== data.label[i] ? "differs" : ""}));
      for (const [key] of COLUMNS.slice(4)) {
        const value = data.scores[key][i];
        tr.append(el("td", {"data-index": String(i), "data-score": key,
                            "data-value": String(value)}, whole(value)));
      }
      body.append(tr);
    }
    for (const th of head.children) {
      th.setAttribute("aria-sort", th.dataset.key === sort.key
        ? (sort.descending ? "descending" : "ascending") : "none");
    }
    const ms = performance.now() - start;
    table.dataset.ms = ms.toFixed(1);
    table.dataset.rows = String(rows.length);
    status.textContent = `${rows.length} of ${n} examples` +
      (rows.length > SHOWN ? `, the first ${SHOWN} shown` : "") + ` (${ms.toFixed(0)} ms)`;
  }
  for (const control of [datasetFilter, labelFilter, regionFilter, wrongOnly]) {
    control.addEventListener("change", update);
  }
  minScore.addEventListener("input", update);
  drawMap();
  update();
  pick(memory.dataPicked !== undefined && memory.dataPicked < n ? memory.dataPicked
    : Number(body.firstChild ? body.firstChild.dataset.index : 0));
}
