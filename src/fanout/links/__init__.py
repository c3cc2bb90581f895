"""Short links: non-enumerable codes, fast redirects, asynchronous click analytics."""
