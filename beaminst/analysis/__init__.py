"""The analysis: manifests, unbounded sources, cache keys, and what each PCollection is."""
