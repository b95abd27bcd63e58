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
