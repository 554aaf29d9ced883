"""Batch inference from the model registry with Ray Data (library side; the entry point is
``workflows/batch_infer.py``).

Modules, each owning one thing:
  config   -- :class:`InferConfig`, validated before any work starts
  model    -- ``--model`` (registry URI, any MLflow model URI, local folder) -> our checkpoint
  inputs   -- ``--input`` (shards, a folder, a file list, a native layout) -> one row per video
  views    -- decode (``pipelines.decode``) + multi-view sampling (``pipelines.sampling``), per video
  predict  -- the model replica of the actor pool: views -> per-video top-k (EK100: verb/noun/action)
  store    -- ``OUT/predictions/`` parts and ``OUT/rejects.parquet``: schema, done set, writes
  job      -- the Ray Data pipeline that ties them together
  classify -- a few videos in this process (the serving pyfunc, ``workflows.predict``): the same views,
              replica and output schema, without Ray
"""
