"""Base62 (0-9, A-Z, a-z) for non-negative integers; order-preserving at equal length."""

from __future__ import annotations

__all__ = ["ALPHABET", "decode", "encode"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}


def encode(n: int, *, width: int = 0) -> str:
    """Encode ``n`` ≥ 0, left-padded with ``0`` to ``width`` characters."""
    if n < 0:
        raise ValueError("base62 encodes non-negative integers only")
    digits: list[str] = []
    while n:
        n, rem = divmod(n, 62)
        digits.append(ALPHABET[rem])
    text = "".join(reversed(digits)) or "0"
    return text.rjust(width, "0")


def decode(text: str) -> int:
    """Inverse of :func:`encode`; ``ValueError`` on an empty string or a foreign character."""
    if not text:
        raise ValueError("empty base62 string")
    n = 0
    for ch in text:
        try:
            n = n * 62 + _INDEX[ch]
        except KeyError:
            raise ValueError(f"not a base62 character: {ch!r}") from None
    return n
