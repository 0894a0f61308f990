"""Evaluation: GenEval's prompts and scoring rules, learned detectors and colour classifiers, fidelity metrics,
the comparison report. Imports nothing of the default world (:mod:`reca.shapeworld` builds on it)."""
