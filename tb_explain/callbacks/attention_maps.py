"""AttentionMaps callback: which token attends to which, epoch after epoch."""

import numpy as np

from tb_explain import _threads, _validate, backend, tags
from tb_explain._errors import NotApplicable
from tb_explain._keras import has_call, tokenizer_lookup
from tb_explain.callbacks.base import ExplainCallback
from tb_explain.compute import attention
from tb_explain.probe import Probe
from tb_explain.render import charts, colormap, images
from tb_explain.summary import metadata, ops


class AttentionMaps(ExplainCallback):
    """Logs the attention weights of every attention layer on a probe.

    Every `keras.layers.MultiHeadAttention` (and subclass, such as keras_hub's
    `CachedMultiHeadAttention`) and `keras.layers.GroupQueryAttention`,
    anywhere in the model (custom layers and keras_hub backbones too), in the
    order they run (`tbx.attention`). At each logging event:

    - `attention/<layer.path>` (Images): per probe sample, one queries x
      keys map per head (viridis, each map scaled by its maximum), the
      tokens on the axes where they are known (`vocabulary`, or the model's
      own tokenizer), else positions;
    - `attention/<layer.path>/entropy` (Scalars): the mean over heads of
      the attention entropy (-sum p ln p over keys, averaged over the
      unmasked queries of the probe): a collapse towards 0 (every query on
      one key, Zhai et al. 2023) shows here and in the Explain tab's health
      matrix (signal "attention entropy");
    - `attention/rollout` (Images): attention rollout (Abnar & Zuidema
      2020) per sample, when the layers are a stack of self-attention of
      one length;
    - for the Explain tab's Attention view (tb_explain tensors):
      `attention/<layer.path>/weights` (uint8, each map scaled by its
      maximum, long sequences block-averaged as in the images) and, at
      privacy "off", `attention/tokens` (the probe's tokens as text).

    Args:
        log_dir: Directory of the run (created if missing).
        data: The probe (labels ignored): as `tbx.attention` takes inputs,
            or `(x, y)`; the first `max_samples` samples are used.
        freq: Log every `freq` epochs (int >= 1), and at the last epoch.
        layers: Optional paths or names of the attention layers to log
            (exactly those).
        max_samples: Probe samples shown (int >= 1).
        vocabulary: Token strings by id (a list, or a dict id -> string)
            for the axes.
        privacy: `"off"`: tokens as text on the axes; `"inputs"`: positions
            instead of tokens; `"strict"`: no per-sample map (entropies
            only).

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        tbx.AttentionMaps("runs/exp1", data={"token_ids": ids[:4],
                                             "padding_mask": mask[:4]})])
    ```
    """

    tag_prefix = "attention"
    needs_call = False  # checked in validate_model, after "has it attention at all?"
    eager_events = 0

    def __init__(self, log_dir, data, freq=1, layers=None, max_samples=4, vocabulary=None,
                 privacy="off"):
        super().__init__(log_dir, freq)
        self.probe = Probe(data, max_samples=max_samples)
        if layers is not None and (isinstance(layers, str)
                                   or not all(isinstance(p, str) for p in layers)):
            raise TypeError(f"`layers` must be a list of layer paths or names, got {layers!r}.")
        self.layers = layers
        if vocabulary is not None and not isinstance(vocabulary, (list, tuple, dict)):
            raise TypeError(f"`vocabulary` must be a list or a dict of token strings by id, got "
                            f"{type(vocabulary).__name__}.")
        self.vocabulary = vocabulary
        self.privacy, _ = _validate.check_privacy(privacy)
        self._chosen = None
        self._written_tokens = None

    def validate_model(self):
        found = attention.attention_layers(self.model)
        if not found:
            if self.suite is not None:  # explain(): nothing to say on a model without attention
                self._skipped = True
                return
            raise NotApplicable(f"AttentionMaps: model {self.model.name!r} has no attention "
                                f"layer (MultiHeadAttention, GroupQueryAttention or a subclass)")
        if not has_call(self.model):
            raise NotApplicable(f"AttentionMaps runs the model forward, but model "
                                f"{self.model.name!r} ({type(self.model).__name__}) defines no "
                                f"`call()`")
        self._chosen = attention.select(self.model, self.layers)

    def prepare(self):
        if self._skipped:
            return
        self.probe.validate(self.model)
        with self.model_checks():  # traces the pass `log_event` runs
            self._summary()

    def _summary(self):
        return attention.summary(self.model, self.probe.x, layers=[p for p, _ in self._chosen],
                                 side=charts.MAX_ATTENTION_SIDE)

    def _tokens(self, length):
        """Axis labels per sample: tokens (privacy "off" and known), else positions."""
        positions = [[str(t) for t in range(length)]] * self.probe.num_samples
        if self.privacy != "off":
            return positions
        x = self.probe.x
        leaves = x if isinstance(x, dict) else {"x": x} if not isinstance(x, (list, tuple)) \
            else dict(enumerate(x))
        ids = next((np.asarray(backend.to_numpy(v)) for k, v in leaves.items()
                    if k != "padding_mask" and np.asarray(backend.to_numpy(v)).dtype.kind in "iu"
                    and np.ndim(v) == 2 and np.shape(v)[1] == length), None)
        if ids is None:
            return positions
        lookup = self._lookup()
        return [[lookup(int(t)) for t in row] for row in ids]

    def _lookup(self):
        vocabulary = self.vocabulary
        if vocabulary is not None:
            def lookup(token):
                try:
                    return str(vocabulary[token])
                except (KeyError, IndexError):
                    return f"<{token}>"
            return lookup
        return tokenizer_lookup(self.model) or str

    def _layer(self, path, result):
        """One layer's heads image, its uint8 weights for the Explain tab and
        their metadata, from the block averages and quantization made in the
        compiled pass (`attention.summary`, side `charts.MAX_ATTENTION_SIDE`)."""
        maps, factor = result.maps[path], result.factor[path]
        n, heads = maps.shape[:2]
        t_query, t_key = result.lengths[path]
        labelled = factor == 1
        tokens_q = self._tokens(t_query) if labelled else [None] * n
        tokens_k = self._tokens(t_key) if labelled else [None] * n
        levels = result.quantized[path]
        image = images.same_size([charts.attention_heads(
            sample, tokens_q[s], tokens_k[s],
            [f"sample {s}, head {h}" for h in range(heads)], cell=None if labelled else 2,
            levels=levels[s]) for s, sample in enumerate(maps)], fill=colormap.INDEX_WHITE)
        return image, result.quantized[path], metadata.content(
            "attention_weights", factor=factor, query_length=int(t_query), key_length=int(t_key))

    def _write_tokens(self, result, epoch):
        """The probe's tokens (or positions) as text, for the Explain tab's axes."""
        length = max(result.lengths[p][1] for p in result.layers)
        ops.write_tensor(tags.ATTENTION_TOKENS, np.array(self._tokens(length), dtype=object),
                         epoch, tags.PLUGIN_NAME, metadata.content("attention_tokens"))
        self._written_tokens = id(self._writer)

    def log_event(self, epoch):
        result = self._summary()
        for path in result.layers:
            ops.write_scalar(tags.ATTENTION_ENTROPY.format(path),
                             float(np.nanmean(result.entropy[path])), epoch,
                             description="Attention entropy (nats): -sum p ln p over keys, mean "
                                         "over unmasked queries of the probe and over heads.")
        if self.privacy != "strict":
            drawn = _threads.parallel_map(  # numpy and Pillow release the GIL
                lambda path: self._layer(path, result), result.layers,
                [result.maps[p].size for p in result.layers])
            for path, (image, weights, content) in zip(result.layers, drawn):
                ops.write_images(tags.ATTENTION.format(path), image, epoch,
                                 palette=colormap.PALETTE)
                ops.write_tensor(tags.ATTENTION_WEIGHTS.format(path), weights, epoch,
                                 tags.PLUGIN_NAME, content,
                                 description="Attention weights for the Explain tab: uint8, "
                                             "each map scaled by its maximum.")
            if self.privacy == "off" and self._written_tokens != id(self._writer):
                self._write_tokens(result, epoch)
        if result.rollout is not None and self.privacy != "strict":
            length = result.rollout.shape[1]
            tokens = self._tokens(length)
            panels = [charts.attention_heads(r[np.newaxis], tokens[s], tokens[s],
                                             [f"sample {s}: rollout"])
                      for s, r in enumerate(result.rollout)]
            ops.write_images(tags.ATTENTION_ROLLOUT,
                             images.same_size(panels, fill=colormap.INDEX_WHITE), epoch,
                             palette=colormap.PALETTE)

