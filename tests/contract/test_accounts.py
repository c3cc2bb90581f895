"""Contract of the accounts ports (UserStore, SecretStore), on every backend."""

from __future__ import annotations

import asyncio

import pytest

from fanout.accounts.model import NewUser, User, UserId
from fanout.core.errors import Conflict, NotFound
from tests.contract.conftest import AccountStores

# Snowflake ids use all 63 bits: above 2**53 they no longer survive a float or a JS number.
ALICE = UserId(2**62 + 12_345)
BOB = UserId(2**63 - 1)
NOBODY = UserId(2**53 + 1)


def new_user(user_id: UserId, username: str, **changes: str) -> NewUser:
    return NewUser(
        id=user_id,
        username=username,
        display_name=changes.get("display_name", username.title()),
        password_hash=changes.get("password_hash", f"$argon2id$hash-of-{username}"),
        created_ms=1_700_000_000_123,
    )


async def test_a_created_user_reads_back_the_same_everywhere(accounts: AccountStores) -> None:
    created = await accounts.users.create(new_user(ALICE, "alice"))
    expected = User(ALICE, "alice", "Alice", 1_700_000_000_123)
    assert created == expected
    assert await accounts.users.get(ALICE) == expected
    assert await accounts.users.get_many([ALICE]) == {ALICE: expected}
    assert await accounts.users.credentials("alice") == (expected, "$argon2id$hash-of-alice")
    fetched = await accounts.users.get(ALICE)
    assert type(fetched.id) is int and fetched.id == 2**62 + 12_345


async def test_a_taken_username_conflicts_and_changes_nothing(accounts: AccountStores) -> None:
    await accounts.users.create(new_user(ALICE, "alice"))
    with pytest.raises(Conflict):
        await accounts.users.create(
            new_user(BOB, "alice", display_name="Impostor", password_hash="other")
        )
    with pytest.raises(NotFound):
        await accounts.users.get(BOB)
    found = await accounts.users.credentials("alice")
    assert found is not None
    user, password_hash = found
    assert (user.id, user.display_name, password_hash) == (
        ALICE,
        "Alice",
        "$argon2id$hash-of-alice",
    )


async def test_an_unknown_id_is_not_found(accounts: AccountStores) -> None:
    await accounts.users.create(new_user(ALICE, "alice"))
    with pytest.raises(NotFound):
        await accounts.users.get(NOBODY)


async def test_get_many_skips_missing_ids_and_collapses_duplicates(
    accounts: AccountStores,
) -> None:
    alice = await accounts.users.create(new_user(ALICE, "alice"))
    bob = await accounts.users.create(new_user(BOB, "bob"))
    found = await accounts.users.get_many([BOB, NOBODY, ALICE, BOB, ALICE])
    assert found == {ALICE: alice, BOB: bob}
    assert await accounts.users.get_many([NOBODY]) == {}
    assert await accounts.users.get_many([]) == {}


async def test_credentials_of_an_unknown_username_are_none(accounts: AccountStores) -> None:
    await accounts.users.create(new_user(ALICE, "alice"))
    assert await accounts.users.credentials("bob") is None


async def test_a_secret_is_generated_once(accounts: AccountStores) -> None:
    assert await accounts.secrets.get_or_create("secret_key", "first") == "first"
    assert await accounts.secrets.get_or_create("secret_key", "second") == "first"
    assert await accounts.secrets.get_or_create("links_code_key", "other") == "other"
    assert await accounts.secrets.get_or_create("secret_key", "third") == "first"


async def test_concurrent_first_calls_agree_on_one_secret(accounts: AccountStores) -> None:
    values = await asyncio.gather(
        *(accounts.secrets.get_or_create("secret_key", f"candidate-{i}") for i in range(10))
    )
    assert len(set(values)) == 1
    assert values[0] in {f"candidate-{i}" for i in range(10)}
    assert await accounts.secrets.get_or_create("secret_key", "late") == values[0]
