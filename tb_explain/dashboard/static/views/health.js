// Health: layers (rows, model order) by logged epochs (columns) of one signal.
import {el, getJSON, imageURL, ramp, scalarCell, section, format} from "../util.js";

function scaler(values, scale) {
  const finite = values.filter((v) => typeof v === "number" && (scale !== "log" || v > 0));
  if (!finite.length) return {at: () => 0.5, low: 0, high: 0};
  if (scale === "linear") return {at: (v) => v, low: 0, high: 1};
  const logs = finite.map(Math.log10);
  const low = Math.min(...logs), high = Math.max(...logs);
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
  const values = data.rows.flatMap((r) => r.cells.map((c) => c[1]));
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
  const table = el("table", {class: "matrix"});
  const head = el("tr", {}, el("th", {text: "layer \\ epoch"}));
  for (const epoch of data.epochs) head.append(el("th", {text: String(epoch)}));
  table.append(head);
  for (const row of data.rows) {
    const byStep = new Map(row.cells.map((c) => [c[0], c[1]]));
    const tr = el("tr", {}, el("th", {class: "row", text: row.name}));
    for (const epoch of data.epochs) {
      if (!byStep.has(epoch)) { tr.append(el("td", {class: "empty"})); continue; }
      const value = byStep.get(epoch);
      const bad = typeof value === "string";
      const td = scalarCell(row.tag, epoch, value, {"data-layer": row.name});
      td.style.background = bad ? "#ff00ff" : ramp(scale.at(value));
      td.style.color = !bad && scale.at(value) > 0.6 ? "#000" : "#fff";
      const alert = alertAt.get(`${row.name}@${epoch}`);
      if (alert) { td.classList.add("alert"); td.title += `\n${alert.kind}: ${alert.text}`; }
      td.addEventListener("click", () => {
        for (const s of table.querySelectorAll("td.selected")) s.classList.remove("selected");
        td.classList.add("selected");
        showCell(detail, run, row.name, epoch);
      });
      tr.append(td);
    }
    table.append(tr);
  }
  root.append(el("div", {class: "scroll"}, table), detail);
  const list = el("ul", {class: "timeline", id: "alert-timeline"});
  for (const alert of data.alerts) {
    list.append(el("li", {"data-epoch": String(alert.step), "data-kind": alert.kind},
      el("span", {class: "kind", text: `epoch ${alert.step} · ${alert.kind}`}),
      el("span", {text: alert.text})));
  }
  root.append(el("h3", {text: `Alerts (${data.alerts.length})`}),
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
