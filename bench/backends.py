"""The same ratios on every Keras backend, side by side in one run.

Usage:
    python bench/backends.py [--parts ig,methods,fit,resnet,shap,first_epoch] [--repeats N]
                             [--backends tensorflow,jax,torch]

Each backend runs in its own subprocess (KERAS_BACKEND is fixed when Keras
is imported), one part after the other, so the backends' figures of a part
are taken minutes apart on the same machine; each figure is itself a ratio
of runs interleaved inside one process.

- ig: `tbx.integrated_gradients` (51 steps, trapezoid) over its floor, one
  compiled gradient of the target output over the same samples x steps
  inputs (`tf.function` over a `GradientTape`, `jax.jit` over
  `jax.value_and_grad`, PyTorch autograd), fastest of the repeats each.
  Target: <= 1.25 on TensorFlow and JAX.
- methods: SmoothGrad (50 noisy copies), occlusion (default windows) and
  Grad-CAM on MobileNetV2 96x96 (4 images), each over its compiled floor on
  precomputed inputs: one gradient over the 200 noisy copies, one forward
  pass over the 900 occluded copies, one input gradient of the 4 images.
  Targets: <= 1.25, <= 1.25, <= 1.5 on each backend.
- fit: the demo CNN on the digits repeated 13 times, 3 epochs, the plain
  fit against `tbx.explain` at freq=1 and freq=5 (median of the repeats,
  interleaved), and beside it one plus the time inside the suite's hooks
  over the plain fit (the same figure without the training's run-to-run
  noise). Targets: <= 1.25 and <= 1.10 on each backend. Those fits run one
  after the other in one process, which reuses what the earlier fits
  compiled (JAX's eager primitives above all); the "fresh process" rows time
  the same fits each as the first fit of a new process, as a script runs
  (median of the repeats, interleaved).
- shap: DeepLIFT over saliency on MobileNetV2 96x96 (4 images, its
  BatchNormalization statistics set from random images); on the demo CNN (4
  digits), KernelSHAP (64 groups, 512 coalitions) and exact Shapley values
  (12 groups: 4,096 coalitions), each over a compiled forward pass over its
  precomputed coalition inputs, and its seconds per model evaluation (one
  coalition of one image) against Captum's `KernelShap` and
  `ShapleyValues` (5 groups) on the same model's PyTorch twin (the Keras
  model on the PyTorch backend, weights set from the same seed; Captum
  evaluates one perturbation per forward pass, its default: the rows its
  forward calls received are counted, since KernelShap takes one image at a
  time and ShapleyValues all four). glibc's malloc
  thresholds are pinned in this part's processes (see bench/shap.py).
  Targets: DeepLIFT <= 1.5; >= 20x Captum per evaluation.
- resnet: ResNet50 (weights=None, 224x224, 16 random images, batch 16, 3
  epochs, 2-sample probe, `tbx.explain` defaults): each callback's logging
  event (its `timing/*` scalar, the last epoch's: the steady cost) and the
  whole event, on JAX against TensorFlow.
- first_epoch: bench/overhead.py's part 3 on 4 epochs (ResNet50, 224x224,
  32 random images, batch 16; the suite on defaults against the plain fit,
  interleaved): the first epoch's extra (setup and first event) over one
  IG event's compiled floor (2 x 52 input gradients), the steady and
  amortized extras and the share spent outside the hooks. Targets: <= 2.0,
  <= 1.25, <= 1.4, <= 5%. Not in the default parts (20-30 minutes).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the worker, inside one backend ------------------------------------------------

def _floor(model):
    from bench._timing import compiled_input_gradient  # noqa: PLC0415

    return compiled_input_gradient(model)


def part_ig(repeats):
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415
    from bench._timing import interleaved  # noqa: PLC0415
    from demo_train import build_model, load_data  # noqa: PLC0415

    (x, _), _ = load_data()
    keras.utils.set_random_seed(0)
    cases = [("demo CNN (8 digits)", build_model(), x[:8])]
    images = np.random.default_rng(0).random((4, 96, 96, 3), dtype=np.float32)
    cases.append(("MobileNetV2 96x96 (4 images)", keras.applications.MobileNetV2(
        weights=None, input_shape=(96, 96, 3), classes=10), images))
    out = {}
    for name, model, inputs in cases:
        steps = 51
        targets = np.argmax(keras.ops.convert_to_numpy(model(inputs)), axis=1)
        alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)
        batch = (alphas[None, :, None, None, None] * inputs[:, None]).reshape(
            -1, *inputs.shape[1:]).astype(np.float32)
        batch_targets = np.repeat(targets, steps).astype(np.int32)
        floor = _floor(model)
        runs = {"floor": lambda: floor(batch, batch_targets),
                "tbx": lambda: tbx.integrated_gradients(model, inputs, target=targets,
                                                        steps=steps, method="riemann_trapezoid")}
        times = interleaved(runs, 2)  # warm-up: compile both
        times = interleaved(runs, repeats)
        out[name] = {"ratio": min(times["tbx"]) / min(times["floor"]),
                     "floor_s": min(times["floor"]), "tbx_s": min(times["tbx"])}
    return out


def _forward_floor(model):
    from bench._timing import compiled_forward  # noqa: PLC0415

    return compiled_forward(model)


def part_methods(repeats):
    """SmoothGrad, occlusion and Grad-CAM on MobileNetV2 96x96 (4 images),
    each over its own compiled floor on precomputed inputs (backend tensors):
    SmoothGrad's 200 noisy copies through one gradient, occlusion's 900
    occluded copies through one forward pass, Grad-CAM's 4 images through
    one input gradient."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415
    from bench._timing import floor_inputs, interleaved  # noqa: PLC0415
    from tb_explain import backend  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    x = np.random.default_rng(0).random((4, 96, 96, 3), dtype=np.float32)
    targets = np.argmax(backend.to_numpy(model(x, training=False)), axis=1).astype(np.int32)
    gradient, forward = _floor(model), _forward_floor(model)
    noisy, noisy_targets, occluded, occluded_targets = (
        backend.to_tensor(a) for a in floor_inputs(model, x, targets))
    images, image_targets = backend.to_tensor(x), backend.to_tensor(targets)
    runs = {
        "smoothgrad floor": lambda: gradient(noisy, noisy_targets),
        "smoothgrad": lambda: tbx.attribute(model, x, "smoothgrad", target=targets, samples=50),
        "occlusion floor": lambda: forward(occluded, occluded_targets),
        "occlusion": lambda: tbx.attribute(model, x, "occlusion", target=targets),
        "gradcam floor": lambda: gradient(images, image_targets),
        "gradcam": lambda: tbx.attribute(model, x, "gradcam", target=targets),
    }
    interleaved(runs, 2)  # compile and warm up everything
    best = {k: min(v) for k, v in interleaved(runs, repeats).items()}
    return {m: {"ratio": best[m] / best[f"{m} floor"], "s": best[m],
                "floor_s": best[f"{m} floor"]} for m in ("smoothgrad", "occlusion", "gradcam")}


def part_shap(repeats):
    """DeepLIFT / saliency on MobileNetV2 96x96; KernelSHAP and Shapley
    values on the demo CNN: seconds per evaluation, over their forward
    floor; on PyTorch, Captum's seconds per evaluation too."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415
    from bench._timing import calibrate_batch_norm, interleaved  # noqa: PLC0415
    from demo_train import build_model, load_data  # noqa: PLC0415
    from tb_explain import backend  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    mobile = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    calibrate_batch_norm(mobile, np.random.default_rng(1).random((32, 96, 96, 3), np.float32))
    images = np.random.default_rng(0).random((4, 96, 96, 3), dtype=np.float32)
    image_targets = np.argmax(backend.to_numpy(mobile(images, training=False)), axis=1)
    keras.utils.set_random_seed(0)
    model = build_model()
    (x, _), _ = load_data()
    x = x[:4]
    targets = np.argmax(backend.to_numpy(model(x, training=False)), axis=1).astype(np.int32)
    pixels = np.arange(64).reshape(8, 8, 1)
    twelve = (np.arange(8)[:, None] // 4 * 6 + np.arange(8)[None, :] * 6 // 8)[..., None]
    forward = _forward_floor(model)

    def coalition_rows(groups, z):  # every coalition of every image, zero baseline
        keep = z[:, groups.reshape(-1)].reshape((len(z),) + x.shape[1:])
        rows = (x[:, None] * keep[None]).reshape((-1,) + x.shape[1:])
        return backend.to_tensor(rows), backend.to_tensor(np.repeat(targets, len(z)))

    from tb_explain.compute.attribution import coalitions  # noqa: PLC0415
    kernel_z = np.concatenate([np.zeros((1, 64)), np.ones((1, 64)),
                               coalitions.sample_coalitions(64, 512, 0)[0]]).astype(np.float32)
    kernel_rows = coalition_rows(pixels, kernel_z)
    shapley_rows = coalition_rows(twelve, coalitions._bits(12))
    runs = {
        "saliency": lambda: tbx.attribute(mobile, images, "saliency", target=image_targets),
        "deeplift": lambda: tbx.attribute(mobile, images, "deeplift", target=image_targets),
        "kernel_shap": lambda: tbx.attribute(model, x, "kernel_shap", target=targets,
                                             feature_mask=pixels, samples=512),
        "kernel_shap floor": lambda: forward(*kernel_rows),
        "shapley": lambda: tbx.attribute(model, x, "shapley", target=targets,
                                         feature_mask=twelve),
        "shapley floor": lambda: forward(*shapley_rows),
    }
    evaluations = {"kernel_shap": len(kernel_z) * len(x), "shapley": 4096 * len(x)}
    interleaved(runs, 2)  # compile and warm up everything
    best = {k: min(v) for k, v in interleaved(runs, repeats).items()}
    result = {"deeplift": {"ratio": best["deeplift"] / best["saliency"], "s": best["deeplift"]}}
    for name, count in evaluations.items():
        result[name] = {"ratio": best[name] / best[f"{name} floor"], "s": best[name],
                        "per_evaluation_s": best[name] / count}
    if backend.name() == "torch":
        import torch  # noqa: PLC0415
        from captum.attr import KernelShap, ShapleyValues  # noqa: PLC0415

        five = np.broadcast_to((np.arange(8) * 5 // 8)[None, :, None], (8, 8, 1))
        calls = [0]

        def counted(t):  # rows evaluated: KernelShap runs one image at a time
            calls[0] += int(t.shape[0])
            return model(t)

        inputs, target = torch.tensor(x), torch.tensor(targets)
        captum = {
            "kernel_shap": lambda: KernelShap(counted).attribute(
                inputs, target=target, feature_mask=torch.tensor(pixels[None]), baselines=0.0,
                n_samples=512),
            "shapley": lambda: ShapleyValues(counted).attribute(
                inputs, target=target, feature_mask=torch.tensor(five[None]), baselines=0.0),
        }
        for name, fn in captum.items():
            calls[0] = 0
            fn()
            rows = calls[0]
            seconds = min(interleaved({name: fn}, max(2, repeats // 3))[name])
            result[name]["captum_per_evaluation_s"] = seconds / rows
    return result


def part_fit(repeats):
    from demo_train import load_data  # noqa: PLC0415

    data = load_data()
    names = ["no callbacks", "tbx.explain (whole suite)", "tbx.explain (whole suite, freq=5)"]
    times = {name: [] for name in names}
    hooks = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            total, inside = _one_fit(name, data)
            times[name].append(total)
            hooks[name].append(inside)
    base = statistics.median(times["no callbacks"])
    out = {"plain_s": base,
           "freq=1": statistics.median(times[names[1]]) / base,
           "freq=5": statistics.median(times[names[2]]) / base,
           "hooks freq=1": 1 + statistics.median(hooks[names[1]]) / base,
           "hooks freq=5": 1 + statistics.median(hooks[names[2]]) / base}
    # The same fits, each the first of a fresh process (a script's one fit):
    # what a process has compiled before (JAX's eager primitives, TensorFlow's
    # kernels) is not there to reuse.
    cold = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            cold[name].append(_fit_in_a_fresh_process(name))
    base = statistics.median(cold["no callbacks"])
    out.update({"cold plain_s": base,
                "cold freq=1": statistics.median(cold[names[1]]) / base,
                "cold freq=5": statistics.median(cold[names[2]]) / base})
    return out


def _fit_in_a_fresh_process(name):
    """Seconds of one `part_fit` fit of config `name`, in a new process of
    the same backend (after its one-batch fit that traces the train step)."""
    result, error = _in_a_new_process(["fit_one", "--config", name], os.environ)
    if error is not None:
        raise RuntimeError(f"fit_one {name!r} failed:\n{error}")
    return result


def _one_fit(name, data):
    """`(seconds, seconds in the hooks)` of the fit part's fit of config
    `name`: the digits x 13, 3 epochs."""
    from bench.overhead import CONFIGS, fit_seconds  # noqa: PLC0415

    return fit_seconds(name, CONFIGS[name], data, 3, 13)


def part_fit_one(config):
    from demo_train import load_data  # noqa: PLC0415

    return _one_fit(config, load_data())[0]


def part_resnet(repeats):
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import tb_explain as tbx  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = rng.random((16, 224, 224, 3), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    log_dir = tempfile.mkdtemp(prefix="tbx_bench_resnet_")
    start = time.perf_counter()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=tbx.explain(log_dir, data=(x[:2], y[:2])))
    fit = time.perf_counter() - start
    run = tbx.load_run(log_dir)
    events = {}
    for tag in run.tags("scalars"):
        if tag.startswith("timing/") and not tag.endswith("_setup_seconds"):
            events[tag[len("timing/"):-len("_seconds")]] = float(run.scalars(tag)[1][-1])
    setup = sum(run.last(t) for t in run.tags("scalars") if t.endswith("_setup_seconds"))
    return {"events": events, "event_s": sum(events.values()), "setup_s": setup, "fit_s": fit}


def part_first_epoch(repeats):
    """bench/overhead.py's part 3 on 4 epochs: the first epoch's extra (the
    suite's setup and first event) over one IG event's compiled floor."""
    from bench import overhead  # noqa: PLC0415

    return overhead.part3(epochs=4, repeats=1)


def worker(part, repeats, config=None):
    sys.path.insert(0, ROOT)
    if part == "fit_one":
        print("RESULT " + json.dumps(part_fit_one(config)))
        return
    result = {"ig": part_ig, "methods": part_methods, "fit": part_fit,
              "resnet": part_resnet, "shap": part_shap,
              "first_epoch": part_first_epoch}[part](repeats)
    print("RESULT " + json.dumps(result))


# -- the driver --------------------------------------------------------------------

#: glibc's malloc thresholds, pinned in the shap part's processes (bench/shap.py).
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def _in_a_new_process(worker_args, env):
    """This script's worker run with `worker_args` in a new process:
    `(its RESULT, parsed, None)`, or `(None, the tail of its stderr)`."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *worker_args],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return None, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):]), None


def run_part(backend, part, repeats):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           **(PINNED_MALLOC if part == "shap" else {})}
    result, error = _in_a_new_process([part, "--repeats", str(repeats)], env)
    if error is not None:
        print(f"{backend} {part} failed:\n{error}", file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="ig,methods,fit,resnet,shap")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.repeats, args.config)
    backends = args.backends.split(",")
    parts = args.parts.split(",")
    if "ig" in parts:
        results = {b: run_part(b, "ig", args.repeats) for b in backends}
        print("\nintegrated gradients / compiled gradient floor (target <= 1.0)")
        print(f"{'model':32s}" + "".join(f"{b:>12s}" for b in backends))
        for model in next(r for r in results.values() if r):
            print(f"{model:32s}" + "".join(
                f"{results[b][model]['ratio']:12.2f}" if results[b] else f"{'-':>12s}"
                for b in backends))
    if "methods" in parts:
        results = {b: run_part(b, "methods", args.repeats) for b in backends}
        print("\nMobileNetV2 96x96, 4 images: method / its compiled floor "
              "(targets: smoothgrad, occlusion <= 1.25; gradcam <= 1.5)")
        print(f"{'method':32s}" + "".join(f"{b:>12s}" for b in backends))
        for method in ("smoothgrad", "occlusion", "gradcam"):
            print(f"{method:32s}" + "".join(
                f"{results[b][method]['ratio']:12.2f}" if results[b] else f"{'-':>12s}"
                for b in backends))
    if "fit" in parts:
        results = {b: run_part(b, "fit", args.repeats) for b in backends}
        print("\nsuite on the digits x 13 fit, 3 epochs: fit time / plain fit "
              "(targets: freq=1 <= 1.25, freq=5 <= 1.10)")
        print(f"{'':32s}" + "".join(f"{b:>12s}" for b in backends))
        for key in ("plain_s", "freq=1", "freq=5", "hooks freq=1", "hooks freq=5",
                    "cold plain_s", "cold freq=1", "cold freq=5"):
            label = {"plain_s": "plain fit (s)", "hooks freq=1": "1 + hooks / plain, freq=1",
                     "hooks freq=5": "1 + hooks / plain, freq=5",
                     "cold plain_s": "fresh process: plain fit (s)",
                     "cold freq=1": "fresh process: freq=1",
                     "cold freq=5": "fresh process: freq=5"}.get(key, f"tbx.explain {key}")
            print(f"{label:32s}" + "".join(
                f"{results[b][key]:12.2f}" if results[b] else f"{'-':>12s}" for b in backends))
    if "shap" in parts:
        results = {b: run_part(b, "shap", args.repeats) for b in backends}
        captum = (results.get("torch") or {})
        print("\nThe SHAP family (targets: deeplift / saliency <= 1.5; Captum (PyTorch) / ours "
              "per model evaluation >= 20)")
        print(f"{'':32s}" + "".join(f"{b:>12s}" for b in backends))
        rows = [("deeplift / saliency", "deeplift", "ratio"),
                ("kernel_shap / forward floor", "kernel_shap", "ratio"),
                ("shapley / forward floor", "shapley", "ratio")]
        for label, key, field in rows:
            print(f"{label:32s}" + "".join(
                f"{results[b][key][field]:12.2f}" if results[b] else f"{'-':>12s}"
                for b in backends))
        for key in ("kernel_shap", "shapley"):
            theirs = captum.get(key, {}).get("captum_per_evaluation_s")
            print(f"{'Captum / ours per eval, ' + key:32s}" + "".join(
                f"{theirs / results[b][key]['per_evaluation_s']:12.1f}"
                if results[b] and theirs else f"{'-':>12s}" for b in backends))
    if "first_epoch" in parts:
        results = {b: run_part(b, "first_epoch", 1) for b in backends}
        print("\nResNet50 224x224, 4-epoch fit on 32 images, tbx.explain defaults (2-sample "
              "probe) against the plain fit: extra seconds / one IG event's compiled floor")
        print(f"{'':32s}" + "".join(f"{b:>12s}" for b in backends))
        for key, label in (("first", "first epoch (target <= 2.0)"),
                           ("steady", "steady, epochs 1-3 (<= 1.25)"),
                           ("amortized", "amortized per event (<= 1.4)"),
                           ("outside", "share outside the hooks (<= 5%)"),
                           ("floor_s", "IG floor (s)")):
            form = "12.1%" if key == "outside" else "12.2f"
            print(f"{label:32s}" + "".join(
                f"{results[b][key]:{form}}" if results[b] else f"{'-':>12s}" for b in backends))
    if "resnet" in parts:
        chosen = [b for b in backends if b in ("tensorflow", "jax")]
        results = {b: run_part(b, "resnet", 1) for b in chosen}
        print("\nResNet50 (2-sample probe, tbx.explain defaults): seconds of the last event")
        print(f"{'callback':32s}" + "".join(f"{b:>12s}" for b in chosen)
              + ("   jax / tensorflow" if len(chosen) == 2 else ""))
        names = sorted({n for r in results.values() if r for n in r["events"]})
        for name in names + ["(whole event)", "(setup)"]:
            values = []
            for b in chosen:
                r = results[b] or {}
                values.append(r.get("event_s") if name == "(whole event)" else
                              r.get("setup_s") if name == "(setup)" else
                              r.get("events", {}).get(name))
            row = f"{name:32s}" + "".join(f"{v:12.3f}" if v is not None else f"{'-':>12s}"
                                          for v in values)
            if len(values) == 2 and all(values) and values[0]:
                row += f"   {values[1] / values[0]:.2f}"
            print(row)


if __name__ == "__main__":
    main()
