"""Stdlib-only building blocks shared by every product: ids, clock, errors, settings, the log."""
