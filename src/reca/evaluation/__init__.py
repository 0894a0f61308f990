"""Evaluation: GenEval's prompts and scoring rules, detectors and colour classifiers, fidelity metrics, reports."""
