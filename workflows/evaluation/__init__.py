"""Scoring predictions against labels: the metrics (``metrics``) and the evaluation report of a batch job
(``report``)."""
