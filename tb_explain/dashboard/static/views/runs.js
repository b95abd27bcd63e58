// Runs: every run of the logdir as a row, sortable; two picked runs side by side.
import {el, getJSON, format, scalarCell, section} from "../util.js";

export async function renderRuns(main, _run, context) {
  const memory = (context && context.memory) || {};
  const signal = memory.signal || "gradient_norm";
  const data = await getJSON("runs", {signal});
  const root = section("runs", "Runs compared");
  main.append(root);
  const hparams = [...new Set(data.runs.flatMap((r) => Object.keys(r.hparams)))].sort();
  const metrics = [...new Set(data.runs.flatMap((r) => Object.keys(r.metrics)))].sort();
  const choose = el("select", {"aria-label": "signal"});
  for (const [key, label] of Object.entries(data.signals)) choose.append(el("option", {value: key, text: label}));
  choose.value = signal;
  choose.addEventListener("change", () => {
    memory.signal = choose.value; main.textContent = ""; renderRuns(main, _run, context); });
  root.append(el("label", {}, "Worst layer by ", choose),
              el("p", {class: "muted", text: "Click a header to sort; tick two runs to compare them."}));
  const columns = [["run", (r) => r.run], ["alerts", (r) => r.alerts],
                   [`worst ${data.signals[signal]}`, (r) => r.worst && r.worst.value],
                   ...hparams.map((h) => [h, (r) => r.hparams[h]]),
                   ...metrics.map((m) => [m.replace(/^outputs\//, ""), (r) => r.metrics[m] && r.metrics[m].value])];
  let sortBy = 0, descending = false;
  const picked = new Set();
  const table = el("table", {id: "runs-table"});
  const compare = el("div", {id: "runs-compare"});
  root.append(el("div", {class: "scroll"}, table), compare);
  function value(row, i) { const v = columns[i][1](row); return v === undefined || v === null ? "" : v; }
  function draw() {
    table.textContent = "";
    const head = el("tr", {}, el("th", {text: ""}));
    columns.forEach(([name], i) => head.append(el("th", {text: name + (i === sortBy ? (descending ? " ▼" : " ▲") : ""),
      style: "cursor: pointer", onclick: () => { descending = sortBy === i ? !descending : false; sortBy = i; draw(); }})));
    table.append(head);
    const rows = [...data.runs].sort((a, b) => {
      const x = value(a, sortBy), y = value(b, sortBy);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return descending ? -order : order;
    });
    for (const row of rows) {
      const box = el("input", {type: "checkbox", "aria-label": `compare ${row.run}`});
      box.checked = picked.has(row.run);
      box.addEventListener("change", () => { box.checked ? picked.add(row.run) : picked.delete(row.run);
        if (picked.size > 2) picked.delete([...picked][0]); draw(); });
      const tr = el("tr", {"data-run": row.run, class: picked.has(row.run) ? "picked" : ""}, el("td", {}, box),
                    el("th", {class: "row", text: row.run}));
      tr.append(el("td", {class: row.alerts ? "alerts" : "", text: String(row.alerts)}));
      tr.append(row.worst ? scalarCell(row.worst.tag, row.worst.step, row.worst.value, {title: row.worst.layer})
                          : el("td"));
      if (row.worst) tr.lastChild.textContent = `${row.worst.layer}: ${format(row.worst.value)}`;
      for (const h of hparams) tr.append(el("td", {text: row.hparams[h] === undefined ? "" : String(row.hparams[h])}));
      for (const m of metrics) {
        const point = row.metrics[m];
        tr.append(point ? scalarCell(m, point.step, point.value) : el("td"));
      }
      table.append(tr);
    }
    drawCompare();
  }
  function drawCompare() {
    compare.textContent = "";
    if (picked.size !== 2) return;
    const [a, b] = [...picked].map((name) => data.runs.find((r) => r.run === name));
    const t = el("table", {id: "compare-table"}, el("tr", {}, el("th", {text: ""}),
      el("th", {text: a.run}), el("th", {text: b.run})));
    for (const h of hparams) {
      const x = a.hparams[h], y = b.hparams[h];
      t.append(el("tr", {}, el("th", {class: "row", text: h}), el("td", {class: x !== y ? "differs" : "", text: x === undefined ? "" : String(x)}),
                  el("td", {class: x !== y ? "differs" : "", text: y === undefined ? "" : String(y)})));
    }
    for (const m of metrics) {
      const x = a.metrics[m], y = b.metrics[m];
      const tr = el("tr", {}, el("th", {class: "row", text: m}));
      for (const p of [x, y]) tr.append(p ? scalarCell(m, p.step, p.value) : el("td"));
      if (x && y && x.value !== y.value) tr.append(el("td", {class: "differs", text: `Δ ${format(y.value - x.value)}`}));
      t.append(tr);
    }
    t.append(el("tr", {}, el("th", {class: "row", text: "alerts"}), el("td", {text: String(a.alerts)}), el("td", {text: String(b.alerts)})));
    compare.append(el("h3", {text: "Side by side"}), t);
  }
  draw();
}
