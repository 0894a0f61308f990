"""`reca report`: self-contained HTML reports of pipeline runs, read back from MLflow.

Sits after the pipeline: :mod:`collect` reads runs (a pipeline run and its
stage runs) from the MLflow store, :mod:`charts` draws them with matplotlib,
:mod:`html` renders one HTML file with every image embedded, and
:mod:`run_report` ties them together and logs the result back to MLflow.
"""
