"""Render: numpy arrays to uint8 RGB images (no matplotlib, no OpenCV)."""
