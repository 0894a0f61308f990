"""Experiment tracking: MLflow runs (rank 0 only) and lineage tags."""
