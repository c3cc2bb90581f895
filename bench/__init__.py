"""Workloads behind ``fanout bench``: each prints a table and writes JSON + a PNG plot."""
