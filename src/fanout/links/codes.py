"""Short codes: base62 of a counter passed through a keyed bijection of [0, 62**7).

The counter is leased in blocks (no coordination per link, no collision across processes).
Each counter value is permuted by a Feistel network over 42 bits keyed with HMAC-SHA256,
walking the cycle until the value falls inside [0, 62**7) — a bijection of that range, so
distinct counters give distinct codes, every code has at most 7 characters for the first
62**7 links, and consecutive links get unrelated codes. Codes are stored, never recomputed:
changing the key changes only codes made afterwards.
"""

from __future__ import annotations

import hashlib
import hmac

from fanout.core import base62

__all__ = ["CODE_SPACE", "CodePermutation"]

CODE_SPACE = 62**7  # codes of up to 7 characters
_HALF_BITS = 21  # 2 x 21 = 42 bits: the smallest even width that covers CODE_SPACE (~2**41.7)
_HALF_MASK = (1 << _HALF_BITS) - 1
_ROUNDS = 6  # a balanced Feistel network needs at least 4 rounds; 6 for margin


class CodePermutation:
    """A keyed bijection of [0, CODE_SPACE); ``code(n)`` is its base62 text."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the code key must be at least 16 bytes")
        self._keys = [
            hmac.new(key, b"fanout-links-round-%d" % r, hashlib.sha256).digest()
            for r in range(_ROUNDS)
        ]

    def _round(self, r: int, half: int) -> int:
        digest = hashlib.blake2b(half.to_bytes(3, "big"), key=self._keys[r], digest_size=4)
        return int.from_bytes(digest.digest(), "big") & _HALF_MASK

    def _feistel(self, value: int) -> int:
        left, right = value >> _HALF_BITS, value & _HALF_MASK
        for r in range(_ROUNDS):
            left, right = right, left ^ self._round(r, right)
        return (left << _HALF_BITS) | right

    def _inverse_feistel(self, value: int) -> int:
        left, right = value >> _HALF_BITS, value & _HALF_MASK
        for r in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(r, left), left
        return (left << _HALF_BITS) | right

    def permute(self, n: int) -> int:
        if not 0 <= n < CODE_SPACE:
            raise ValueError("counter outside the code space")
        value = self._feistel(n)
        while value >= CODE_SPACE:  # cycle-walk: a bijection of the 42-bit space restricted
            value = self._feistel(value)
        return value

    def invert(self, value: int) -> int:
        if not 0 <= value < CODE_SPACE:
            raise ValueError("value outside the code space")
        n = self._inverse_feistel(value)
        while n >= CODE_SPACE:
            n = self._inverse_feistel(n)
        return n

    def code(self, n: int) -> str:
        return base62.encode(self.permute(n))
