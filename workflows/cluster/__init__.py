"""Reaching a Ray cluster (``ray_connect``) and checking that its nodes share the storage a job names
(``shared_storage``)."""
