"""tb_explain's tag names, in one light module (no TensorFlow import).

The Explain tab (`tb_explain.dashboard`) reads runs through these names, and
the callbacks' constants come from here too, so a renamed tag cannot
silently empty a view.
"""

#: First tag segments tb_explain writes (TensorBoard groups cards by them).
PREFIXES = ("weights/", "gradients/", "activations/", "attributions/", "outputs/",
            "importance/", "rules/", "timing/", "model/", "tb_explain/", "dynamics/",
            "attention/", "similarity/")

#: Health signals: `(label, tag pattern, scale)`; `{}` is a `layer.path`
#: (`variable.path` for the weight norm), scale `log` or `linear`.
SIGNALS = {
    "gradient_norm": ("gradient norm", "gradients/{}/norm", "log"),
    "update_ratio": ("update ratio", "gradients/{}/update_ratio", "log"),
    "dead_fraction": ("dead fraction", "activations/{}/dead_fraction", "linear"),
    "saturated_fraction": ("saturated fraction", "activations/{}/saturated_fraction", "linear"),
    "weight_norm": ("weight norm", "weights/{}/norm", "log"),
    "attention_entropy": ("attention entropy", "attention/{}/entropy", "log"),
    "cka_previous": ("CKA to the previous epoch", "similarity/{}/cka_previous", "linear"),
}

#: Text cards of alerts (`<prefix>/alerts`), and the events that failed.
ALERT_PREFIXES = ("weights", "gradients", "activations", "attributions", "model", "outputs",
                  "importance", "rules", "dynamics", "attention")
MODEL_SUMMARY = "model/summary"
SKIPPED = "tb_explain/skipped"
COMPLETENESS = "attributions/completeness_delta"
#: Completeness gaps above this are alerts (IntegratedGradients' default tolerance).
COMPLETENESS_TOLERANCE = 0.05
ACTIVATION_IMAGE = "activations/{}"
ACTIVATION_HISTOGRAM = "activations/{}/histogram"
#: Attribution methods, each with tags of its own (`attributions/<method>/...`);
#: `compute.attribution.methods.METHODS` implements exactly these.
ATTRIBUTION_METHODS = ("saliency", "gradient_x_input", "integrated_gradients", "smoothgrad",
                       "gradcam", "occlusion", "kernel_shap", "shapley", "gradient_shap",
                       "deeplift", "deeplift_shap")
SANITY_TEXT = "attributions/sanity"
SANITY = "attributions/sanity/{}/{}"  # method, layer path
#: The randomization test passes when the final correlation is below this.
SANITY_PASS_BELOW = 0.5
OUTPUTS = "outputs/{}/{}"  # dataset, metric
DIAGNOSTICS = "outputs/diagnostics"
HPARAMS_SESSION = "_hparams_/session_start_info"
#: Plugin name of tb_explain's own tensors (the Explain tab reads them).
PLUGIN_NAME = "tb_explain"
#: Training dynamics: one tag per logged epoch (TensorBoard's reservoir keeps
#: 10 samples of a plugin's tensors per tag: one tag per epoch keeps all).
DYNAMICS_RECORDS = "dynamics/records/{:06d}"
DYNAMICS_EXAMPLES = "dynamics/examples"
DYNAMICS_THUMBNAILS = "dynamics/thumbnails"
DYNAMICS_INPUTS = "dynamics/inputs"
DYNAMICS_REGION = "dynamics/region/{}"
#: Per logged epoch (one tag each, so TensorBoard's sampling keeps every
#: epoch): the probe's packed Gram matrices per layer (`ActivationImages`),
#: and each dataset's predicted classes and correctness (`Predictions`).
SIMILARITY_GRAM = "similarity/gram/{:06d}"
PREDICTED = "outputs/{}/predicted/{:06d}"  # dataset (and "/<output>"), epoch
#: Per-sample attributions of a method's tag (`attributions/<method>/<input>`),
#: one tag per epoch, for comparing runs.
ATTRIBUTION_VALUES = "{}/values/{:06d}"
#: Linear CKA of a layer with itself at the previous logged epoch: near 1,
#: the layer's representation stopped changing.
CKA_PREVIOUS = "similarity/{}/cka_previous"
ATTENTION = "attention/{}"  # layer path
ATTENTION_ENTROPY = "attention/{}/entropy"
ATTENTION_ROLLOUT = "attention/rollout"
ATTENTION_WEIGHTS = "attention/{}/weights"  # tb_explain tensor, for the tab
ATTENTION_TOKENS = "attention/tokens"
#: Training curves (`TrainingCurves`, as `keras.callbacks.TensorBoard` names
#: them): runs under the run directory, and the loss the Health view plots.
CURVE_RUNS = ("train", "validation")
EPOCH_LOSS = "epoch_loss"
