"""The news feed: posts, the follow graph, hybrid fan-out into timelines, merged reads."""
