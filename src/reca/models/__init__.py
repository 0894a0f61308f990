"""Models: the UMM adapter protocol, the registry and one adapter per paradigm, and the `model` section checked
against its adapter."""
