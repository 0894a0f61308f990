"""reca: Reconstruction Alignment (RecA) post-training for unified multimodal models.

The package is a library: stages in :mod:`reca.stages` are pure functions over
paths and one validated section of ``params.yaml``; :mod:`reca.cli` is the thin
command-line layer that DVC calls.
"""

__version__ = "0.1.0"
