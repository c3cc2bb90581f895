"""Accounts routes (API.md "Accounts")."""

from __future__ import annotations

from typing import Annotated

import msgspec

from fanout.accounts.model import User, UserId
from fanout.api import wire
from fanout.api.routing import Context, Operation

__all__ = ["OPERATIONS", "UserOut", "user_out"]

Username = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{3,32}$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateUser(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    display_name: DisplayName | None = None


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]


class UserOut(msgspec.Struct):
    id: str
    username: str
    display_name: str
    created_at: str


class SessionOut(msgspec.Struct):
    token: str
    user_id: str
    expires_at: str


def user_out(user: User) -> UserOut:
    return UserOut(str(user.id), user.username, user.display_name, wire.iso(user.created_ms))


async def create_user(ctx: Context, body: CreateUser) -> UserOut:
    user = await ctx.platform.accounts.register(body.username, body.password, body.display_name)
    return user_out(user)


async def create_session(ctx: Context, body: CreateSession) -> SessionOut:
    issued = await ctx.platform.accounts.login(body.username, body.password)
    return SessionOut(issued.token, str(issued.user_id), wire.iso(issued.expires_ms))


async def get_me(ctx: Context) -> UserOut:
    return user_out(await ctx.platform.accounts.get(ctx.user_id))


async def get_user(ctx: Context) -> UserOut:
    user_id = UserId(ctx.path_id("id", "user"))
    return user_out(await ctx.platform.accounts.get(user_id))


OPERATIONS = [
    Operation("POST", "/v1/users", create_user, "Create an account", body=CreateUser,
              response=UserOut, status=201, auth="none", tag="accounts"),
    Operation("POST", "/v1/sessions", create_session, "Log in: a bearer token",
              body=CreateSession, response=SessionOut, status=201, auth="none", tag="accounts"),
    Operation("GET", "/v1/users/me", get_me, "The caller's account", response=UserOut,
              tag="accounts"),
    Operation("GET", "/v1/users/{id}", get_user, "An account by id", response=UserOut,
              tag="accounts"),
]  # fmt: skip
