"""SQLite adapters for every port, plus the SQLite-backed log (one database file, WAL)."""
