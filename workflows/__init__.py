"""Job entry points and their edges: argument parsing, Ray, MLflow runs, the model registry.

Library code lives in ``cast_model`` and ``pipelines``; neither imports anything from here.
"""
