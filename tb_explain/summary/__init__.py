"""Writing: run writers and graph summaries."""
