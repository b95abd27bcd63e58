"""The Explain tab inside TensorBoard (a plugin; see `plugin.ExplainPlugin`).

Kept light: TensorBoard imports it at start-up through the
`tensorboard_plugins` entry point.
"""
