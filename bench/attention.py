"""Cost of one AttentionMaps event on a BERT-base-sized encoder.

Usage:
    python bench/attention.py [--layers 12] [--heads 12] [--tokens 128] [--samples 4] [--repeats 5]

keras_hub's `BertBackbone` with BERT-base's shape (12 layers, 12 heads,
hidden 768, intermediate 3072; random weights, a 1,000-token vocabulary),
a probe of `samples` sequences of `tokens` tokens: one `tbx.AttentionMaps`
logging event (the weights of every layer in one compiled pass, the
entropies, a heads image per layer and sample, the rollout, written)
against one compiled forward pass of the same probe (`model(x)`, the
callback's own compiled function without the recording), interleaved
`repeats` times; the ratio of the medians (target <= 1.3).
"""

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_explain as tbx  # noqa: E402
from bench._timing import interleaved  # noqa: E402
from tb_explain import backend  # noqa: E402
from tb_explain.compute.attribution import _cores  # noqa: E402


def main():
    import keras_hub  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = keras_hub.models.BertBackbone(
        vocabulary_size=1000, num_layers=args.layers, num_heads=args.heads, hidden_dim=768,
        intermediate_dim=3072, max_sequence_length=args.tokens)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, (args.samples, args.tokens)).astype("int32")
    mask = np.ones_like(ids, bool)
    mask[0, args.tokens // 2:] = False
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    model.compile(optimizer="adam", loss="mse")
    callback = tbx.AttentionMaps(tempfile.mkdtemp(prefix="tbx_bench_"), x,
                                 max_samples=args.samples)
    callback.set_model(model)
    callback.params = {"epochs": 1}
    callback.on_train_begin()
    forward = _cores.forward(model)
    tensors = keras.tree.map_structure(backend.to_tensor, x)
    callback.log_now(0)  # traced, warmed up (as the forward pass below)
    keras.tree.map_structure(backend.to_numpy, forward(tensors))
    epochs = iter(range(1, 10_000))
    times = interleaved({
        "forward": lambda: keras.tree.map_structure(backend.to_numpy, forward(tensors)),
        "AttentionMaps event": lambda: callback.log_now(next(epochs)),
    }, args.repeats)
    callback.on_train_end()
    event, plain = (statistics.median(times[k]) for k in ("AttentionMaps event", "forward"))
    print(f"BERT-base shape: {args.layers} layers, {args.heads} heads, {args.tokens} tokens, "
          f"{args.samples} samples; median of {args.repeats} interleaved runs "
          f"(backend: {backend.name()})")
    print(f"forward pass: {plain:.3f} s; AttentionMaps event: {event:.3f} s")
    print(f"AttentionMaps event / forward pass: {event / plain:.3f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
