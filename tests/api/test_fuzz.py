"""Whatever a client sends to the accounts routes, the answer is never a 500."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
account_like = st.fixed_dictionaries(
    {},
    optional={
        "username": st.one_of(st.text(max_size=40), st.integers(), st.none()),
        "password": st.one_of(st.text(max_size=40), st.integers(), st.none()),
        "display_name": st.one_of(st.text(max_size=80), st.none(), st.booleans()),
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    account_like.map(lambda v: json.dumps(v).encode()),
)


async def test_random_bodies_never_produce_a_500(client: httpx.AsyncClient) -> None:
    failures: list[tuple[str, bytes, int]] = []

    @settings(
        max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(path=st.sampled_from(["/v1/users", "/v1/sessions"]), body=bodies)
    def check(path: str, body: bytes) -> None:
        samples.append((path, body))

    samples: list[tuple[str, bytes]] = []
    check()
    for path, body in samples:
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        if response.status_code >= 500 or (
            "error" not in response.json() and (response.status_code >= 400)
        ):
            failures.append((path, body, response.status_code))
    assert failures == []
