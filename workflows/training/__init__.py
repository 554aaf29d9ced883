"""CAST fine-tuning on Ray Train. Modules, each owning one thing:

  config       -- :class:`TrainConfig`, the schema (each field with its command-line help)
  recipe_yaml  -- ``configs/<dataset>.yaml``: the paper's recipe and its presets, as layers of settings
  command      -- the ``train_<dataset>`` command line, generated from the schema (``workflows.cli.flags``)
  validation   -- every check that needs no cluster (label maps read once), the fit to the cluster
  preflight    -- the shards' labels, the weights, the two stores reconciled (before Ray)
  launch       -- the driver: one preparation and one run (used by the commands and the demo)
  recipe       -- the recipe's building blocks (model, loss, mixup, optimizer, schedule)
  loop         -- the per-worker training loop
  state        -- checkpoint state
  mlflow_run   -- MLflow logging of the job's run
"""
