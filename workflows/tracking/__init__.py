"""MLflow: where the tracking store lives and its run helpers (``store``), logging and registering models
with their aliases (``registry``)."""
