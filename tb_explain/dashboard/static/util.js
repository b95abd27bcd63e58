// Shared helpers of the Explain tab. Everything from logs goes in as text.

export async function getJSON(route, params = {}) {
  const query = new URLSearchParams(params).toString();
  const response = await fetch(`./${route}${query ? "?" + query : ""}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export function format(value) {
  if (typeof value === "string") return value; // NaN, Infinity
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1e4 || magnitude < 1e-3 ? value.toExponential(2) : value.toPrecision(3);
}

// A shown number of a logged scalar: its full tag, step and full-precision value.
export function scalarCell(tag, step, value, attrs = {}) {
  return el("td", {"data-tag": tag, "data-epoch": String(step), "data-value": String(value),
                   title: `${tag} @ epoch ${step}: ${value}`, ...attrs}, format(value));
}

export function imageURL(run, tag, step, index = 0) {
  return `./image?${new URLSearchParams({run, tag, step, index})}`;
}

export function section(view, title, ...children) {
  return el("section", {"data-view": view, class: "view"}, el("h2", {text: title}), ...children);
}

// Colour of a value on a [0, 1] position: dark blue (low) to yellow (high).
export function ramp(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

export function errorBox(error) {
  return el("p", {class: "error", text: `Could not load: ${error.message}`});
}

const ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": "\""};

// Inline Markdown (**bold**, `code`) as nodes; the text itself goes in as text.
function inline(text) {
  const out = [];
  const pattern = /(\*\*[^*]+\*\*|`[^`]+`)/g;
  let last = 0;
  text = text.replace(/&(nbsp|lt|gt|amp|quot);/g, (m) => ENTITIES[m]);
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const token = match[0];
    out.push(token.startsWith("**") ? el("strong", {text: token.slice(2, -2)})
                                    : el("code", {text: token.slice(1, -1)}));
    last = match.index + token.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

// The Markdown tb_explain writes in Text cards (paragraphs, tables, lists,
// code fences), built as DOM nodes: nothing from the logs is parsed as HTML.
export function markdown(text, attrs = {}) {
  const root = el("div", {class: "markdown", ...attrs});
  const lines = String(text).split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    if (line.startsWith("```")) {
      const body = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) body.push(lines[i]);
      root.append(el("pre", {class: "text", text: body.join("\n")}));
      i++;
      continue;
    }
    if (line.trim().startsWith("|")) {
      const table = el("table");
      let header = true;
      for (; i < lines.length && lines[i].trim().startsWith("|"); i++) {
        if (/^\|?[\s:|-]+\|?$/.test(lines[i].trim())) { header = false; continue; }
        const tr = el("tr");
        for (const cell of cells(lines[i])) tr.append(el(header ? "th" : "td", {}, ...inline(cell)));
        table.append(tr);
      }
      root.append(el("div", {class: "scroll"}, table));
      continue;
    }
    const item = /^\s*(?:[-*]|\d+\.)\s+/;
    if (item.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const list = el(ordered ? "ol" : "ul");
      for (; i < lines.length && item.test(lines[i]); i++) {
        list.append(el("li", {}, ...inline(lines[i].replace(item, ""))));
      }
      root.append(list);
      continue;
    }
    const para = [];
    for (; i < lines.length && lines[i].trim() && !lines[i].trim().startsWith("|")
         && !lines[i].startsWith("```") && !item.test(lines[i]); i++) para.push(lines[i]);
    root.append(el("p", {}, ...inline(para.join(" "))));
  }
  return root;
}

// A line chart (SVG) of series [{name, points: [[step, value], ...], color}],
// steps on x, values on y (log scale when every value is positive and they
// span more than a factor of 20). Each point is a circle carrying its series,
// step and value as data attributes and a title; names go in as text.
export function lineChart(series, {id = "", width = 560, height = 200, label = "", legend = true,
                                   xLabel = "epoch"} = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs = {}, text = null) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== null) n.textContent = text;
    return n;
  };
  const svg = node("svg", {width, height, class: "line-chart", role: "img", style: "display: block",
                           "aria-label": label || "chart"});
  if (id) svg.setAttribute("id", id);
  const all = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[1])));
  if (!all.length) return svg;
  const values = all.map((p) => p[1]), steps = all.map((p) => p[0]);
  let low = Math.min(...values), high = Math.max(...values);
  const log = low > 0 && high / low > 20;
  const f = (v) => (log ? Math.log10(v) : v);
  if (f(high) === f(low)) { high = log ? high * 2 : high + 1; low = log ? low / 2 : low - 1; }
  const x0 = Math.min(...steps), x1 = Math.max(x0 + 1, Math.max(...steps));
  const left = 56, right = legend ? 120 : 12, top = 10, bottom = 28;
  const px = (s) => left + ((s - x0) / (x1 - x0)) * (width - left - right);
  const py = (v) => top + (1 - (f(v) - f(low)) / (f(high) - f(low))) * (height - top - bottom);
  const ink = getComputedStyle(document.body).color || "#333";
  svg.append(node("line", {x1: left, y1: height - bottom, x2: width - right, y2: height - bottom,
                           stroke: ink, "stroke-opacity": 0.5}));
  svg.append(node("line", {x1: left, y1: top, x2: left, y2: height - bottom, stroke: ink,
                           "stroke-opacity": 0.5}));
  for (const v of [low, high]) {
    svg.append(node("text", {x: left - 4, y: py(v) + 4, "text-anchor": "end", "font-size": 11,
                             fill: ink}, format(v)));
  }
  for (const s of [x0, x1]) {
    svg.append(node("text", {x: px(s), y: height - bottom + 16, "text-anchor": "middle",
                             "font-size": 11, fill: ink}, Number.isInteger(s) ? String(s) : format(s)));
  }
  svg.append(node("text", {x: (left + width - right) / 2, y: height - 2, "text-anchor": "middle",
                           "font-size": 11, fill: ink}, `${xLabel}${log ? " (log scale)" : ""}`));
  series.forEach((s, k) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    const group = node("g", {"data-series": s.name});
    group.append(node("polyline", {points: pts.map((p) => `${px(p[0])},${py(p[1])}`).join(" "),
                                   fill: "none", stroke: s.color, "stroke-width": 2}));
    for (const [step, value] of pts) {
      const dot = node("circle", {cx: px(step), cy: py(value), r: 3, fill: s.color,
                                  "data-step": step, "data-y": value});
      dot.append(node("title", {}, `${s.name} @ ${xLabel} ${step}: ${value}`));
      group.append(dot);
    }
    svg.append(group);
    if (!legend) return;
    svg.append(node("rect", {x: width - right + 10, y: top + 16 * k, width: 10, height: 10,
                             fill: s.color}));
    svg.append(node("text", {x: width - right + 26, y: top + 16 * k + 9, "font-size": 12,
                             fill: ink}, s.name));
  });
  return svg;
}
