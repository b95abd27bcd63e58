"""Rendering of attributions by input kind, shared by IntegratedGradients and Attributions."""

import numpy as np

from tb_explain import tags
from tb_explain._keras import tokenizer_lookup
from tb_explain.compute import similarity
from tb_explain.probe import named_leaves
from tb_explain.render import charts, images
from tb_explain.summary import metadata, ops

#: Longest side of the attribution maps logged as values (block-averaged).
VALUES_SIDE = 64


class AttributionRendering:
    """Writes attributions as images (heatmap, overlay, signed), tables
    (per-feature scalars, a signed heatmap, a ranking) or tokens (Text).

    The host callback has `feature_names`, `vocabulary`, `privacy` and
    `min_samples`. Privacy levels: "off" writes everything below; "inputs"
    writes no raw input (no probe image, no overlay, no token strings or ids:
    tokens are positions); "strict" writes no per-sample rendering: image
    maps and token tables become means over the samples (written only with
    at least `min_samples` of them), tables keep their per-feature means.
    """

    def _remember_plan(self, plan):
        """Keeps what rendering needs of the inputs' plan: each input's kind,
        the token ids token inputs are shown by (text: its vectorizer's ids)
        and the vectorizers' vocabularies."""
        self._kinds = dict(zip(plan.names, plan.kinds))
        self._token_ids = {name: plan.ids[i] for i, name in enumerate(plan.names)
                           if plan.kinds[i] == "token"}
        self._vocabularies = {name: plan.vocabulary(i) for i, name in enumerate(plan.names)
                              if plan.vectorizers[i] is not None}

    def _shown_leaves(self, x):
        """`{name: array}` of the probe `x` as rendered (`named_leaves` keys):
        token inputs as the ids their Embedding reads."""
        out = {}
        for name, value in named_leaves(x):
            key = "input" if name is None else name
            out[name] = self._token_ids.get(key, value) if self._kinds.get(key) == "token" \
                else value
        return out

    def _aggregate(self, count):
        """Whether per-sample renderings are replaced by means ("strict"), and
        whether there are enough samples to write those."""
        return self.privacy == "strict", count >= self.min_samples

    def _log_values(self, tag, values, epoch):
        """`<tag>/values/<epoch>`: the per-sample attributions themselves
        (float16; image maps as |attribution| summed over channels and
        block-averaged to at most `VALUES_SIDE` per side), one tag per epoch:
        what `tbx.compare` correlates between two runs. Not at "strict"."""
        if self.privacy == "strict":
            return
        if not hasattr(self, "_probe_id"):
            self._probe_id = similarity.fingerprint(self.probe.x)
        ops.write_tensor(tags.ATTRIBUTION_VALUES.format(tag, epoch),
                         np.asarray(values, np.float16), epoch, tags.PLUGIN_NAME,
                         metadata.content("attribution_values", tag=tag, probe=self._probe_id),
                         description="tb_explain: per-sample attributions (for tbx.compare).")

    @staticmethod
    def _map_values(attr):
        """(n, h, w) |attribution| maps of image attributions, block-averaged
        to at most `VALUES_SIDE` per side."""
        maps = np.abs(np.asarray(attr, np.float32))
        if maps.ndim == 4:
            maps = maps.sum(axis=-1)
        n, h, w = maps.shape
        k = max(1, -(-max(h, w) // VALUES_SIDE))
        h, w = h - h % k if h >= k else h, w - w % k if w >= k else w
        maps = maps[:, :h, :w]
        if k > 1 and h >= k and w >= k:
            maps = maps.reshape(n, h // k, k, w // k, k).mean(axis=(2, 4))
        return maps

    def _log_images(self, tag, value, attr, epoch, signed=True):
        self._log_values(tag, self._map_values(attr), epoch)
        strict, enough = self._aggregate(len(attr))
        if strict:
            if not enough:
                return
            heat = [images.attribution_heatmap(np.abs(attr).mean(axis=0))]
            sign = [attr.mean(axis=0)]
        else:
            heat, sign = [images.attribution_heatmap(a) for a in attr], list(attr)
        factor = images.fit_factor(*value.shape[1:3], min_side=128, max_side=512)
        up = lambda img: images.upscale(img, factor)  # noqa: E731
        if self.privacy == "off":
            ops.write_images(tag + "/probe", np.stack([up(images.image_rgb(v)) for v in value]),
                             epoch)
        ops.write_images(tag + "/heatmap",
                         np.stack([up(images.colormap.apply(h, "viridis")) for h in heat]), epoch)
        if self.privacy == "off":
            ops.write_images(tag + "/overlay",
                             np.stack([up(images.overlay(v, h)) for v, h in zip(value, heat)]),
                             epoch)
        if signed:
            ops.write_images(tag + "/signed", np.stack([
                up(images.colormap.apply(images.signed_attribution(a), "diverging"))
                for a in sign]), epoch)

    def _names(self, name, count):
        names = self.feature_names
        if isinstance(names, dict):
            names = names.get(name)
        if names is None or len(names) != count:
            return [f"feature_{i}" for i in range(count)]
        return [str(n) for n in names]

    def _log_flat(self, tag, attr, epoch):
        """Inputs of other shapes (sequences: time x features): the signed
        attributions of each sample flattened, one row per sample
        (`<tag>/signed`); at privacy "strict" their mean over the probe."""
        flat = np.asarray(attr).reshape(len(attr), -1)
        strict, enough = self._aggregate(len(flat))
        if strict:
            if not enough:
                return
            flat = flat.mean(axis=0, keepdims=True)
        ops.write_images(tag + "/signed", images.signed_table(flat, 99.0, (16, 4)), epoch)

    def _log_table(self, tag, name, attr, epoch, title="Integrated gradients", values=None):
        """Per-feature scalars, a signed table and a ranking; with the probe's
        `values` at privacy "off", also shap's summary plot (`<tag>/summary`:
        every probe row's attribution per feature, coloured by its value)."""
        names = self._names(name, attr.shape[1])
        self._log_values(tag, attr, epoch)
        mean_abs = np.abs(attr).mean(axis=0)
        for feature, value in zip(names, mean_abs):
            ops.write_scalar(f"{tag}/features/{feature}", value, epoch)
        if values is not None and self.privacy == "off" and np.asarray(values).dtype.kind == "f":
            ops.write_images(tag + "/summary", charts.beeswarm(
                attr, values, names, title=f"{title} (per probe row)"), epoch)
        order = np.argsort(-mean_abs)
        if self.privacy == "strict":  # per-feature means only, no per-sample row
            mean = attr.mean(axis=0)
            rows = [[names[j], f"{mean_abs[j]:.4g}", f"{mean[j]:+.4g}"] for j in order]
            header = ["feature", "mean abs", "mean"]
        else:
            ops.write_images(tag + "/table", images.signed_table(attr), epoch)
            rows = [[names[j], f"{mean_abs[j]:.4g}"]
                    + [f"{attr[i, j]:+.4g}" for i in range(len(attr))] for j in order]
            header = ["feature", "mean abs"] + [f"sample {i}" for i in range(len(attr))]
        ops.write_markdown(tag + "/ranking", f"{title} at epoch {epoch}, features by "
                           f"mean absolute attribution:\n\n" + ops.markdown_table(header, rows),
                           epoch)

    def _token(self, token_id, name="input"):
        vocab = self.vocabulary
        if vocab is None:  # text inputs: their TextVectorization's vocabulary
            vocab = self._vocabularies.get(name)
        elif isinstance(vocab, dict) and name in self._vocabularies and \
                all(isinstance(k, str) for k in vocab):
            vocab = vocab.get(name)
        if vocab is None:  # the model's own tokenizer (keras_hub tasks with a preprocessor)
            lookup = tokenizer_lookup(self.model)
            if lookup is not None:
                return lookup(token_id)
        try:
            token = str(vocab[int(token_id)]) if vocab is not None else str(int(token_id))
            return token if token else "[PAD]"  # Keras vocabularies: id 0 pads
        except (KeyError, IndexError):
            return f"<{int(token_id)}>"

    def _log_tokens(self, tag, value, attr, result, epoch, title="Integrated gradients",
                    name="input"):
        strict, enough = self._aggregate(len(attr))
        if strict:
            if not enough:
                return
            ops.write_markdown(tag + "/tokens", (
                f"{title} at epoch {epoch}: mean attribution per position over {len(attr)} "
                f"samples (privacy='strict': no token, no sample).\n\n")
                + ops.markdown_table(["position", "mean attribution", "mean abs"], [
                    [p, f"{m:+.4g}", f"{a:.4g}"] for p, (m, a) in enumerate(
                        zip(attr.mean(axis=0), np.abs(attr).mean(axis=0)))]), epoch)
            return
        hide = self.privacy != "off"
        parts = [f"{title} at epoch {epoch} (attribution per token"
                 + ("; privacy='inputs': positions only)." if hide else ").")]
        for i, (ids, scores) in enumerate(zip(value, attr)):
            parts.append(f"\n**sample {i}** (target {result.target[i]}, "
                         f"F(x) = {float(np.ravel(result.output)[i]):.4g})\n")
            if hide:
                parts.append(ops.markdown_table(
                    ["position", "attribution"],
                    [[p, f"{s:+.4g}"] for p, s in enumerate(scores)]))
            else:
                parts.append(ops.markdown_table(
                    ["position", "token", "attribution"],
                    [[p, self._token(t, name), f"{s:+.4g}"]
                     for p, (t, s) in enumerate(zip(ids, scores))]))
        ops.write_markdown(tag + "/tokens", "\n".join(parts), epoch)
