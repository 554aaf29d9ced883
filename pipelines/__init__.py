"""Datasets in their native layouts -> WebDataset shards (Ray Data), and DALI loaders for the shards.

Modules, each owning one thing:
  schema     -- the shard/manifest/rejects schema (the single place both writer and loaders read)
  datasets   -- one reader per native layout, all yielding :class:`schema.VideoRow`
  decode     -- decoding behind one function (DALI GPU / DALI CPU / PyAV) and :class:`VideoDecodeError`
  encode     -- resize + re-encode for the shards
  sampling   -- frame sampling and crop boxes as pure functions
  shards     -- tar + DALI ``.idx`` writing with atomic commit
  manifest   -- manifest / rejects / classes.json reading and consolidation
  preprocess -- the Ray Data job (library side; the entry point is ``workflows/preprocess.py``)
  loader     -- the DALI training and evaluation loaders
  synthetic  -- a small dataset in each native layout, with real codecs
"""
