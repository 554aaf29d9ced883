"""CAST fine-tuning on Ray Train: config and recipe (``config``), the recipe's building blocks
(``recipe``), the per-worker loop (``loop``), checkpoint state (``state``), MLflow logging
(``mlflow_run``) and the driver that ties them to a Ray cluster (``launch``)."""
