"""The one graph index over a pipeline, the validator every input and output passes, and pruning."""
