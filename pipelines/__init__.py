"""Datasets in their native layouts -> WebDataset shards (Ray Data), and DALI loaders for the shards.

Modules, each owning one thing:
  schema     -- the shard/manifest/rejects schema (the single place both writer and loaders read)
  datasets   -- one reader per native layout, all yielding :class:`schema.VideoRow`
  probe      -- what a video file is before decoding: frame table from the packets, display matrix,
                source checks, the minimum-frames rule, :class:`VideoDecodeError`
  rotation   -- display matrix -> how a coded frame is turned (and mirrored) as displayed
  decode     -- streaming decode (PyAV; DALI in ``dali_decode``): frames as displayed, never padded
  memory     -- a decode task's memory budget (estimate from the probe) and watchdog
  clips      -- one decode pass of a video -> the encoded clips of all its samples (EK100 segments)
  encode     -- re-encoding for the shards, frame by frame
  sampling   -- frame sampling and crop boxes as pure functions
  shards     -- tar + DALI ``.idx`` writing with atomic commit
  manifest   -- manifest / rejects / classes.json reading and consolidation
  preprocess -- the Ray Data job (library side; the entry point is ``workflows/preprocess.py``)
  loader     -- the DALI training and evaluation loaders
  synthetic  -- a small dataset in each native layout, with real codecs
"""
