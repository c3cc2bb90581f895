"""How a fan-out's timelines are split into script calls (``keys.timeline_calls``)."""

from __future__ import annotations

import math
import re
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from fanout.storage.redis import keys

_TAG = re.compile(rb"\{([^}]*)\}")


@given(
    owners=st.lists(st.integers(1, 2**63 - 1), max_size=300),
    most=st.integers(1, 40),
    shards=st.integers(1, 40),
    per_slot=st.booleans(),
)
def test_every_timeline_once_in_calls_of_at_most_most_keys(
    owners: list[int], most: int, shards: int, per_slot: bool
) -> None:
    calls = keys.timeline_calls(owners, most, shards=shards, per_slot=per_slot)
    assert sorted(k for call in calls for k in call) == sorted(
        keys.timeline(owner, shards) for owner in owners
    )
    assert all(1 <= len(call) <= most for call in calls)
    if per_slot:  # a cluster: one hash tag (so one slot) per call, as few calls as that allows
        for call in calls:
            assert len({_tag(key) for key in call}) == 1
        per_tag = Counter(_tag(keys.timeline(owner, shards)) for owner in owners)
        assert len(calls) == sum(math.ceil(n / most) for n in per_tag.values())
    else:  # one server: as few calls as the size limit allows
        assert len(calls) == math.ceil(len(owners) / most)


def _tag(key: bytes) -> bytes:
    found = _TAG.search(key)
    assert found is not None
    return found.group(1)


def test_one_server_puts_many_shards_in_one_call() -> None:
    owners = list(range(1, 100))
    assert len(keys.timeline_calls(owners, 512)) == 1
    assert len(keys.timeline_calls(owners, 512, per_slot=True)) == keys.TIMELINE_SHARDS
