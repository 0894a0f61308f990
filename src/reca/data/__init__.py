"""Data: image IO, transforms, manifests, datasets and the synthetic default world."""
