"""Compute: backend-neutral, on keras.ops, numpy and `tb_explain.backend`; no summaries."""
