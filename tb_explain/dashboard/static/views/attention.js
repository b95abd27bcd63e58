// Attention: each attention layer's entropy across epochs, and a layer's
// heads at a chosen epoch for a chosen probe sample, the tokens as text.
import {el, getJSON, ramp, scalarCell, section} from "../util.js";

// Pixels of one map's side at most (short sequences get bigger cells).
const SIDE = 192;

function heads(weights, sample, tokens, factor) {
  const maps = weights[sample];
  const tq = maps[0].length, tk = maps[0][0].length;
  const cell = Math.max(2, Math.min(22, Math.floor(SIDE / Math.max(tq, tk))));
  const labelled = factor === 1 && tokens && cell >= 12;
  const grid = el("div", {class: "heads", id: "attention-heads"});
  maps.forEach((map, h) => {
    const canvas = el("canvas", {width: String(tk * cell), height: String(tq * cell),
                                 "data-head": String(h), "aria-label": `head ${h}`});
    const g = canvas.getContext("2d");
    for (let q = 0; q < tq; q++) {
      for (let k = 0; k < tk; k++) {
        g.fillStyle = ramp(map[q][k] / 255);
        g.fillRect(k * cell, q * cell, cell, cell);
      }
    }
    const panel = el("figure", {class: "head"}, el("figcaption", {text: `head ${h}`}));
    if (labelled) {
      const rows = el("div", {class: "rows"});
      for (let q = 0; q < tq; q++) {
        rows.append(el("div", {class: "token", style: `height:${cell}px;line-height:${cell}px`,
                               text: tokens[q]}));
      }
      const cols = el("div", {class: "cols", style: `margin-left:0`});
      for (let k = 0; k < tk; k++) {
        cols.append(el("div", {class: "token vertical", style: `width:${cell}px`, text: tokens[k]}));
      }
      panel.append(el("div", {class: "map"}, rows, el("div", {}, canvas, cols)));
    } else {
      panel.append(canvas);
    }
    grid.append(panel);
  });
  return grid;
}

export async function renderAttention(main, run, context) {
  const memory = (context && context.memory) || {};
  const data = await getJSON("attention", {run});
  const root = section("attention", "Attention");
  main.append(root);
  if (!data.layers.length) {
    root.append(el("p", {class: "muted", text: "No attention in this run (tbx.AttentionMaps, " +
      "or tbx.explain with probe data on a model with attention layers)."}));
    return;
  }
  // entropy per layer (rows) and epoch (columns)
  const epochs = [...new Set(data.layers.flatMap((l) => l.entropy.map((p) => p[0])))].sort((a, b) => a - b);
  const table = el("table", {id: "entropy-table"});
  const head = el("tr", {}, el("th", {text: "layer \u2192 entropy (nats)"}));
  for (const e of epochs) head.append(el("th", {text: `epoch ${e}`}));
  table.append(head);
  for (const layer of data.layers) {
    const at = new Map(layer.entropy.map((p) => [p[0], p[1]]));
    const tr = el("tr", {}, el("th", {class: "row", text: layer.path}));
    for (const e of epochs) tr.append(at.has(e) ? scalarCell(layer.tag, e, at.get(e)) : el("td"));
    table.append(tr);
  }
  root.append(el("p", {class: "muted", text: "Entropy near ln(keys) is uniform attention; a " +
    "collapse towards 0 during training (every query on one key) goes with unstable training."}),
    el("div", {class: "scroll"}, table));
  const layers = data.layers.filter((l) => l.steps.length);
  if (!layers.length) {
    root.append(el("p", {class: "muted", text: "No attention weights logged (privacy=\"strict\")."}));
    return;
  }
  const chooseLayer = el("select", {"aria-label": "layer", id: "attention-layer"},
    ...layers.map((l) => el("option", {value: l.path, text: l.path})));
  chooseLayer.value = layers.some((l) => l.path === memory.attentionLayer) ? memory.attentionLayer
    : layers[0].path;
  const chooseEpoch = el("select", {"aria-label": "epoch", id: "attention-epoch"});
  const chooseSample = el("select", {"aria-label": "sample", id: "attention-sample"});
  const view = el("div");
  root.append(el("h3", {}, "Heads of ", chooseLayer, " at ", chooseEpoch, ", sample ", chooseSample),
              view);
  function epochsOf() {
    const layer = layers.find((l) => l.path === chooseLayer.value);
    chooseEpoch.replaceChildren(...layer.steps.map((s) => el("option", {value: String(s), text: `epoch ${s}`})));
    chooseEpoch.value = String(layer.steps.includes(memory.attentionEpoch) ? memory.attentionEpoch
      : layer.steps[layer.steps.length - 1]);
  }
  async function draw() {
    memory.attentionLayer = chooseLayer.value;
    memory.attentionEpoch = Number(chooseEpoch.value);
    const got = await getJSON("attention_weights", {run, layer: chooseLayer.value,
                                                    step: chooseEpoch.value});
    const n = got.weights.length;
    if (chooseSample.options.length !== n) {
      chooseSample.replaceChildren(...[...Array(n).keys()].map((i) => el("option", {value: String(i), text: String(i)})));
    }
    const sample = Math.min(Number(chooseSample.value || 0), n - 1);
    const tokens = data.tokens ? data.tokens[sample] : null;
    view.replaceChildren(heads(got.weights, sample, tokens, got.factor),
      el("p", {class: "muted", text: got.factor > 1
        ? `${got.query_length} x ${got.key_length} weights averaged over ${got.factor} x ${got.factor} blocks; each map scaled by its maximum.`
        : "Rows: queries, columns: keys; each map scaled by its maximum." +
          (tokens ? "" : " Tokens are not logged at this privacy level: positions.")}));
  }
  chooseLayer.addEventListener("change", () => { epochsOf(); draw(); });
  chooseEpoch.addEventListener("change", draw);
  chooseSample.addEventListener("change", draw);
  epochsOf();
  await draw();
}
