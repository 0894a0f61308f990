"""Pipeline stages, one module per DVC stage: ``run(params, inputs..., outputs...)``."""
