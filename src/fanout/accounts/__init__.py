"""Users, password hashes and bearer tokens."""
