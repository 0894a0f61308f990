"""Models: the UMM adapter protocol, the registry and one adapter per paradigm."""
