"""Helpers shared by the tests: independent references and small real datasets."""
