"""Compute: pure TensorFlow functions, no summaries."""
