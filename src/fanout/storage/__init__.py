"""Adapters for every port: ``embedded`` (SQLite), ``redis`` and ``postgres``."""
