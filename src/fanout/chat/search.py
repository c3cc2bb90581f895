"""The words of a search query, cleaned the same way for every backend's full-text index."""

from __future__ import annotations

import re

__all__ = ["MAX_TERMS", "terms"]

MAX_TERMS = 10
_WORD = re.compile(r"\w+", re.UNICODE)


def terms(query: str) -> list[str]:
    """The query's words, lower-cased, deduplicated, at most ``MAX_TERMS``: a message matches
    when it contains every one. Operators and punctuation are not syntax here, only spaces."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_TERMS]
