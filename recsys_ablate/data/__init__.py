"""Data layer: sources -> one in-memory schema -> encoded, split, cached dataset."""
