// Health: layers (rows, model order) by logged epochs (columns) of one signal.
import {el, getJSON, imageURL, lineChart, ramp, section, format} from "../util.js";

// Colour levels of the matrix: one CSS class per level is far cheaper than an
// inline style per cell (a run of 300 layers by 100 epochs has 30,000).
const LEVELS = 64;
// Rows per block of the matrix, and a row's height in pixels (style.css).
const BLOCK_ROWS = 20, ROW_PX = 21;

function palette() {
  if (document.getElementById("health-palette")) return;
  let css = ".matrix td.bad { background: #ff00ff; color: #fff; }\n";
  for (let i = 0; i < LEVELS; i++) {
    const t = i / (LEVELS - 1);
    css += `.matrix td.c${i} { background: ${ramp(t)}; color: ${t > 0.6 ? "#000" : "#fff"}; }\n`;
  }
  document.head.append(el("style", {id: "health-palette", text: css}));
}

function scaler(values, scale) {
  const finite = values.filter((v) => typeof v === "number" && (scale !== "log" || v > 0));
  if (!finite.length) return {at: () => 0.5, low: 0, high: 0};
  if (scale === "linear") return {at: (v) => v, low: 0, high: 1};
  const logs = finite.map(Math.log10);
  const low = logs.reduce((a, b) => Math.min(a, b)), high = logs.reduce((a, b) => Math.max(a, b));
  return {at: (v) => (v > 0 ? (high > low ? (Math.log10(v) - low) / (high - low) : 0.5) : 0),
          low: 10 ** low, high: 10 ** high};
}

export async function renderHealth(main, run, context) {
  const memory = (context && context.memory) || {};
  const signal = memory.signal || "gradient_norm";
  const data = await getJSON("health", {run, signal});
  const root = section("health", `Health of ${run}`);
  root.querySelector("h2").textContent = "Health of ";
  root.querySelector("h2").append(el("code", {text: run}));
  main.append(root);
  const curves = data.curves || {};
  if ((curves.train || []).length || (curves.validation || []).length) {
    root.append(el("h3", {text: "Loss"}), lineChart([
      {name: "train", points: curves.train || [], color: "#1f77b4"},
      {name: "validation", points: curves.validation || [], color: "#f57c00"},
    ], {id: "health-curves", label: `${curves.tag} per epoch, train and validation`}));
  } else {
    root.append(el("p", {class: "muted", id: "health-curves",
                         text: "No loss curves in this run (tbx.explain or tbx.TrainingCurves writes them)."}));
  }
  const choose = el("select", {"aria-label": "signal", id: "signal-picker"});
  for (const [key, label] of Object.entries(data.signals)) {
    choose.append(el("option", {value: key, text: label}));
  }
  choose.value = signal;
  choose.addEventListener("change", () => {
    memory.signal = choose.value; main.textContent = ""; renderHealth(main, run, context); });
  root.append(el("label", {}, "Signal ", choose));
  if (!data.rows.length) {
    root.append(el("p", {class: "muted", text: `No ${data.label} logged in this run.`}));
  }
  const values = data.rows.flatMap((r) => r.values.filter((v) => v !== null));
  const scale = scaler(values, data.scale);
  const legend = el("div", {class: "legend"}, el("span", {text: format(scale.low)}),
    el("span", {class: "bar", style: `background: linear-gradient(to right, ${ramp(0)}, ${ramp(0.25)}, ${ramp(0.5)}, ${ramp(0.75)}, ${ramp(1)})`}),
    el("span", {text: format(scale.high)}),
    el("span", {text: `${data.label}, ${data.scale} scale; magenta: NaN/Inf; red outline: an alert`}));
  root.append(legend);
  const alertAt = new Map();
  for (const alert of data.alerts) {
    for (const layer of alert.layers || []) alertAt.set(`${layer}@${alert.step}`, alert);
  }
  const detail = el("div", {class: "detail", id: "health-detail"});
  palette();
  // Blocks of rows, each its own fixed-layout table with the same columns:
  // the browser sizes columns from the first row, and lays out and paints
  // only the blocks on screen (content-visibility), so a run of 300 layers
  // by 100 epochs (30,000 cells) opens as fast as a small one.
  const nameWidth = Math.ceil(14 + 8.2 * data.rows.reduce((n, r) => Math.max(n, r.name.length), 12));
  const width = `width: ${nameWidth + 48 * data.epochs.length}px`;
  function columns() {
    const cols = el("colgroup", {}, el("col", {style: `width: ${nameWidth}px`}));
    for (let i = 0; i < data.epochs.length; i++) cols.append(el("col", {style: "width: 48px"}));
    return cols;
  }
  const table = el("div", {class: "matrix-blocks", id: "health-matrix"});
  const head = el("tr", {}, el("th", {text: "layer \\ epoch"}));
  for (const epoch of data.epochs) head.append(el("th", {text: String(epoch)}));
  table.append(el("table", {class: "matrix head", style: width}, columns(), head));
  const epochText = data.epochs.map(String);
  let block = null;
  data.rows.forEach((row, r) => {
    if (r % BLOCK_ROWS === 0) {
      const rows = Math.min(BLOCK_ROWS, data.rows.length - r);
      block = el("table", {class: "matrix", style: width}, columns());
      table.append(el("div", {class: "block", style: `contain-intrinsic-size: auto ${rows * ROW_PX}px`}, block));
    }
    // The row carries the layer; each cell its tag, epoch and value
    // (setAttribute: far cheaper than `dataset` for 30,000 cells).
    const tr = document.createElement("tr");
    tr.setAttribute("data-layer", row.name);
    tr.append(el("th", {class: "row", text: row.name}));
    const values = row.values;
    for (let k = 0; k < values.length; k++) {
      const value = values[k];
      const td = document.createElement("td");
      if (value === null) { td.className = "empty"; tr.appendChild(td); continue; }
      let name = typeof value === "string" ? "bad"
        : `c${Math.max(0, Math.min(LEVELS - 1, Math.round(scale.at(value) * (LEVELS - 1))))}`;
      if (alertAt.size && alertAt.has(`${row.name}@${data.epochs[k]}`)) name += " alert";
      td.className = name;
      td.setAttribute("data-tag", row.tag);
      td.setAttribute("data-epoch", epochText[k]);
      td.setAttribute("data-value", String(value));
      td.textContent = format(value);
      tr.appendChild(td);
    }
    block.appendChild(tr);
  });
  table.addEventListener("mouseover", (event) => {  // tooltips, made when first needed
    const td = event.target.closest("td[data-tag]");
    if (!td || td.title) return;
    const alert = alertAt.get(`${td.parentElement.dataset.layer}@${td.dataset.epoch}`);
    td.title = `${td.dataset.tag} @ epoch ${td.dataset.epoch}: ${td.dataset.value}` +
      (alert ? `\n${alert.kind}: ${alert.text}` : "");
  });
  table.addEventListener("click", (event) => {  // one listener for every cell
    const td = event.target.closest("td[data-tag]");
    if (!td) return;
    for (const s of table.querySelectorAll("td.selected")) s.classList.remove("selected");
    td.classList.add("selected");
    showCell(detail, run, td.parentElement.dataset.layer, Number(td.dataset.epoch));
  });
  root.append(el("div", {class: "scroll"}, table), detail);
  const list = el("ul", {class: "timeline", id: "alert-timeline"});
  for (const alert of data.alerts) {
    const summary = el("summary", {}, el("span", {class: "kind", text: `epoch ${alert.step} · ${alert.kind}` +
      (alert.count > 1 ? ` (${alert.count})` : "")}), el("span", {text: alert.text.split("\n")[0]}));
    const item = el("li", {"data-epoch": String(alert.step), "data-kind": alert.kind});
    if (alert.text.includes("\n")) {
      item.append(el("details", {}, summary, el("div", {class: "lines", text: alert.text})));
    } else {
      item.append(...summary.childNodes);
    }
    list.append(item);
  }
  root.append(el("h3", {text: `Alerts (${data.alerts.reduce((n, a) => n + (a.count || 1), 0)})`}),
              data.alerts.length ? list : el("p", {class: "muted", text: "No alert in this run."}));
}

async function showCell(detail, run, layer, epoch) {
  detail.textContent = "";
  const layerName = layer.replace(/\/(kernel|bias|gamma|beta|moving_mean|moving_variance|embeddings)$/, "");
  let cell;
  try {
    cell = await getJSON("cell", {run, layer: layerName, step: epoch});
  } catch (error) {
    detail.append(el("p", {class: "muted", text: `No activations of ${layerName} logged: ${error.message}`}));
    return;
  }
  const box = el("div", {}, el("h3", {text: `${layerName} at epoch ${epoch}`}));
  if (cell.image) {
    box.append(el("img", {src: imageURL(run, cell.image_tag, epoch, 0), alt: `activations of ${layerName}`,
                          "data-tag": cell.image_tag, "data-step": String(epoch), id: "cell-image"}));
  } else {
    box.append(el("p", {class: "muted", text: `No activation image at epoch ${epoch} (kept: ${cell.image_steps.join(", ") || "none"}; start TensorBoard with --samples_per_plugin images=N to keep more).`}));
  }
  detail.append(box);
  if (cell.histogram) detail.append(histogram(cell.histogram, cell.histogram_tag, epoch));
}

function histogram(buckets, tag, epoch) {
  const width = 320, height = 120;
  const canvas = el("canvas", {width, height, "data-tag": tag, "data-epoch": String(epoch), id: "cell-histogram"});
  const ctx = canvas.getContext("2d");
  const counts = buckets.map((b) => (typeof b[2] === "number" ? b[2] : 0));
  const top = Math.max(1, ...counts);
  ctx.fillStyle = getComputedStyle(document.body).getPropertyValue("--accent") || "#f57c00";
  counts.forEach((c, i) => {
    const w = width / counts.length;
    const h = (c / top) * (height - 16);
    ctx.fillRect(i * w, height - h, Math.max(1, w - 1), h);
  });
  const low = buckets.length ? buckets[0][0] : 0, high = buckets.length ? buckets[buckets.length - 1][1] : 0;
  return el("div", {}, el("h3", {text: "activation histogram"}), canvas,
            el("div", {class: "muted", text: `${format(low)} … ${format(high)}`}));
}
