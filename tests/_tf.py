"""TensorFlow where it is installed, else None.

The JAX and PyTorch legs of the suite run in a venv without TensorFlow (the
install their users make). Tests that use TensorFlow itself are marked
`tensorflow_only` (a TensorFlow backend feature) or `needs_tensorflow`
(TensorFlow as a library, e.g. `tf.data`, on any backend): conftest skips
the latter where TensorFlow is not installed.
"""

try:
    import tensorflow as tf
except ImportError:
    tf = None
