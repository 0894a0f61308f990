"""Data: image IO, transforms, manifests, datasets and the embedding cache (the default world is :mod:`reca.shapeworld`)."""
