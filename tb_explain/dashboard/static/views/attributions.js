// Attributions: every probe sample with its input and each method's map, an epoch slider.
import {el, getJSON, imageURL, section, format} from "../util.js";

export async function renderAttributions(main, run) {
  const data = await getJSON("attributions", {run});
  const root = section("attributions", "Attributions");
  main.append(root);
  const badges = el("div", {id: "sanity-badges"});
  for (const badge of data.sanity) {
    badges.append(el("span", {class: `badge ${badge.passes ? "pass" : "fail"}`,
      "data-tag": badge.tag, "data-epoch": String(badge.step), "data-value": String(badge.value),
      title: "sanity check (model-parameter randomization): rank correlation with the trained model's maps once every layer is re-initialized; below 0.5 passes"},
      `${badge.method}: ${badge.passes ? "passes" : "fails"} (${format(badge.value)})`));
  }
  root.append(el("h3", {text: "Sanity check"}),
              data.sanity.length ? badges : el("p", {class: "muted", text: "No sanity check in this run (Attributions(sanity_check=True))."}));
  if (!data.columns.length || !data.epochs.length) {
    root.append(el("p", {class: "muted", text: "No attribution images in this run."}));
    return;
  }
  const hasInput = data.columns.some((c) => c.label === "input");
  if (!hasInput) root.append(el("p", {class: "muted", text: "The inputs are not shown (privacy level of the run)."}));
  const slider = el("input", {type: "range", min: "0", max: String(data.epochs.length - 1),
                              value: String(data.epochs.length - 1), id: "epoch-slider", "aria-label": "epoch"});
  const label = el("span", {id: "epoch-label"});
  root.append(el("div", {class: "legend"}, "Epoch ", slider, label,
    el("span", {text: `logged epochs kept: ${data.epochs.join(", ")} (TensorBoard keeps 10 images per tag unless started with --samples_per_plugin images=N)`})));
  const grid = el("div", {class: "grid", id: "attribution-grid",
                          style: `grid-template-columns: 80px repeat(${data.columns.length}, auto)`});
  root.append(grid);
  function draw() {
    const epoch = data.epochs[Number(slider.value)];
    label.textContent = String(epoch);
    grid.textContent = "";
    grid.append(el("div"));
    for (const column of data.columns) grid.append(el("div", {class: "muted", text: column.label}));
    for (let i = 0; i < data.samples; i++) {
      grid.append(el("div", {text: `sample ${i}`}));
      for (const column of data.columns) {
        if (!column.steps.includes(epoch) || i >= column.samples) { grid.append(el("div")); continue; }
        grid.append(el("img", {src: imageURL(run, column.tag, epoch, i), alt: `${column.label} of sample ${i}`,
                               "data-tag": column.tag, "data-step": String(epoch), "data-sample": String(i)}));
      }
    }
  }
  slider.addEventListener("input", draw);
  draw();
}
