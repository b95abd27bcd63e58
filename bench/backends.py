"""The same ratios on every Keras backend, side by side in one run.

Usage:
    python bench/backends.py [--parts ig,methods,fit,resnet] [--repeats N]
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
  noise). Targets: <= 1.35 and <= 1.10 on each backend.
- resnet: ResNet50 (weights=None, 224x224, 16 random images, batch 16, 3
  epochs, 2-sample probe, `tbx.explain` defaults): each callback's logging
  event (its `timing/*` scalar, the last epoch's: the steady cost) and the
  whole event, on JAX against TensorFlow.
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
    import keras  # noqa: PLC0415

    from tb_explain import backend  # noqa: PLC0415

    def gradient(batch, target):
        def total(xs):
            out = model(xs[0], training=False)
            index = keras.ops.expand_dims(keras.ops.cast(target, "int32"), 1)
            return keras.ops.sum(keras.ops.take_along_axis(out, index, axis=1)), None
        return backend.input_gradients(total, [batch])[0][0]

    compiled = backend.compile(gradient, model.variables)
    return lambda batch, target: backend.to_numpy(compiled(batch, target))


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
    import keras  # noqa: PLC0415

    from tb_explain import backend  # noqa: PLC0415

    def forward(batch, target):
        out = model(batch, training=False)
        index = keras.ops.expand_dims(keras.ops.cast(target, "int32"), 1)
        return keras.ops.take_along_axis(out, index, axis=1)

    compiled = backend.compile(forward, model.variables)
    return lambda batch, target: backend.to_numpy(compiled(batch, target))


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


def part_fit(repeats):
    from bench.overhead import CONFIGS, fit_seconds  # noqa: PLC0415
    from demo_train import load_data  # noqa: PLC0415

    data = load_data()
    names = ["no callbacks", "tbx.explain (whole suite)", "tbx.explain (whole suite, freq=5)"]
    times = {name: [] for name in names}
    hooks = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            total, inside = fit_seconds(name, CONFIGS[name], data, 3, 13)
            times[name].append(total)
            hooks[name].append(inside)
    base = statistics.median(times["no callbacks"])
    return {"plain_s": base,
            "freq=1": statistics.median(times[names[1]]) / base,
            "freq=5": statistics.median(times[names[2]]) / base,
            "hooks freq=1": 1 + statistics.median(hooks[names[1]]) / base,
            "hooks freq=5": 1 + statistics.median(hooks[names[2]]) / base}


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


def worker(part, repeats):
    sys.path.insert(0, ROOT)
    result = {"ig": part_ig, "methods": part_methods, "fit": part_fit,
              "resnet": part_resnet}[part](repeats)
    print("RESULT " + json.dumps(result))


# -- the driver --------------------------------------------------------------------

def run_part(backend, part, repeats):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", part,
                           "--repeats", str(repeats)], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        print(f"{backend} {part} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="ig,methods,fit,resnet")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.repeats)
    backends = args.backends.split(",")
    parts = args.parts.split(",")
    if "ig" in parts:
        results = {b: run_part(b, "ig", args.repeats) for b in backends}
        print("\nintegrated gradients / compiled gradient floor (target <= 1.25 on TF and JAX)")
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
              "(targets: freq=1 <= 1.35, freq=5 <= 1.10)")
        print(f"{'':32s}" + "".join(f"{b:>12s}" for b in backends))
        for key in ("plain_s", "freq=1", "freq=5", "hooks freq=1", "hooks freq=5"):
            label = {"plain_s": "plain fit (s)", "hooks freq=1": "1 + hooks / plain, freq=1",
                     "hooks freq=5": "1 + hooks / plain, freq=5"}.get(key, f"tbx.explain {key}")
            print(f"{label:32s}" + "".join(
                f"{results[b][key]:12.2f}" if results[b] else f"{'-':>12s}" for b in backends))
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
