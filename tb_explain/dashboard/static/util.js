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
