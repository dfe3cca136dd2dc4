"""Evaluation and results: ranks over the catalogue, the metric registry, seed summaries and comparisons."""
