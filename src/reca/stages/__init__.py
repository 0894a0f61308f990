"""Pipeline stages, one module per DVC stage: ``run(params, inputs..., outputs...)``.

No stage imports another: the file names they hand each other are :mod:`reca.stage_files`.
"""
