"""The code permutation and URL/alias validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.core import base62
from fanout.core.errors import Conflict, Invalid
from fanout.links.codes import CODE_SPACE, CodePermutation
from fanout.links.urls import check_alias, check_target

KEY = b"k" * 32
PERM = CodePermutation(KEY)


@given(st.integers(0, CODE_SPACE - 1))
def test_permutation_round_trips(n: int) -> None:
    value = PERM.permute(n)
    assert 0 <= value < CODE_SPACE
    assert PERM.invert(value) == n


@settings(max_examples=50)
@given(st.integers(0, CODE_SPACE - 1), st.integers(0, CODE_SPACE - 1))
def test_distinct_counters_give_distinct_codes(a: int, b: int) -> None:
    assert (a == b) == (PERM.code(a) == PERM.code(b))


def test_codes_are_short_stable_and_not_in_creation_order() -> None:
    codes = [PERM.code(n) for n in range(2000)]
    assert all(1 <= len(c) <= 7 for c in codes) and len(set(codes)) == 2000
    assert codes[:3] == [CodePermutation(KEY).code(n) for n in range(3)]  # stable per key
    assert codes != sorted(codes)
    values = [base62.decode(c) for c in codes]
    ascending = sum(values[i] < values[i + 1] for i in range(len(values) - 1))
    assert 800 < ascending < 1200  # like a random order: about half the neighbours ascend
    assert CodePermutation(b"other-key-16byte").code(0) != codes[0]


def test_a_bijection_on_a_small_window_of_the_space() -> None:
    top = [PERM.invert(v) for v in range(CODE_SPACE - 5000, CODE_SPACE)]
    assert len(set(top)) == 5000 and all(0 <= n < CODE_SPACE for n in top)


def test_out_of_range_and_weak_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        PERM.permute(CODE_SPACE)
    with pytest.raises(ValueError):
        CodePermutation(b"short")


@pytest.mark.parametrize(
    "url",
    ["https://example.com", "http://example.com/a?b=c#d", "HTTPS://Example.COM/x",
     "https://bücher.example/straße", "http://127.0.0.1:8080/", "https://[::1]/",
     "https://a.b.c.example.org/" + "p" * 1900],
)  # fmt: skip
def test_accepted_targets(url: str) -> None:
    assert check_target(url) == url


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<b>x</b>", "file:///etc/passwd",
     "ftp://example.com", "https://user:pw@example.com", "https://user@example.com",
     "https://", "https:///path", "http://localhost", "https://exa mple.com", " https://a.example",
     "https://a.example/\nx", "https://" + "a" * 64 + ".example", "https://-bad.example",
     "https://example.com:99999/", "https://example.com/" + "x" * 2048, "example.com",
     "//example.com/x", "https://xn--.example"],
)  # fmt: skip
def test_refused_targets(url: str) -> None:
    with pytest.raises(Invalid):
        check_target(url)


def test_blocklist_covers_subdomains() -> None:
    with pytest.raises(Invalid):
        check_target("https://ads.evil.example/x", blocklist=["evil.example"])
    assert check_target("https://notevil.example/", blocklist=["evil.example"])


def test_aliases() -> None:
    assert check_alias("my-link_1") == "my-link_1"
    for bad in ("ab", "x" * 65, "has space", "slash/", "ünï"):
        with pytest.raises(Invalid):
            check_alias(bad)
    for reserved in ("v1", "healthz", "METRICS", "static"):
        with pytest.raises(Conflict):
            check_alias(reserved)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/\u007f", "\u0001https://example.com/", "https://example.com/a\u001fb"],
)
def test_control_characters_anywhere_are_refused(url: str) -> None:
    with pytest.raises(Invalid):
        check_target(url)


@pytest.mark.parametrize(
    "url",
    ["https://evil.com./x", "https://evil\uff0ecom/x", "https://\uff45vil.com/x",
     "https://EVIL.com\u3002/x", "https://sub.evil.com/x"],
)  # fmt: skip
def test_the_blocklist_sees_hosts_as_resolvers_do(url: str) -> None:
    with pytest.raises(Invalid):
        check_target(url, blocklist=["evil.com"])
