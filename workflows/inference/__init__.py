"""Inference from the model registry: batch inference with Ray Data, a few videos in one process, and the
MLflow serving model (library side; the entry points are ``workflows/batch_infer.py`` and
``workflows/predict.py``).

Modules, each owning one thing:
  config   -- :class:`InferConfig`, validated before any work starts
  model    -- ``--model`` (registry URI, any MLflow model URI, local folder) -> our checkpoint
  inputs   -- ``--input`` (shards, a folder, a file list, a native layout) -> one row per video
  views    -- decode (``pipelines.decode``) + multi-view sampling (``pipelines.sampling``), per video
  replica  -- the model replica of the actor pool: views -> per-video top-k (EK100: verb/noun/action)
  store    -- ``OUT/predictions/`` parts and ``OUT/rejects.parquet``: schema, done set, writes
  job      -- the Ray Data pipeline that ties them together
  classify -- a few videos in this process (the serving pyfunc, ``workflows.predict``): the same views,
              replica and output schema, without Ray
  pyfunc   -- the MLflow pyfunc model (serving) over ``classify``; ``pyfunc_entry`` is the file MLflow
              runs to build it
"""
