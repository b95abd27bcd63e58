// The Explain tab: TensorBoard loads this module in an iframe and calls render().
import {el, getJSON, errorBox} from "./util.js";
import {renderHealth} from "./views/health.js";
import {renderAttributions} from "./views/attributions.js";
import {renderOutputs} from "./views/outputs.js";
import {renderRuns} from "./views/runs.js";

const VIEWS = [["health", "Health", renderHealth], ["attributions", "Attributions", renderAttributions],
               ["outputs", "Outputs", renderOutputs], ["runs", "Runs", renderRuns]];

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
  let runs = [];
  async function show() {
    main.textContent = "";
    for (const button of nav.children) button.setAttribute("aria-pressed",
      String(button.dataset.view === state.view));
    const view = VIEWS.find((v) => v[0] === state.view) || VIEWS[0];
    try {
      await view[2](main, state.run, {runs, pick: (run) => { picker.value = run; state.run = run; }});
    } catch (error) {
      main.append(errorBox(error));
    }
  }
  async function load() {
    let listing;
    try {
      listing = await getJSON("runs");
    } catch (error) {
      main.append(errorBox(error));
      return;
    }
    runs = listing.runs;
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
  await load();
}
