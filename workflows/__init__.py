"""Job entry points and the library behind them: argument parsing, Ray, MLflow runs, the model registry.

The top level holds only the doors, one file per command (``python workflows/<name>.py`` or the
installed ``cast-<name>``): each parses its flags and calls library code. The library lives in the
subpackages: ``training``, ``inference`` (batch inference, prediction, serving), ``tracking`` (MLflow
store and model registry), ``evaluation``, ``cluster`` (Ray and shared storage) and ``cli`` (what the
command lines share). Library modules never import a door; ``cast_model`` and ``pipelines`` import
nothing from here.
"""
