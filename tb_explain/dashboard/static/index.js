// The Explain tab: TensorBoard loads this module in an iframe and calls render().
import {el, getJSON, errorBox} from "./util.js";
import {renderHealth} from "./views/health.js";
import {renderAttributions} from "./views/attributions.js";
import {renderOutputs} from "./views/outputs.js";
import {renderRuns} from "./views/runs.js";
import {renderData} from "./views/data.js";
import {renderAttention} from "./views/attention.js";
import {renderCompare} from "./views/compare.js";

const VIEWS = [["health", "Health", renderHealth], ["attributions", "Attributions", renderAttributions],
               ["outputs", "Outputs", renderOutputs], ["data", "Data", renderData],
               ["attention", "Attention", renderAttention],
               ["runs", "Runs", renderRuns], ["compare", "Compare", renderCompare]];

function followTheme() {
  let dark = false;
  try { dark = window.parent.document.body.classList.contains("dark-mode"); } catch (e) {}
  if (!dark && window.matchMedia) dark = window.matchMedia("(prefers-color-scheme: dark)").matches
    && new URLSearchParams(location.search).get("theme") === "auto";
  if (new URLSearchParams(location.search).get("theme") === "dark") dark = true;
  document.body.classList.toggle("dark", dark);
}

function emptyState(root) {
  root.append(el("section", {"data-view": "empty", class: "view"},
    el("h2", {text: "No tb_explain data yet"}),
    el("p", {text: "This logdir has no run written by tb_explain's callbacks. Add them to model.fit:"}),
    el("pre", {class: "text", text: "import tb_explain as tbx\n" +
      "model.fit(x, y, callbacks=[*tbx.explain(\"runs/exp1\", data=(x_val[:8], y_val[:8]))])"})));
}

// TensorBoard's host page tells its plugins when it has read the logs again
// (its reload button and timer): the message protocol of its plugin library,
// a MessageChannel handed over with "experimental.bootstrap".
function onDataReloaded(callback) {
  if (window.parent === window) return;
  const channel = new MessageChannel();
  channel.port1.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    if (!message || message.isReply) return;
    channel.port1.postMessage(JSON.stringify({type: message.type, id: message.id, payload: null,
                                              error: null, isReply: true}));
    if (message.type === "experimental.DataReloaded") callback();
  };
  try {
    window.parent.postMessage("experimental.bootstrap", window.location.origin, [channel.port2]);
  } catch (e) {}
}

export async function render() {
  const link = el("link", {rel: "stylesheet", href: "./style.css"});
  document.head.append(link);
  followTheme();
  try {
    const observer = new MutationObserver(followTheme);
    observer.observe(window.parent.document.body, {attributes: true, attributeFilter: ["class"]});
  } catch (e) {}
  document.body.textContent = "";
  const state = {run: null, view: location.hash.slice(1) || "health"};
  const picker = el("select", {"aria-label": "run", id: "run-picker"});
  const nav = el("nav");
  const main = el("main");
  const reload = el("button", {text: "Reload", title: "Read the logs again"});
  document.body.append(el("header", {}, el("h1", {text: "Explain"}), el("label", {}, "Run ", picker),
                          nav, reload), main);
  let runs = [], listed = "";
  const memory = {};  // what the views remember (signal, epoch) across re-renders
  async function show() {
    // Each render draws into its own box: a slower earlier render (a click
    // while it was loading) can never add to the page it no longer owns.
    const box = el("div");
    main.replaceChildren(box);
    for (const button of nav.children) button.setAttribute("aria-pressed",
      String(button.dataset.view === state.view));
    const view = VIEWS.find((v) => v[0] === state.view) || VIEWS[0];
    try {
      await view[2](box, state.run, {runs, memory, pick: (run) => { picker.value = run; state.run = run; }});
    } catch (error) {
      box.append(errorBox(error));
    }
  }
  async function load() {
    let listing;
    try {
      listing = await getJSON("list");
    } catch (error) {
      main.append(errorBox(error));
      return;
    }
    runs = listing.runs;
    listed = JSON.stringify(listing);
    picker.textContent = "";
    if (!runs.length) { nav.textContent = ""; emptyState(main); return; }
    for (const row of runs) picker.append(el("option", {value: row.run, text: row.run}));
    if (!runs.some((r) => r.run === state.run)) state.run = runs[runs.length - 1].run;
    picker.value = state.run;
    nav.textContent = "";
    for (const [name, label] of VIEWS) {
      nav.append(el("button", {"data-view": name, text: label, onclick: () => {
        state.view = name; show(); }}));
    }
    await show();
  }
  picker.addEventListener("change", () => { state.run = picker.value; show(); });
  reload.addEventListener("click", () => { main.textContent = ""; load(); });
  // New epochs logged: draw again, keeping the run, view, signal and epoch.
  onDataReloaded(async () => {
    try {
      if (JSON.stringify(await getJSON("list")) !== listed) await load();
    } catch (e) {}
  });
  await load();
}
