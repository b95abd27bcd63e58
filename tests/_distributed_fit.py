"""Run as a script under KERAS_BACKEND=jax: a small fit with `tbx.explain`
under a `keras.distribution` setting, then (process 0) the final weights
saved beside the logs, for `test_distribution.py`.

Usage: python tests/_distributed_fit.py MODE LOG_DIR [PROCESS_ID PORT]
MODE: "single", "data" (DataParallel), "model" (ModelParallel: the hidden
kernel sharded over the devices) or "processes" (DataParallel over two
processes, `keras.distribution.initialize`).
"""

import sys

import keras
import numpy as np


def model_and_data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, 64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(8, activation="tanh", name="hidden"),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="net")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, x, y


def main(mode, log_dir, process_id=None, port=None):
    if mode == "processes":
        keras.distribution.initialize(job_addresses=f"localhost:{port}", num_processes=2,
                                      process_id=int(process_id))
    import tb_explain as tbx

    devices = keras.distribution.list_devices()
    if mode in ("data", "processes"):
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=mode != "processes"))
    elif mode == "model":
        mesh = keras.distribution.DeviceMesh((1, len(devices)), ["batch", "model"], devices)
        layout = keras.distribution.LayoutMap(mesh)
        layout[".*hidden/kernel"] = (None, "model")
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch"))
    model, x, y = model_and_data()
    kernel = model.get_layer("hidden").kernel.value
    print("DEVICES", len(devices), "KERNEL-SHARDS", len(kernel.sharding.device_set),
          "SPEC", kernel.sharding.spec if hasattr(kernel.sharding, "spec") else None, flush=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False,
              callbacks=tbx.explain(log_dir, data=(x[:8], y[:8]), steps=8,
                                    datasets={"val": (x, y)}, methods=["saliency"]))
    if tbx_process_index() == 0:
        weights = [np.asarray(w) for w in model.get_weights()]
        np.savez(f"{log_dir}/weights.npz", **{f"w{i}": w for i, w in enumerate(weights)})
    print("FIT-DONE", flush=True)


def tbx_process_index():
    from tb_explain.backend import distribution  # noqa: PLC0415

    return distribution.process_index()


if __name__ == "__main__":
    main(*sys.argv[1:])
