"""Evaluation: the exact ShapeWorld detector, compositional scores, fidelity metrics, grids."""
